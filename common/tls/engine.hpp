#pragma once
// The TLS engine: one mbedTLS context driven over memory buffers. It never touches a socket:
// the caller puts received ciphertext into input_space()/commit_input() and sends what
// output() holds. Every call returns at once (never blocks, never waits for I/O).
#include <mbedtls/ssl.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "net/io_buffer.hpp"
#include "policy/peer_identity.hpp"
#include "tls/context.hpp"
#include "tls/record_guard.hpp"

namespace tunnel::tls {

class engine {
 public:
  // Throws std::runtime_error when mbedTLS cannot set up the context (out of memory).
  // `without_alpn`: a server uses the context's raw_config() (see tls/client_hello.hpp).
  explicit engine(std::shared_ptr<const tls_context> context, bool without_alpn = false);
  ~engine();
  engine(const engine&) = delete;
  engine& operator=(const engine&) = delete;

  // Ciphertext in: write up to input_space().size() bytes there, then commit_input(n).
  // The space is a lent buffer (net/io_buffer.hpp), given back once mbedTLS has taken every
  // byte in it, so an idle engine holds none.
  std::span<std::byte> input_space();
  void commit_input(std::size_t n);
  // Bytes received and not yet consumed: ciphertext in our buffer, or a decrypted record
  // mbedTLS has not handed out completely.
  bool has_buffered_input() const;

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
  const tls_context& context() const { return *context_; }
  // The peer's identity once its certificate has been seen (also when it was refused).
  const std::optional<policy::peer_identity>& peer() const { return peer_; }
  bool refused_by_policy() const;
  // The peer's certificate chain verified (revocation, validity and usage included): its
  // identity is the CA's word on the certificate, not only what the peer wrote in one. (Not
  // proof that the peer holds the key: only a completed handshake is. A chain that verified
  // and was then refused by the allow-list counts as verified.)
  bool chain_verified() const;
  // Server, for the penalty box (policy/penalty_box.hpp): `open` is asked before every
  // handshake step, and once it says no the handshake ends there with an access_denied
  // alert, refused by policy for `why`; `failed` hears at once, within the failing step, what
  // the handshake cost in CPU. (At once: a step of another connection from the same source
  // may run before this one's caller sees the failure.)
  struct step_watch {
    std::function<bool()> open;
    std::string why;
    std::function<void(std::chrono::nanoseconds)> failed;
  };
  void watch_steps(step_watch watch) { watch_ = std::move(watch); }
  // After a handshake that a reload overtook (context().replaced()): whether `now`, the
  // context in force, admits this peer too. Its allow-list always decides; its CA and CRL
  // too when they differ from the ones the handshake used, by checking the peer's chain
  // again (a resumed session or a pre-shared key has none to check: refused then).
  bool admitted_after_reload(const tls_context& now) const;
  // After a finished handshake: a reload replaced the context it ran on and the context in
  // force now does not admit this peer. Such a handshake is refused, on every leg, with
  // tls_context::overtaken_refusal.
  bool overtaken_by_reload() const;
  // The handshake resumed an earlier session (tls/resumption.hpp): no certificates were
  // exchanged, and peer() is the identity the earlier full handshake verified.
  bool resumed() const { return resumed_; }
  // Server: the service (index into the context's routes) this connection is for, as its
  // SNI chose or as the only one; nullopt when none was chosen (see tls_options::routes).
  std::optional<std::size_t> route() const { return choice_.route; }
  // Server: the SNI the client sent ("" when none).
  const std::string& asked_service() const { return choice_.asked; }
  // The peer announced a record longer than TLS allows: handshake() and read() then fail
  // with MBEDTLS_ERR_SSL_INVALID_RECORD after queueing a record_overflow alert.
  bool record_overflow() const { return records_.overflow(); }
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
  bool admitted();  // the policy check on peer_, from verify_cb
  // Whether the service this connection asked for admits `peer`; `why` gets the refusal
  // reason when it is more than "not on the allow-list".
  bool admits(const policy::peer_identity& peer, std::string* why) const;
  int finish_handshake();  // after mbedTLS's handshake succeeded: the resumed identity
  // Ends the handshake refused by policy for `why`, with an access_denied alert.
  int refuse_by_policy(std::string why);
  // Runs an mbedTLS call again after each NewSessionTicket it reports, keeping the ticket.
  template <typename Call>
  int with_tickets(Call call);

  std::shared_ptr<const tls_context> context_;
  mbedtls_ssl_context ssl_;
  std::optional<net::io_buffer> in_;
  std::size_t in_begin_ = 0, in_end_ = 0;
  std::vector<unsigned char> out_;
  std::optional<policy::peer_identity> peer_;
  std::chrono::nanoseconds handshake_cpu_{0};  // thread CPU spent in mbedTLS's handshake (step_watch)
  step_watch watch_;
  handshake_slot slot_;               // for the ticket callbacks (tls/resumption.hpp)
  std::optional<known_peer> offered_;  // client: the server of the session offered
  bool resumed_ = false;
  bool refused_by_policy_ = false;
  std::string refusal_;  // why policy refused, when it is not the plain allow-list
  route_choice choice_;  // mbedTLS user data: the SNI callback writes here
  record_guard records_;
  int refuse_overflow();
};

}  // namespace tunnel::tls
