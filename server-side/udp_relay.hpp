#pragma once
// tunnel-out in UDP mode: one unconnected DTLS socket for every flow. Each datagram is
// routed by connection ID, then by source address, and an epoch-0 ClientHello from an
// unknown address goes through the cookie exchange first: until a ClientHello returns our
// cookie, the peer costs one reused mbedTLS context and a reply no larger than its own
// datagram, never a table entry.
#include <array>
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>

#include "config/service.hpp"
#include "net/udp_drops.hpp"
#include "net/udp_socket.hpp"
#include "ops/runtime.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"
#include "tls/dtls_engine.hpp"
#include "flow_budget.hpp"
#include "udp_flow.hpp"

namespace tunnel::server {

class udp_relay {
 public:
  // Serves `socket` (bound to svc.listen, or to the port number the kernel chose for its TLS
  // port); svc.target is looked up for each flow once its peer is authorized.
  // `svc` and `io` must outlive the relay; everything runs on `io`. `source` gives each new DTLS
  // session the current credentials (swapped on reload); `budget` bounds the service's
  // flows (shared with its flows over TLS).
  udp_relay(asio::io_context& io, const config::service& svc, net::udp::socket socket,
            std::shared_ptr<const tls::context_source> source, std::shared_ptr<flow_budget> budget);
  ~udp_relay();
  udp_relay(const udp_relay&) = delete;
  udp_relay& operator=(const udp_relay&) = delete;

  std::string bound_address() const;
  // Starts receiving. Call once, before io runs.
  void start();
  // Sends close_notify to every flow, logs each as closed and closes the socket. Runs on
  // io's thread (the runtime's shutdown hook); never throws.
  void stop();

 private:
  asio::awaitable<void> receive_loop();
  void route(std::span<const unsigned char> d, const net::udp::endpoint& from);
  void admit(std::span<const unsigned char> d, const net::udp::endpoint& from);
  void deliver(udp_flow& f, std::span<const unsigned char> d);
  void drive(udp_flow& f);
  void read_records(udp_flow& f);
  void authorize(udp_flow& f);
  void send_to_peer(udp_flow& f);
  // One datagram from tunnel-in to the target (held while the target is looked up).
  void send_to_target(udp_flow& f, std::span<const unsigned char> d);
  void forward_to_peer(udp_flow& f, std::span<const unsigned char> payload);
  void end(udp_flow& f, const std::string& reason, bool notify_peer);
  asio::awaitable<void> run_flow(std::unique_ptr<udp_flow> f);
  asio::awaitable<void> watch(udp_flow& f, bool handshake_phase);
  asio::awaitable<void> open_target(udp_flow& f);
  void target_unreachable(udp_flow& f, const std::error_code& ec);
  asio::awaitable<void> target_to_peer(udp_flow& f);
  std::uint64_t fresh_cid();
  // With the half-open list full: the oldest handshake of the source address that holds
  // the most of them.
  udp_flow& busiest_source_oldest_handshake();

  asio::io_context& io_;
  const config::service& svc_;
  std::shared_ptr<const tls::context_source> source_;
  std::shared_ptr<const tls::tls_context> gate_context_;  // what gate_ was built from
  net::udp::socket socket_;
  std::shared_ptr<flow_budget> budget_;
  bool stopping_ = false;
  // The cookie gate's context, reset for every unverified ClientHello and handed to a new
  // flow once one comes back with a valid cookie.
  std::unique_ptr<tls::dtls_engine> gate_;
  // Flows whose handshake runs, oldest first. They hold an mbedTLS context but no
  // --max-flows slot (a slot is taken once the peer's certificate is verified), and at
  // most half_open_limit_ of them live at once: the oldest is pushed out for a new one, so
  // handshakes a client never finishes cannot lock real peers out.
  std::list<udp_flow*> half_open_;
  std::size_t half_open_limit_;
  void leave_half_open(udp_flow& f);
  // The rate-limited warning for a flow refused by --max-flows (`identity` "" when unknown).
  void refuse_for_limit(const std::string& peer, const std::string& identity);
  std::unordered_map<std::uint64_t, udp_flow*> by_cid_;  // every live flow
  std::unordered_map<std::string, udp_flow*> by_addr_;
  // Datagrams all flows hold while their target is looked up (shared with the flows).
  std::shared_ptr<std::size_t> held_bytes_ = std::make_shared<std::size_t>(0);
  // All coroutines run on one thread and finish each datagram before the next wait, so one
  // buffer per direction serves every flow.
  std::array<unsigned char, net::max_udp_payload + 1> datagram_{};
  std::array<unsigned char, MBEDTLS_SSL_IN_CONTENT_LEN> plaintext_{};
  net::drop_counter garbage_{ops::udp_drop::garbage}, unknown_cid_{ops::udp_drop::unknown_session},
      unverified_move_{ops::udp_drop::garbage}, flow_limit_{ops::udp_drop::flow_limit},
      oversize_{ops::udp_drop::oversized}, send_failed_{ops::udp_drop::other}, penalised_{ops::udp_drop::penalised},
      early_full_{ops::udp_drop::queue_full}, early_lost_{ops::udp_drop::other};
  net::log_interval moves_;       // "flow moved to a new address" lines
  net::log_interval pushed_out_;  // "handshake pushed out by newer ones" lines
  std::uint64_t hello_verify_sent_ = 0;
};

// Logs the "listening" line, starts the relay on rt's main context (where `socket` must
// live) and registers its stop with the runtime's shutdown. Throws std::runtime_error like
// the constructor.
std::unique_ptr<udp_relay> serve_udp(ops::runtime& rt, const config::service& svc, net::udp::socket socket,
                                     std::shared_ptr<const tls::context_source> source,
                                     std::shared_ptr<flow_budget> budget);

}  // namespace tunnel::server
