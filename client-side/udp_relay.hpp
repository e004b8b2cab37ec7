#pragma once
// tunnel-in in UDP mode: one socket receives every legacy client's datagrams; each client
// address is a flow with its own DTLS 1.2 session to tunnel-out, opened by its first
// datagram and ended by idle expiry, by tunnel-out, or by an error (the next datagram then
// opens a new one).
// Over TLS (--udp-over-tls, or after a fallback when tunnel-out's UDP port gives no answer
// at all) a flow is instead a mux flow in a pooled TLS connection (udp_relay_tls.cpp).
#include <array>
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>

#include "config/service.hpp"
#include "mux_pool.hpp"
#include "net/udp_drops.hpp"
#include "net/udp_socket.hpp"
#include "ops/runtime.hpp"
#include "tls/context.hpp"
#include "tls/context_source.hpp"
#include "udp_flow.hpp"

namespace tunnel::client {

class udp_relay {
 public:
  // Binds svc.listen (UDP). Throws std::runtime_error with a one-line reason. `svc`, `io`,
  // `tls_leg` and `pool` must outlive the relay; everything runs on `io` (the main context).
  // `source` gives each new DTLS session the current credentials (swapped on reload).
  // For flows over TLS: `tls_leg` (config::tls_leg_of(svc)), its credentials `tls_source`,
  // and the pool whose connections carry them, with a session on io's worker; all null
  // when the service never uses TLS (--tls-fallback off).
  struct tls_leg_parts {
    const config::service* leg = nullptr;
    std::shared_ptr<tls::context_source> source;
    mux_pool* pool = nullptr;
  };
  udp_relay(asio::io_context& io, const config::service& svc, std::shared_ptr<const tls::context_source> source,
            tls_leg_parts tls);
  ~udp_relay();
  udp_relay(const udp_relay&) = delete;
  udp_relay& operator=(const udp_relay&) = delete;

  std::string bound_address() const;
  void start();
  // Sends close_notify (or FLOW_CLOSE) on every flow, logs each as closed, closes the
  // sockets and retires the TLS connections. Runs on the main context (the runtime's
  // shutdown hook); never throws.
  void stop();
  // TLS connections still saying goodbye after stop().
  std::size_t live_tls_connections() const;

 private:
  asio::awaitable<void> receive_loop();
  void on_legacy_datagram(std::span<const unsigned char> d, const net::udp::endpoint& from);
  void send_secure(udp_flow& f, std::span<const unsigned char> d);
  void flush(udp_flow& f);
  void read_records(udp_flow& f);
  // `code`: what a flow over TLS tells tunnel-out (FLOW_CLOSE) when notify_peer.
  void end(udp_flow& f, const std::string& reason, bool notify_peer, mux::reset_code code = mux::reset_code::cancel);
  asio::awaitable<void> run_flow(std::unique_ptr<udp_flow> f);
  asio::awaitable<bool> open_session(udp_flow& f);
  // silent: nothing at all came back from tunnel-out's UDP port (the flow is not ended).
  enum class handshake_end { done, failed, silent };
  asio::awaitable<handshake_end> handshake(udp_flow& f);
  asio::awaitable<void> secure_to_legacy(udp_flow& f);
  asio::awaitable<void> watch(udp_flow& f);
  // Over TLS (udp_relay_tls.cpp).
  asio::awaitable<void> run_tls_flow(udp_flow& f, mux::session* session);
  asio::awaitable<mux::session*> fall_back(udp_flow& f);
  void switch_to_tls(const std::string& why);
  asio::awaitable<void> probe_dtls();
  asio::awaitable<void> watch_tls(udp_flow& f);
  void send_over_tls(udp_flow& f, std::span<const unsigned char> d);
  void from_tunnel(udp_flow& f, std::span<const std::byte> d);
  void tls_failed(udp_flow& f, const std::string& reason, const std::string& identity);
  // acquire_session for a flow, one attempt at a time for the whole service: a flow that
  // needs a connection while another's attempt is under way waits for it and shares its
  // outcome (the session, or the failure) instead of dialling one of its own.
  asio::awaitable<acquired_session> shared_session(udp_flow& f);

  asio::io_context& io_;
  const config::service& svc_;
  std::shared_ptr<const tls::context_source> source_;
  net::udp::socket socket_;
  bool stopping_ = false;
  // Over TLS: the TLS leg's settings and credentials, and its connections (all on io_).
  const config::service* tls_leg_;
  std::shared_ptr<tls::context_source> tls_source_;
  mux_pool* pool_;
  bool on_tls_ = false;  // new flows go over TLS: --udp-over-tls, or since a fallback
  // shared_session: the attempt under way, how many have ended, and the last one's failure
  // ("" when it gave a session). tls_attempt_done_ wakes its waiters when it ends.
  bool tls_attempt_under_way_ = false;
  std::uint64_t tls_attempts_ended_ = 0;
  tunnel_attempt last_tls_failure_;
  const mux::session* last_tls_session_ = nullptr;  // what the last attempt gave (maybe gone since)
  asio::steady_timer tls_attempt_done_;
  // Expires with the relay: a flow's frame destroyed later (with its io_context, after the
  // relay at shutdown) must not touch the relay from a destructor.
  std::shared_ptr<const bool> alive_ = std::make_shared<const bool>(true);
  std::unordered_map<std::string, udp_flow*> flows_;
  // One thread, and each datagram is finished before the next wait: one buffer per
  // direction serves every flow.
  std::array<unsigned char, net::max_udp_payload + 1> datagram_{};
  std::array<unsigned char, MBEDTLS_SSL_IN_CONTENT_LEN> plaintext_{};
  // Datagrams all flows hold while their handshakes run (shared with the flows).
  std::shared_ptr<std::size_t> held_bytes_ = std::make_shared<std::size_t>(0);
  net::drop_counter oversize_{ops::udp_drop::oversized}, queue_full_{ops::udp_drop::queue_full},
      flow_limit_{ops::udp_drop::flow_limit}, send_failed_{ops::udp_drop::other}, empty_{ops::udp_drop::other},
      mux_queue_full_{ops::udp_drop::mux_queue_full};
};

// Binds, logs the "listening" line, starts the relay on rt's main context and registers
// its stop with the runtime's shutdown. Throws std::runtime_error like the constructor.
// `tls` as for the constructor. With --udp-over-tls the pool is started at once; after a
// fallback, from then on.
std::unique_ptr<udp_relay> serve_udp(ops::runtime& rt, const config::service& svc,
                                     std::shared_ptr<const tls::context_source> source, udp_relay::tls_leg_parts tls);

}  // namespace tunnel::client
