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

std::int64_t steady_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

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
  if (slot->peer && *slot->peer) return known_peer{**slot->peer, slot->peer_not_after};
  return slot->resumed;
}

// A ticket that resumes nothing: a failing write callback would fail the handshake, so when
// no ticket should be issued this goes out instead, with a lifetime of zero, which tells the
// client to drop it (and open_ticket refuses it anyway).
int placeholder(unsigned char* start, const unsigned char* end, std::size_t* length, std::uint32_t* lifetime) {
  if (end - start < 1) return MBEDTLS_ERR_SSL_BUFFER_TOO_SMALL;
  *start = 0;
  *length = 1;
  *lifetime = 0;
  return 0;
}

}  // namespace

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
  const std::int64_t left = peer ? peer->not_after - unix_now() : 0;
  if (!peer || !tls13(slot) || left <= 0) return placeholder(start, end, length, lifetime);
  ticket_contents c;
  c.issued_ms = steady_ms();
  c.lifetime_s = static_cast<std::uint32_t>(std::min<std::int64_t>(issuer->window_.count(), left));
  c.not_after = peer->not_after;
  c.peer = peer->identity;
  std::size_t size = 0;
  mbedtls_ssl_session_save(session, nullptr, 0, &size);
  c.session.resize(size);
  const bool saved = size > 0 && mbedtls_ssl_session_save(session, c.session.data(), size, &size) == 0;
  const std::size_t n = saved ? seal_ticket(issuer->key_, c, {start, static_cast<std::size_t>(end - start)}) : 0;
  mbedtls_platform_zeroize(c.session.data(), c.session.size());
  if (n == 0) return placeholder(start, end, length, lifetime);
  *length = n;
  *lifetime = c.lifetime_s;
  return 0;
}

int ticket_issuer::parse(void* self, mbedtls_ssl_session* session, unsigned char* buf, std::size_t length) {
  const auto* issuer = static_cast<const ticket_issuer*>(self);
  handshake_slot* slot = handshake_scope::current();
  if (!tls13(slot)) return MBEDTLS_ERR_SSL_INVALID_MAC;  // no TLS 1.2 resumption, ever
  auto c = open_ticket(issuer->key_, {buf, length});
  if (!c) return MBEDTLS_ERR_SSL_INVALID_MAC;  // not ours: another process, an older key, forged
  const std::int64_t age = steady_ms() - c->issued_ms;
  int rc = 0;
  if (age < 0 || age > static_cast<std::int64_t>(c->lifetime_s) * 1000 || unix_now() >= c->not_after)
    rc = MBEDTLS_ERR_SSL_SESSION_TICKET_EXPIRED;
  else if (mbedtls_ssl_session_load(session, c->session.data(), c->session.size()) != 0)
    rc = MBEDTLS_ERR_SSL_INVALID_MAC;
  else
    slot->resumed = known_peer{std::move(c->peer), c->not_after};
  mbedtls_platform_zeroize(c->session.data(), c->session.size());
  return rc;
}

session_cache::session_cache(std::chrono::seconds window) : window_(window) { mbedtls_ssl_session_init(&session_); }

session_cache::~session_cache() { mbedtls_ssl_session_free(&session_); }

void session_cache::store(mbedtls_ssl_context& ssl, const known_peer& server) {
  const std::int64_t left = server.not_after - unix_now();
  if (left <= 0) return;
  mbedtls_ssl_session fresh;
  mbedtls_ssl_session_init(&fresh);
  if (mbedtls_ssl_get_session(&ssl, &fresh) != 0) {
    mbedtls_ssl_session_free(&fresh);
    return;
  }
  const auto until = std::chrono::steady_clock::now() + std::min(window_, std::chrono::seconds(left));
  std::lock_guard lock(mutex_);
  mbedtls_ssl_session_free(&session_);
  session_ = fresh;  // takes over what `fresh` points to
  server_ = server;
  until_ = until;
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
    if (mbedtls_ssl_session_save(&other.session_, blob.data(), size, &size) != 0) return;
    server = other.server_;
    until = other.until_;
  }
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
