#include "tls/dtls_engine.hpp"

#include "tls/error.hpp"
#include "tls/thread_cpu.hpp"
#include "tls/validity.hpp"

#include <cstring>
#include <stdexcept>

namespace tunnel::tls {

dtls_engine::dtls_engine(std::shared_ptr<const tls_context> context, std::uint16_t mtu)
    : context_(std::move(context)) {
  mbedtls_ssl_init(&ssl_);
  if (mbedtls_ssl_setup(&ssl_, context_->config()) != 0) {
    mbedtls_ssl_free(&ssl_);
    throw std::runtime_error("cannot set up DTLS context");
  }
  mbedtls_ssl_set_bio(&ssl_, this, send_cb, recv_cb, nullptr);
  mbedtls_ssl_set_verify(&ssl_, verify_cb, this);
  // Mandatory for DTLS: without timers mbedTLS never retransmits a lost flight.
  mbedtls_ssl_set_timer_cb(&ssl_, this, set_timer_cb, get_timer_cb);
  mbedtls_ssl_set_mtu(&ssl_, mtu);
  const auto& opts = context_->options();
  if (opts.side == role::client) {
    // NULL explicitly where a pin replaces the name check (mbedTLS >= 3.6.3 otherwise
    // refuses a verifying client without a host name).
    if (mbedtls_ssl_set_hostname(&ssl_, opts.server_name ? opts.server_name->c_str() : nullptr) != 0) {
      mbedtls_ssl_free(&ssl_);
      throw std::runtime_error("invalid server name");
    }
  }
}

dtls_engine::~dtls_engine() { mbedtls_ssl_free(&ssl_); }

int dtls_engine::set_client_id(std::string_view id) {
  return mbedtls_ssl_set_client_transport_id(&ssl_, reinterpret_cast<const unsigned char*>(id.data()), id.size());
}

int dtls_engine::enable_cid(std::span<const unsigned char> own_cid) {
  return mbedtls_ssl_set_cid(&ssl_, MBEDTLS_SSL_CID_ENABLED, own_cid.data(), own_cid.size());
}

int dtls_engine::reset() {
  in_ready_ = false;
  out_.clear();
  peer_.reset();
  refused_by_policy_ = false;
  server_answered_ = false;
  handshake_cpu_ = {};
  return mbedtls_ssl_session_reset(&ssl_);
}

void dtls_engine::feed(std::span<const unsigned char> datagram) {
  in_.assign(datagram.begin(), datagram.end());
  in_ready_ = true;
}

int dtls_engine::send_cb(void* self, const unsigned char* data, std::size_t len) {
  // In DTLS mode mbedTLS hands over exactly one datagram per call. Never WANT_WRITE: the
  // caller sends the queue after every call (a retry after WANT_WRITE would duplicate).
  auto* e = static_cast<dtls_engine*>(self);
  e->out_.emplace_back(data, data + len);
  return static_cast<int>(len);
}

int dtls_engine::recv_cb(void* self, unsigned char* data, std::size_t len) {
  auto* e = static_cast<dtls_engine*>(self);
  if (!e->in_ready_) return MBEDTLS_ERR_SSL_WANT_READ;
  e->in_ready_ = false;
  // An empty datagram holds no record, and mbedTLS reads a 0 from here as the end of the
  // connection: anyone able to send one from the peer's address would end a handshake.
  if (e->in_.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
  // A datagram larger than mbedTLS's record buffer cannot hold a record we accept; handing
  // over a truncated one would only make it fail later, so it is dropped here.
  const int n = e->in_.size() > len ? MBEDTLS_ERR_SSL_WANT_READ : static_cast<int>(e->in_.size());
  if (n > 0) std::memcpy(data, e->in_.data(), e->in_.size());
  // Anyone able to send from the peer's address can feed one 64 KiB datagram: its room is
  // not kept for the life of the flow.
  if (e->in_.capacity() > kept_input_capacity) std::vector<unsigned char>().swap(e->in_);
  return n;
}

int dtls_engine::verify_cb(void* self, mbedtls_x509_crt* crt, int depth, std::uint32_t* flags) {
  // Runs from the root down to the leaf; the leaf (depth 0) carries the identity.
  if (depth != 0) return 0;
  auto* e = static_cast<dtls_engine*>(self);
  e->peer_ = policy::identity_of(*crt);
  if (!e->context_->admits(*e->peer_)) {
    e->refused_by_policy_ = true;
    *flags |= MBEDTLS_X509_BADCERT_OTHER;  // reject: the handshake fails with an alert
  }
  if (*flags == 0) note_peer_expiry(*crt, e->context_->options().expiry_warning);
  return 0;
}

void dtls_engine::set_timer_cb(void* self, std::uint32_t intermediate_ms, std::uint32_t final_ms) {
  auto* e = static_cast<dtls_engine*>(self);
  const auto now = clock::now();
  if (final_ms == 0) {
    // mbedtls_ssl_read cancels the (already cancelled) timer on every call; only a real
    // change is worth waking a waiter for.
    if (!e->timer_running_) return;
    e->timer_running_ = false;
    e->intermediate_at_ = e->final_at_ = clock::time_point::max();
  } else {
    e->timer_running_ = true;
    e->intermediate_at_ = now + std::chrono::milliseconds(intermediate_ms);
    e->final_at_ = now + std::chrono::milliseconds(final_ms);
  }
  if (e->timer_changed_) e->timer_changed_();
}

int dtls_engine::get_timer_cb(void* self) {
  // The contract of mbedtls_ssl_get_timer_t: -1 cancelled, 0 none passed, 1 intermediate
  // passed, 2 final passed.
  auto* e = static_cast<dtls_engine*>(self);
  if (!e->timer_running_) return -1;
  const auto now = clock::now();
  if (now >= e->final_at_) return 2;
  if (now >= e->intermediate_at_) return 1;
  return 0;
}

int dtls_engine::handshake() {
  const auto cpu_before = thread_cpu();
  // mbedtls_ssl_handshake()'s loop, step by step, to see the server's answer taken.
  const bool client = mbedtls_ssl_conf_get_endpoint(ssl_.MBEDTLS_PRIVATE(conf)) == MBEDTLS_SSL_IS_CLIENT;
  int rc = 0;
  while (!mbedtls_ssl_is_handshake_over(&ssl_)) {
    const int state = ssl_.MBEDTLS_PRIVATE(state);
    rc = mbedtls_ssl_handshake_step(&ssl_);
    if (rc != 0) break;
    // Out of SERVER_HELLO: a well-formed ServerHello or HelloVerifyRequest was taken (a
    // datagram that is not one is discarded, and the step waits for more).
    if (client && state == MBEDTLS_SSL_SERVER_HELLO) server_answered_ = true;
  }
  handshake_cpu_ += thread_cpu() - cpu_before;
  // PSK mode: no certificate, so the key's identity is the peer's identity.
  if (rc == 0 && !peer_ && context_->creds().psk()) {
    peer_.emplace();
    peer_->psk = context_->creds().psk()->identity;
  }
  return rc;
}

int dtls_engine::read(std::span<unsigned char> plaintext) {
  return mbedtls_ssl_read(&ssl_, plaintext.data(), plaintext.size());
}

int dtls_engine::write(std::span<const unsigned char> plaintext) {
  return mbedtls_ssl_write(&ssl_, plaintext.data(), plaintext.size());
}

int dtls_engine::close_notify() { return mbedtls_ssl_close_notify(&ssl_); }

int dtls_engine::send_fatal_alert(unsigned char description) {
  return mbedtls_ssl_send_alert_message(&ssl_, MBEDTLS_SSL_ALERT_LEVEL_FATAL, description);
}

bool dtls_engine::pending() const { return mbedtls_ssl_check_pending(&ssl_) != 0; }

int dtls_engine::check_record(std::span<const unsigned char> datagram) const {
  // mbedtls_ssl_check_record decrypts in place; the caller's datagram must stay intact
  // for the real processing that follows.
  std::vector<unsigned char> copy(datagram.begin(), datagram.end());
  return mbedtls_ssl_check_record(&ssl_, copy.data(), copy.size());
}

bool dtls_engine::newer_than_seen(std::span<const unsigned char> datagram) const {
  // DTLS 1.2 record header: type (1), version (2), epoch (2), sequence number (6), ...
  if (datagram.size() < 11) return false;
  const unsigned epoch = (unsigned{datagram[3]} << 8) | datagram[4];
  std::uint64_t seq = 0;
  for (std::size_t i = 5; i < 11; ++i) seq = (seq << 8) | datagram[i];
  // mbedTLS's replay window state: the highest validated sequence number of the current
  // epoch (MBEDTLS_PRIVATE is its own accessor for fields it keeps private).
  return epoch == ssl_.MBEDTLS_PRIVATE(in_epoch) && seq > ssl_.MBEDTLS_PRIVATE(in_window_top);
}

bool dtls_engine::handshake_done() const {
  return mbedtls_ssl_is_handshake_over(const_cast<mbedtls_ssl_context*>(&ssl_));
}

bool dtls_engine::cid_in_use() const {
  int enabled = MBEDTLS_SSL_CID_DISABLED;
  unsigned char peer_cid[MBEDTLS_SSL_CID_OUT_LEN_MAX];
  std::size_t len = 0;
  if (mbedtls_ssl_get_peer_cid(const_cast<mbedtls_ssl_context*>(&ssl_), &enabled, peer_cid, &len) != 0)
    return false;
  return enabled == MBEDTLS_SSL_CID_ENABLED;
}

std::size_t dtls_engine::max_payload() const {
  const int n = mbedtls_ssl_get_max_out_record_payload(&ssl_);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

bool dtls_engine::overtaken_by_reload() const {
  if (!context_->replaced()) return false;
  const auto now = context_->replacement();
  if (!now) return true;
  switch (now->recheck_after_reload(*context_, mbedtls_ssl_get_peer_cert(&ssl_))) {
    case tls_context::recheck::pass: return false;
    case tls_context::recheck::fail: return true;
    case tls_context::recheck::ask_allow_list: break;
  }
  return !peer_ || !now->admits(*peer_);
}

std::string dtls_engine::verify_failure() const {
  return describe_verify_failure(ssl_, context_->options().side, refused_by_policy_);
}

std::string dtls_engine::version() const { return mbedtls_ssl_get_version(&ssl_); }

std::string dtls_engine::ciphersuite() const { return ciphersuite_name(ssl_); }

}  // namespace tunnel::tls
