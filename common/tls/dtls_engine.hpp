#pragma once
// The DTLS 1.2 engine: one mbedTLS context driven over datagrams in memory. Like the TLS
// engine it never touches a socket; unlike it, it keeps datagram boundaries both ways
// (one feed() is one received datagram, one output() entry is one datagram to send) and
// owns the retransmission timer state mbedTLS requires for DTLS.
// Not movable: mbedTLS holds pointers to it. Keep it in a unique_ptr to hand it on.
#include <mbedtls/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "policy/peer_identity.hpp"
#include "tls/context.hpp"

namespace tunnel::tls {

class dtls_engine {
 public:
  using clock = std::chrono::steady_clock;
  using datagram = std::vector<unsigned char>;

  // `context` must have been built for the datagram transport. `mtu` bounds every datagram
  // this engine emits (handshake messages are fragmented to fit).
  // Throws std::runtime_error when mbedTLS cannot set up the context (out of memory).
  dtls_engine(std::shared_ptr<const tls_context> context, std::uint16_t mtu);
  ~dtls_engine();
  dtls_engine(const dtls_engine&) = delete;
  dtls_engine& operator=(const dtls_engine&) = delete;

  // Server: the client's address, which HelloVerifyRequest cookies are bound to. Required
  // before the first handshake() and after every reset(). Returns an mbedTLS code.
  int set_client_id(std::string_view id);
  // Offers the Connection ID extension with `own_cid` as the ID the peer must put on
  // records to us (server: 8 random bytes; client: empty, we read on a connected socket).
  // Applies to the next handshake. Returns an mbedTLS code.
  int enable_cid(std::span<const unsigned char> own_cid);
  // Forgets the handshake in progress (and any input and output) for a new one.
  int reset();

  // The next datagram mbedTLS will read; replaces one not yet read (it was stale). An empty
  // datagram is ignored (it holds no record).
  void feed(std::span<const unsigned char> datagram);

  // mbedTLS codes: 0 / byte counts, MBEDTLS_ERR_SSL_WANT_READ when a datagram is needed,
  // MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED (server) after a cookie request, others fatal.
  int handshake();
  int read(std::span<unsigned char> plaintext);  // one record's payload = one datagram
  int write(std::span<const unsigned char> plaintext);  // at most max_payload() bytes
  int close_notify();
  // Sends a fatal alert (MBEDTLS_SSL_ALERT_MSG_*) into output(). Returns an mbedTLS code.
  int send_fatal_alert(unsigned char description);
  // True while the last datagram fed still holds unread records.
  bool pending() const;

  // Checks, on a private copy, that `datagram` starts with an authentic record not seen
  // before, without changing this session (for moving a flow to a new source address).
  // Returns 0 when authentic, an mbedTLS code otherwise.
  int check_record(std::span<const unsigned char> datagram) const;
  // Whether `datagram`'s first record is newer than every record this session has taken
  // (its epoch, and its sequence number above the highest validated): a flow moves to a
  // new address only for such a record, so a late or copied one cannot move it back.
  bool newer_than_seen(std::span<const unsigned char> datagram) const;

  // Datagrams mbedTLS produced, in order; the caller sends and clears them.
  std::vector<datagram>& output() { return out_; }

  // When mbedTLS wants handshake()/read() called again to retransmit or give up;
  // time_point::max() when no timer runs.
  clock::time_point timer_deadline() const { return final_at_; }
  // Called whenever mbedTLS sets or cancels its timer (so a waiter can recompute).
  void on_timer_change(std::function<void()> f) { timer_changed_ = std::move(f); }

  // After a finished handshake: a reload replaced the context it ran on, and the context
  // in force now does not admit this peer (tls_context::recheck_after_reload, then its
  // allow-list). Such a handshake is refused: tls_context::overtaken_refusal.
  bool overtaken_by_reload() const;

  bool handshake_done() const;
  // Client: the server's first answer (a HelloVerifyRequest or a ServerHello) has been
  // taken, so datagrams get through both ways; bytes that are no such message do not count.
  bool server_answered() const { return server_answered_; }
  // True when both sides agreed to use connection IDs.
  bool cid_in_use() const;
  const std::optional<policy::peer_identity>& peer() const { return peer_; }
  bool refused_by_policy() const { return refused_by_policy_; }
  // Thread CPU spent in handshake() since the last reset() (policy/penalty_box.hpp).
  std::chrono::nanoseconds handshake_cpu() const { return handshake_cpu_; }
  std::string verify_failure() const;
  std::string version() const;
  std::string ciphersuite() const;  // "" until a ServerHello has settled one

  // The largest plaintext one write() accepts for the configured MTU and the negotiated
  // cipher (meaningful once the handshake is done).
  std::size_t max_payload() const;

 private:
  static int send_cb(void* self, const unsigned char* data, std::size_t len);
  static int recv_cb(void* self, unsigned char* data, std::size_t len);
  static int verify_cb(void* self, mbedtls_x509_crt* crt, int depth, std::uint32_t* flags);
  static void set_timer_cb(void* self, std::uint32_t intermediate_ms, std::uint32_t final_ms);
  static int get_timer_cb(void* self);

  static constexpr std::size_t kept_input_capacity = 2048;  // above a path MTU's worth, in_ is freed after use

  std::shared_ptr<const tls_context> context_;
  mbedtls_ssl_context ssl_;
  datagram in_;
  bool in_ready_ = false;
  std::vector<datagram> out_;
  clock::time_point intermediate_at_ = clock::time_point::max();
  clock::time_point final_at_ = clock::time_point::max();
  bool timer_running_ = false;
  std::function<void()> timer_changed_;
  std::optional<policy::peer_identity> peer_;
  bool refused_by_policy_ = false;
  bool server_answered_ = false;
  std::chrono::nanoseconds handshake_cpu_{0};
};

}  // namespace tunnel::tls
