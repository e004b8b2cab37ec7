#pragma once
// tunnel-in in UDP mode: one socket receives every legacy client's datagrams; each client
// address is a flow with its own DTLS 1.2 session to tunnel-out, opened by its first
// datagram and ended by idle expiry, by tunnel-out, or by an error (the next datagram then
// opens a new one).
#include <array>
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
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
#include "udp_flow.hpp"

namespace tunnel::client {

class udp_relay {
 public:
  // Binds svc.listen (UDP). Throws std::runtime_error with a one-line reason. `svc` and
  // `io` must outlive the relay; everything runs on `io`.
  // `source` gives each new DTLS session the current credentials (swapped on reload).
  udp_relay(asio::io_context& io, const config::service& svc, std::shared_ptr<const tls::context_source> source);
  ~udp_relay();
  udp_relay(const udp_relay&) = delete;
  udp_relay& operator=(const udp_relay&) = delete;

  std::string bound_address() const;
  void start();
  // Sends close_notify on every flow, logs each as closed and closes the sockets. Runs on
  // io's thread (the runtime's shutdown hook); never throws.
  void stop();

 private:
  asio::awaitable<void> receive_loop();
  void on_legacy_datagram(std::span<const unsigned char> d, const net::udp::endpoint& from);
  void send_secure(udp_flow& f, std::span<const unsigned char> d);
  void flush(udp_flow& f);
  void read_records(udp_flow& f);
  void end(udp_flow& f, const std::string& reason, bool notify_peer);
  asio::awaitable<void> run_flow(std::unique_ptr<udp_flow> f);
  asio::awaitable<bool> open_session(udp_flow& f);
  asio::awaitable<bool> handshake(udp_flow& f);
  asio::awaitable<void> secure_to_legacy(udp_flow& f);
  asio::awaitable<void> watch(udp_flow& f);

  asio::io_context& io_;
  const config::service& svc_;
  std::shared_ptr<const tls::context_source> source_;
  net::udp::socket socket_;
  bool stopping_ = false;
  std::unordered_map<std::string, udp_flow*> flows_;
  // One thread, and each datagram is finished before the next wait: one buffer per
  // direction serves every flow.
  std::array<unsigned char, net::max_udp_payload + 1> datagram_{};
  std::array<unsigned char, MBEDTLS_SSL_IN_CONTENT_LEN> plaintext_{};
  net::drop_counter oversize_{ops::udp_drop::oversized}, queue_full_{ops::udp_drop::queue_full},
      flow_limit_{ops::udp_drop::flow_limit}, send_failed_{ops::udp_drop::other}, empty_{ops::udp_drop::other};
};

// Binds, logs the "listening" line, starts the relay on rt's main context and registers
// its stop with the runtime's shutdown. Throws std::runtime_error like the constructor.
std::unique_ptr<udp_relay> serve_udp(ops::runtime& rt, const config::service& svc,
                                     std::shared_ptr<const tls::context_source> source);

}  // namespace tunnel::client
