#include "tls/resumption.hpp"

#include <mbedtls/platform_util.h>
#include <psa/crypto.h>

#include <algorithm>
#include <stdexcept>
#include <utility>
#include <vector>

namespace tunnel::tls {
namespace {

thread_local handshake_slot* current_slot = nullptr;

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

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
  const std::int64_t chain_left_s = std::min(peer.not_after - unix_now(), window.count());
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

ticket_issuer::ticket_issuer(std::chrono::seconds window) : window_(window) {
  if (psa_generate_random(key_.data(), key_.size()) != PSA_SUCCESS)
    throw std::runtime_error("cannot make a session ticket key");
}

ticket_issuer::~ticket_issuer() { mbedtls_platform_zeroize(key_.data(), key_.size()); }

int ticket_issuer::write(void* self, const mbedtls_ssl_session* session, unsigned char* start,
                         const unsigned char* end, std::size_t* length, std::uint32_t* lifetime) {
  const auto* issuer = static_cast<const ticket_issuer*>(self);
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
  const std::size_t n = saved ? seal_ticket(issuer->key_, c, {start, static_cast<std::size_t>(end - start - 2)}) : 0;
  mbedtls_platform_zeroize(c.session.data(), c.session.size());
  if (n == 0) return no_ticket(true, start, end, length, lifetime);
  *length = n;
  *lifetime = static_cast<std::uint32_t>((left + 999) / 1000);  // whole seconds, rounded up
  return 0;
}

int ticket_issuer::parse(void* self, mbedtls_ssl_session* session, unsigned char* buf, std::size_t length) {
  const auto* issuer = static_cast<const ticket_issuer*>(self);
  handshake_slot* slot = handshake_scope::current();
  if (!tls13(slot)) return MBEDTLS_ERR_SSL_INVALID_MAC;  // no TLS 1.2 resumption, ever
  auto c = open_ticket(issuer->key_, {buf, length});
  if (!c) return MBEDTLS_ERR_SSL_INVALID_MAC;  // not ours: another process, an older key, forged
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

session_cache::session_cache(std::chrono::seconds window) : window_(window) { mbedtls_ssl_session_init(&session_); }

session_cache::~session_cache() { mbedtls_ssl_session_free(&session_); }

void session_cache::store(mbedtls_ssl_context& ssl, const known_peer& server) {
  const std::int64_t left = ms_left(server, window_);
  if (left <= 0) return;
  mbedtls_ssl_session fresh;
  mbedtls_ssl_session_init(&fresh);
  if (mbedtls_ssl_get_session(&ssl, &fresh) != 0) {
    mbedtls_ssl_session_free(&fresh);
    return;
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(left);
  {
    std::lock_guard lock(mutex_);
    mbedtls_ssl_session_free(&session_);
    session_ = fresh;  // takes over what `fresh` points to
    server_ = server;
    until_ = until;
  }
  mbedtls_platform_zeroize(&fresh, sizeof fresh);  // the copy on the stack held the resumption key
}

void session_cache::copy_from(session_cache& other) {
  std::vector<unsigned char> blob;
  std::optional<known_peer> server;
  std::chrono::steady_clock::time_point until;
  {
    std::lock_guard lock(other.mutex_);
    if (!other.server_) return;
    std::size_t size = 0;
    mbedtls_ssl_session_save(&other.session_, nullptr, 0, &size);
    blob.resize(size);
    if (mbedtls_ssl_session_save(&other.session_, blob.data(), size, &size) != 0) {
      mbedtls_platform_zeroize(blob.data(), blob.size());
      blob.clear();
    }
    server = other.server_;
    until = other.until_;
  }
  if (blob.empty()) return;
  std::lock_guard lock(mutex_);
  mbedtls_ssl_session_free(&session_);
  mbedtls_ssl_session_init(&session_);
  if (mbedtls_ssl_session_load(&session_, blob.data(), blob.size()) == 0) {
    server_ = server;
    until_ = until;
  }
  mbedtls_platform_zeroize(blob.data(), blob.size());
}

std::optional<known_peer> session_cache::offer(mbedtls_ssl_context& ssl) {
  std::lock_guard lock(mutex_);
  if (!server_ || std::chrono::steady_clock::now() >= until_ || unix_now() >= server_->not_after) return std::nullopt;
  if (mbedtls_ssl_set_session(&ssl, &session_) != 0) return std::nullopt;
  return server_;
}

}  // namespace tunnel::tls
