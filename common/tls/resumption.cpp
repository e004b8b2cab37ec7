#include "tls/resumption.hpp"

#include "tls/validity.hpp"

#include <mbedtls/platform_util.h>

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

namespace tunnel::tls {
namespace {

thread_local handshake_slot* current_slot = nullptr;

bool tls13(const handshake_slot* slot) {
  return slot && slot->ssl && mbedtls_ssl_get_version_number(slot->ssl) == MBEDTLS_SSL_VERSION_TLS1_3;
}

// The peer a ticket written now would vouch for: the certificate of this handshake, or the
// ticket this connection resumed with.
std::optional<known_peer> vouched_peer(const handshake_slot* slot) {
  if (!slot) return std::nullopt;
  if (slot->peer && *slot->peer) return known_peer{**slot->peer, slot->peer_not_after, slot->peer_authenticated_ms};
  return slot->resumed;
}

// Milliseconds a session with `peer` may still be resumed: until the window after its full
// handshake ends or its chain expires, whichever comes first; 0 or less: not at all.
std::int64_t ms_left(const known_peer& peer, std::chrono::seconds window) {
  const std::int64_t window_left = peer.authenticated_ms + window.count() * 1000 - steady_ms();
  // Capped before scaling: a far (or unset, maximal) notAfter must not overflow.
  const std::int64_t chain_left_s = std::min(peer.not_after - now_unix(), window.count());
  return std::min(window_left, chain_left_s * 1000);
}

// No ticket: a failing write callback would fail the handshake, so when none should be
// issued an empty one (TLS 1.2, RFC 5077 3.3) or a one-byte one with a lifetime of zero
// (TLS 1.3, where the client drops it; open_ticket refuses it anyway) goes out instead.
int no_ticket(bool tls13, unsigned char* start, const unsigned char* end, std::size_t* length,
              std::uint32_t* lifetime) {
  *lifetime = 0;
  *length = 0;
  if (!tls13) return 0;
  if (end - start < 1) return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
  *start = 0;
  *length = 1;
  return 0;
}

}  // namespace

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

handshake_scope::handshake_scope(handshake_slot& slot) : previous_(std::exchange(current_slot, &slot)) {}
handshake_scope::~handshake_scope() { current_slot = previous_; }
handshake_slot* handshake_scope::current() { return current_slot; }

ticket_issuer::ticket_issuer(std::chrono::seconds window)
    : keys_(std::chrono::milliseconds(window).count(), steady_ms()), window_(window) {}

ticket_issuer::~ticket_issuer() = default;

int ticket_issuer::write(void* self, const mbedtls_ssl_session* session, unsigned char* start,
                         const unsigned char* end, std::size_t* length, std::uint32_t* lifetime) {
  auto* issuer = static_cast<ticket_issuer*>(self);
  const handshake_slot* slot = handshake_scope::current();
  const auto peer = vouched_peer(slot);
  const std::int64_t left = peer ? ms_left(*peer, issuer->window_) : 0;
  // The NewSessionTicket message needs 2 bytes after the ticket (its extensions' length).
  if (!peer || !tls13(slot) || left <= 0 || end - start < 3) return no_ticket(tls13(slot), start, end, length, lifetime);
  ticket_contents c;
  c.authenticated_ms = peer->authenticated_ms;
  c.not_after = peer->not_after;
  c.peer = peer->identity;
  std::size_t size = 0;
  mbedtls_ssl_session_save(session, nullptr, 0, &size);
  c.session.resize(size);
  const bool saved = size > 0 && mbedtls_ssl_session_save(session, c.session.data(), size, &size) == 0;
  auto key = saved ? issuer->keys_.sealing(steady_ms()) : std::nullopt;
  const std::size_t n = key ? seal_ticket(*key, c, {start, static_cast<std::size_t>(end - start - 2)}) : 0;
  mbedtls_platform_zeroize(c.session.data(), c.session.size());
  if (key) mbedtls_platform_zeroize(key->data(), key->size());
  if (n == 0) return no_ticket(true, start, end, length, lifetime);
  *length = n;
  *lifetime = static_cast<std::uint32_t>((left + 999) / 1000);  // whole seconds, rounded up
  return 0;
}

int ticket_issuer::parse(void* self, mbedtls_ssl_session* session, unsigned char* buf, std::size_t length) {
  auto* issuer = static_cast<ticket_issuer*>(self);
  handshake_slot* slot = handshake_scope::current();
  if (!tls13(slot)) return MBEDTLS_ERR_SSL_INVALID_MAC;  // no TLS 1.2 resumption, ever
  std::array<ticket_key, 2> keys;
  const std::size_t key_count = issuer->keys_.opening(steady_ms(), keys);
  std::optional<ticket_contents> c;
  for (std::size_t i = 0; i < key_count && !c; ++i) c = open_ticket(keys[i], {buf, length});
  mbedtls_platform_zeroize(keys.data(), sizeof keys);
  if (!c) return MBEDTLS_ERR_SSL_INVALID_MAC;  // not ours: another process, an erased key, forged
  known_peer peer{std::move(c->peer), c->not_after, c->authenticated_ms};
  int rc = 0;
  if (c->authenticated_ms > steady_ms() || ms_left(peer, issuer->window_) <= 0)
    rc = MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
  // The service this connection asked for (its SNI and ALPN are settled by now) must admit
  // the peer; if not, a full handshake refuses it the ordinary way, and no new ticket goes out.
  else if (!slot->admits || !slot->admits(slot->owner, peer.identity))
    rc = MBEDTLS_ERR_SSL_INVALID_MAC;
  else if (mbedtls_ssl_session_load(session, c->session.data(), c->session.size()) != 0)
    rc = MBEDTLS_ERR_SSL_INVALID_MAC;
  else
    slot->resumed = std::move(peer);
  mbedtls_platform_zeroize(c->session.data(), c->session.size());
  return rc;
}

std::size_t ticket_issuer::forget_expired() { return keys_.forget_expired(steady_ms()); }

session_cache::session_cache(std::chrono::seconds window) : window_(window) {}

session_cache::~session_cache() {
  for (auto& k : kept_) erase(k);
}

void session_cache::erase(kept& k) { mbedtls_platform_zeroize(k.session.data(), k.session.size()); }

void session_cache::store(mbedtls_ssl_context& ssl, const known_peer& server) {
  const std::int64_t left = ms_left(server, window_);
  if (left <= 0) return;
  mbedtls_ssl_session fresh;
  mbedtls_ssl_session_init(&fresh);
  kept k{{}, server, std::chrono::steady_clock::now() + std::chrono::milliseconds(left)};
  std::size_t size = 0;
  if (mbedtls_ssl_get_session(&ssl, &fresh) == 0) {
    mbedtls_ssl_session_save(&fresh, nullptr, 0, &size);
    k.session.resize(size);
    if (size == 0 || mbedtls_ssl_session_save(&fresh, k.session.data(), size, &size) != 0) erase(k), k.session.clear();
  }
  mbedtls_ssl_session_free(&fresh);  // zeroizes what it held
  if (k.session.empty()) return;
  std::lock_guard lock(mutex_);
  if (retired_) return erase(k);
  drop_expired();
  while (kept_.size() >= capacity) {
    erase(kept_.front());
    kept_.pop_front();
  }
  kept_.push_back(std::move(k));
}

std::size_t session_cache::drop_expired() {
  const auto now = std::chrono::steady_clock::now();
  const auto unix_s = now_unix();
  return std::erase_if(kept_, [&](kept& k) {
    const bool expired = now >= k.until || unix_s >= k.server.not_after;
    if (expired) erase(k);
    return expired;
  });
}

std::optional<known_peer> session_cache::offer(mbedtls_ssl_context& ssl) {
  std::optional<kept> k;
  {
    std::lock_guard lock(mutex_);
    drop_expired();
    if (!kept_.empty()) {
      k = std::move(kept_.back());
      kept_.pop_back();
    }
  }
  if (!k) return std::nullopt;
  mbedtls_ssl_session session;
  mbedtls_ssl_session_init(&session);
  const bool set = mbedtls_ssl_session_load(&session, k->session.data(), k->session.size()) == 0 &&
                   mbedtls_ssl_set_session(&ssl, &session) == 0;
  mbedtls_ssl_session_free(&session);
  erase(*k);
  if (!set) return std::nullopt;
  return std::move(k->server);
}

void session_cache::retire() {
  std::lock_guard lock(mutex_);
  retired_ = true;
  for (auto& k : kept_) erase(k);
  kept_.clear();
}

std::size_t session_cache::forget_expired() {
  std::lock_guard lock(mutex_);
  return drop_expired();
}

std::size_t session_cache::size() {
  std::lock_guard lock(mutex_);
  return kept_.size();
}

void session_cache::copy_from(session_cache& other) {
  std::deque<kept> copies;
  {
    std::lock_guard lock(other.mutex_);
    copies = other.kept_;
  }
  std::lock_guard lock(mutex_);
  for (auto& k : kept_) erase(k);
  kept_ = std::move(copies);
}

}  // namespace tunnel::tls
