#include "tls/engine.hpp"

#include "mux/frame.hpp"
#include "policy/server_name.hpp"
#include "tls/error.hpp"
#include "tls/thread_cpu.hpp"
#include "tls/validity.hpp"

#include <cstring>
#include <limits>
#include <stdexcept>

namespace tunnel::tls {

engine::engine(std::shared_ptr<const tls_context> context, bool without_alpn)
    : context_(std::move(context)),
      records_(context_->options().min_version == version::tls1_3 ? record_guard::tls13_limit
                                                                  : record_guard::tls12_limit) {
  mbedtls_ssl_init(&ssl_);
  if (mbedtls_ssl_setup(&ssl_, without_alpn ? context_->raw_config() : context_->config()) != 0) {
    mbedtls_ssl_free(&ssl_);
    throw std::runtime_error("cannot set up TLS context");
  }
  mbedtls_ssl_set_bio(&ssl_, this, send_cb, recv_cb, nullptr);
  mbedtls_ssl_set_verify(&ssl_, verify_cb, this);
  mbedtls_ssl_set_user_data_p(&ssl_, &choice_);
  const auto& opts = context_->options();
  if (opts.side == role::server) choice_.route = context_->default_route();
  slot_.ssl = &ssl_;
  slot_.peer = &peer_;
  slot_.owner = this;
  slot_.admits = [](const void* self, const policy::peer_identity& peer) {
    return static_cast<const engine*>(self)->admits(peer, nullptr);
  };
  if (opts.side == role::client) {
    // NULL explicitly where a pin replaces the name check (mbedTLS >= 3.6.3 otherwise
    // refuses a verifying client without a host name). A service name goes out as the SNI
    // instead, and verify_cb checks the server name.
    const std::optional<std::string>& hostname = opts.sni ? opts.sni : opts.server_name;
    const int rc = mbedtls_ssl_set_hostname(&ssl_, hostname ? hostname->c_str() : nullptr);
    if (rc != 0) {
      mbedtls_ssl_free(&ssl_);
      throw std::runtime_error("invalid server name");
    }
    if (auto* sessions = context_->sessions()) offered_ = sessions->offer(ssl_);
  }
}

engine::~engine() { mbedtls_ssl_free(&ssl_); }

std::span<std::byte> engine::input_space() {
  // Socket reads land here before mbedTLS copies them into its record buffer; one read
  // takes several full records (net::io_buffer::size).
  if (!in_) in_.emplace();
  if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
  if (in_end_ == net::io_buffer::size && in_begin_ > 0) {
    std::memmove(in_->data(), in_->data() + in_begin_, in_end_ - in_begin_);
    in_end_ -= in_begin_;
    in_begin_ = 0;
  }
  return {in_->data() + in_end_, net::io_buffer::size - in_end_};
}

void engine::commit_input(std::size_t n) {
  n = std::min(n, net::io_buffer::size - in_end_);
  if (n > 0) records_.feed({in_->data() + in_end_, n});
  in_end_ += n;
  if (in_begin_ == in_end_) in_.reset();  // nothing arrived (the read failed): lend nothing
}

bool engine::has_buffered_input() const {
  return in_end_ > in_begin_ || mbedtls_ssl_check_pending(&ssl_) != 0;
}

int engine::refuse_overflow() {
  mbedtls_ssl_send_alert_message(&ssl_, MBEDTLS_SSL_ALERT_LEVEL_FATAL, MBEDTLS_SSL_ALERT_MSG_RECORD_OVERFLOW);
  return MBEDTLS_ERR_SSL_INVALID_RECORD;
}

int engine::send_cb(void* self, const unsigned char* data, std::size_t len) {
  // Never WANT_WRITE: after WANT_WRITE mbedTLS has already encrypted the record and a retry
  // must repeat the same arguments; queueing here avoids that trap entirely.
  auto* e = static_cast<engine*>(self);
  e->out_.insert(e->out_.end(), data, data + len);
  return static_cast<int>(len);
}

int engine::recv_cb(void* self, unsigned char* data, std::size_t len) {
  auto* e = static_cast<engine*>(self);
  const std::size_t available = e->in_end_ - e->in_begin_;
  if (available == 0) return MBEDTLS_ERR_SSL_WANT_READ;
  const std::size_t n = std::min(len, available);
  std::memcpy(data, e->in_->data() + e->in_begin_, n);
  e->in_begin_ += n;
  if (e->in_begin_ == e->in_end_) {  // all taken: give the buffer back
    e->in_.reset();
    e->in_begin_ = e->in_end_ = 0;
  }
  return static_cast<int>(n);
}

int engine::verify_cb(void* self, mbedtls_x509_crt* crt, int depth, std::uint32_t* flags) {
  // Runs from the root down to the leaf; the leaf (depth 0) carries the identity. The chain
  // is as good as its first certificate to expire: a resumed session must not outlive it.
  auto* e = static_cast<engine*>(self);
  e->slot_.peer_not_after = std::min(e->slot_.peer_not_after, unix_seconds(crt->valid_to));
  if (depth != 0) return 0;
  e->peer_ = policy::identity_of(*crt);
  e->slot_.peer_authenticated_ms = steady_ms();
  const auto& opts = e->context_->options();
  if (opts.side == role::client && opts.sni) {
    // mbedTLS compared the certificate with the SNI, which names a service, not the server.
    *flags &= ~static_cast<std::uint32_t>(MBEDTLS_X509_BADCERT_CN_MISMATCH);
    if (opts.server_name && !policy::certifies_name(*e->peer_, *opts.server_name))
      *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
  }
  if (!e->admitted()) {
    e->refused_by_policy_ = true;
    *flags |= MBEDTLS_X509_BADCERT_OTHER;  // reject: the handshake fails with an alert
  }
  if (*flags == 0) note_peer_expiry(*crt, e->context_->options().expiry_warning);
  return 0;
}

bool engine::admitted() { return admits(*peer_, &refusal_); }

bool engine::admits(const policy::peer_identity& peer, std::string* why) const {
  if (context_->options().side == role::client) return context_->admits(peer);
  // A mux connection carries streams for any service on this port: it needs one that
  // admits the peer, and every stream is checked against its own service at open.
  if (alpn() == mux::alpn_name) return context_->admits_any(peer);
  if (!choice_.route) {
    if (why) *why = "no service named: this port serves several, the client must send one as SNI";
    return false;
  }
  if (context_->admits(peer, *choice_.route)) return true;
  const auto& name = context_->options().routes[*choice_.route].name;
  if (why && !name.empty()) *why = "peer certificate not on the allow-list of service " + name;
  return false;
}

bool engine::admitted_after_reload(const tls_context& now) const {
  switch (now.recheck_after_reload(*context_, resumed_ ? nullptr : mbedtls_ssl_get_peer_cert(&ssl_))) {
    case tls_context::recheck::pass: return true;
    case tls_context::recheck::fail: return false;
    case tls_context::recheck::ask_allow_list: break;
  }
  if (!peer_) return false;
  if (is_client()) return now.admits(*peer_);
  if (alpn() == mux::alpn_name) return now.admits_any(*peer_);
  return choice_.route && now.admits(*peer_, *choice_.route);
}

bool engine::overtaken_by_reload() const {
  if (!context_->replaced()) return false;
  const auto now = context_->replacement();
  return !now || !admitted_after_reload(*now);
}

bool engine::chain_verified() const {
  if (!peer_ || resumed_) return peer_.has_value();  // a resumed identity was verified when first seen
  // BADCERT_OTHER is the allow-list's own refusal (verify_cb), not a fault in the chain.
  return (mbedtls_ssl_get_verify_result(&ssl_) & ~static_cast<std::uint32_t>(MBEDTLS_X509_BADCERT_OTHER)) == 0;
}

bool engine::refused_by_policy() const {
  // An SNI naming no service here fails the handshake in the ClientHello.
  return refused_by_policy_ || (!choice_.route && !choice_.asked.empty());
}

int engine::handshake() {
  if (records_.overflow()) return refuse_overflow();
  if (watch_.open && !watch_.open()) return refuse_by_policy(watch_.why);
  handshake_scope scope(slot_);
  const auto cpu_before = thread_cpu();
  int rc = with_tickets([&] { return mbedtls_ssl_handshake(&ssl_); });
  handshake_cpu_ += thread_cpu() - cpu_before;
  if (rc == 0 && !peer_) rc = finish_handshake();
  if (rc != MBEDTLS_ERR_SSL_WANT_READ) {  // over, one way or the other: drop what is no longer needed
    offered_.reset();
    slot_.resumed.reset();
    if (rc != 0 && watch_.failed) watch_.failed(handshake_cpu_);
  }
  return rc;
}

int engine::finish_handshake() {
  // PSK mode has no certificate to take an identity from: the key's identity is it (the
  // server accepts no other identity than its configured one).
  if (context_->creds().psk()) {
    peer_.emplace();
    peer_->psk = context_->creds().psk()->identity;
    return 0;
  }
  if (!context_->options().verify_peer) return 0;
  // A verifying handshake that saw no certificate resumed a session: the identity is the one
  // the ticket (server) or our cache (client) kept from the full handshake.
  std::optional<known_peer> earlier = std::move(is_client() ? offered_ : slot_.resumed);
  if (!earlier) return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;  // cannot happen; fail closed if it does
  peer_ = std::move(earlier->identity);
  slot_.peer_not_after = earlier->not_after;
  slot_.peer_authenticated_ms = earlier->authenticated_ms;
  resumed_ = true;
  // The ticket may come from another service on this port, or from a mux connection: the
  // service this connection asked for decides, as in a full handshake. (The ticket callback
  // checked this already and fell back to a full handshake; this is the second line.)
  if (!is_client() && !admitted())
    return refuse_by_policy((refusal_.empty() ? std::string("peer certificate not on the allow-list") : refusal_) +
                            " (resumed session)");
  return 0;
}

int engine::refuse_by_policy(std::string why) {
  refused_by_policy_ = true;
  refusal_ = std::move(why);
  mbedtls_ssl_send_alert_message(&ssl_, MBEDTLS_SSL_ALERT_LEVEL_FATAL, MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED);
  return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
}

template <typename Call>
int engine::with_tickets(Call call) {
  // A client with resumption hears of a NewSessionTicket in two steps: the call that reads
  // it answers WANT_READ with the message held back, the next one processes it and answers
  // RECEIVED_NEW_SESSION_TICKET; the ticket is kept. Neither answer, nor a WANT_READ after
  // a record that was not data (an ignored alert), is about the socket while input is still
  // buffered: the call is made again at once, since a wait there would wait for bytes that
  // already came, maybe forever. It stops when a WANT_READ leaves as much buffered as the
  // one before (a record waiting for more bytes: mbedTLS holds a fragment it cannot use yet).
  const bool after_handshake = handshake_done();
  int rc = call();
  constexpr std::size_t unknown = std::numeric_limits<std::size_t>::max();
  std::size_t left_before = unknown;
  while (true) {
    if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET) {
      if (auto* sessions = context_->sessions(); sessions && peer_)
        sessions->store(ssl_, {*peer_, slot_.peer_not_after, slot_.peer_authenticated_ms});
      left_before = unknown;
    } else {
      const std::size_t left = in_end_ - in_begin_;
      if (!(rc == MBEDTLS_ERR_SSL_WANT_READ && after_handshake && has_buffered_input()) || left_before == left)
        return rc;
      left_before = left;
    }
    rc = call();
  }
}

int engine::read(std::span<std::byte> plaintext) {
  if (records_.overflow()) return refuse_overflow();
  auto* p = reinterpret_cast<unsigned char*>(plaintext.data());
  return with_tickets([&] { return mbedtls_ssl_read(&ssl_, p, plaintext.size()); });
}

int engine::write(std::span<const std::byte> plaintext) {
  const std::size_t n = std::min(plaintext.size(), max_record_payload());
  const auto* p = reinterpret_cast<const unsigned char*>(plaintext.data());
  return with_tickets([&] { return mbedtls_ssl_write(&ssl_, p, n); });
}

int engine::close_notify() {
  return with_tickets([&] { return mbedtls_ssl_close_notify(&ssl_); });
}

bool engine::handshake_done() const { return mbedtls_ssl_is_handshake_over(const_cast<mbedtls_ssl_context*>(&ssl_)); }

std::size_t engine::max_record_payload() const {
  const int n = mbedtls_ssl_get_max_out_record_payload(&ssl_);
  return n > 0 ? static_cast<std::size_t>(n) : 16384;
}

std::string engine::verify_failure() const {
  if (!choice_.route && !choice_.asked.empty()) return "unknown service " + choice_.asked;
  if (!refusal_.empty()) return refusal_;
  return describe_verify_failure(ssl_, context_->options().side, refused_by_policy_);
}

std::string engine::version() const { return mbedtls_ssl_get_version(&ssl_); }

std::string engine::ciphersuite() const { return ciphersuite_name(ssl_); }

std::string engine::alpn() const {
  const char* p = mbedtls_ssl_get_alpn_protocol(&ssl_);
  return p ? std::string(p) : std::string();
}

}  // namespace tunnel::tls
