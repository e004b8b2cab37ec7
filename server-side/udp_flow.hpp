#pragma once
// One UDP flow on tunnel-out: the DTLS session with one tunnel-in flow, and the socket of
// its own it relays from, so the target's replies come back to this flow alone.
// Owned by the flow's coroutine; the router's tables point at it until end().
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "net/held_datagrams.hpp"
#include "net/udp_socket.hpp"
#include "ops/flow_log.hpp"
#include "tls/dtls_engine.hpp"
#include "tls/handshake_flight.hpp"

namespace tunnel::server {

struct udp_flow {
  using clock = std::chrono::steady_clock;

  // `held_bytes`: the relay's total of held datagrams (held_datagrams.hpp).
  udp_flow(asio::io_context& io, std::unique_ptr<tls::dtls_engine> engine, net::udp::endpoint from,
           std::uint64_t connection_id, std::shared_ptr<std::size_t> held_bytes)
      : tls(std::move(engine)),
        peer(from),
        peer_key(net::endpoint_key(from)),
        cid(connection_id),
        target(io),
        early(std::move(held_bytes)),
        wake(io, asio::steady_timer::time_point::max()) {}

  std::unique_ptr<tls::dtls_engine> tls;
  net::udp::endpoint peer;  // where tunnel-in's records last came from (moves with NAT)
  std::string peer_key;
  std::uint64_t cid;        // the connection ID we gave tunnel-in
  net::udp::socket target;  // opened only once the peer is authorized and the target looked up
  net::udp::endpoint target_at;  // the target's address this flow took
  net::held_datagrams early;     // from tunnel-in before the target's socket is up
  // Wakes the flow's coroutine when a deadline may have moved or the flow has ended
  // (cancel() is the signal; the coroutine recomputes on every wake).
  asio::steady_timer wake;
  clock::time_point started = clock::now();
  clock::time_point last_activity = clock::now();
  bool authorized = false;
  tls::flight_guard flights;  // a flight a copied record asked for again is not resent
  bool holds_slot = false;  // counted in --max-flows (from authorization on)
  // While the handshake runs: this flow's place among the relay's half-open ones.
  std::optional<std::list<udp_flow*>::iterator> half_open;
  bool ended = false;
  ops::flow_record rec;
};

}  // namespace tunnel::server
