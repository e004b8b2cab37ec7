#pragma once
// The TLS engine: one mbedTLS context driven over memory buffers. It never touches a socket:
// the caller puts received ciphertext into input_space()/commit_input() and sends what
// output() holds. Every call returns at once (never blocks, never waits for I/O).
#include <mbedtls/ssl.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "policy/peer_identity.hpp"
#include "tls/context.hpp"

namespace tunnel::tls {

class engine {
 public:
  // Throws std::runtime_error when mbedTLS cannot set up the context (out of memory).
  explicit engine(std::shared_ptr<const tls_context> context);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  // Ciphertext in: write up to input_space().size() bytes there, then commit_input(n).
  std::span<std::byte> input_space();
  void commit_input(std::size_t n);

  // Ciphertext out: bytes mbedTLS produced and the caller must send, in order.
  std::vector<unsigned char>& output() { return out_; }

  // The operations return mbedTLS codes: 0 / byte counts on success,
  // MBEDTLS_ERR_SSL_WANT_READ when more input is needed, another negative code on failure.
  int handshake();
  int read(std::span<std::byte> plaintext);
  int write(std::span<const std::byte> plaintext);  // at most one record per call
  int close_notify();

  bool handshake_done() const;
  bool is_client() const { return context_->options().side == role::client; }
  // The peer's identity once its certificate has been seen (also when it was refused).
  const std::optional<policy::peer_identity>& peer() const { return peer_; }
  bool refused_by_policy() const { return refused_by_policy_; }
  // Verification failure text ("certificate has expired", "not on the allow-list", ...).
  std::string verify_failure() const;
  std::string version() const;
  std::string ciphersuite() const;  // "" until a ServerHello has settled one
  // The protocol ALPN settled on ("" when none: raw mode).
  std::string alpn() const;

  // The largest plaintext one write() call accepts.
  std::size_t max_record_payload() const;

 private:
  static int send_cb(void* self, const unsigned char* data, std::size_t len);
  static int recv_cb(void* self, unsigned char* data, std::size_t len);
  static int verify_cb(void* self, mbedtls_x509_crt* crt, int depth, std::uint32_t* flags);

  std::shared_ptr<const tls_context> context_;
  mbedtls_ssl_context ssl_;
  std::vector<std::byte> in_;
  std::size_t in_begin_ = 0, in_end_ = 0;
  std::vector<unsigned char> out_;
  std::optional<policy::peer_identity> peer_;
  bool refused_by_policy_ = false;
};

}  // namespace tunnel::tls
