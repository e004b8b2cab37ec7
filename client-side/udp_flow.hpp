#pragma once
// One UDP flow on tunnel-in: one legacy client address, its DTLS session with tunnel-out
// over a socket of its own (or, over TLS, its mux flow inside a pooled connection), and
// the datagrams waiting while the handshake runs.
// Owned by the flow's coroutine; the relay's table points at it until end().
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "net/held_datagrams.hpp"
#include "mux/flow.hpp"
#include "net/udp_socket.hpp"
#include "ops/flow_log.hpp"
#include "tls/dtls_engine.hpp"
#include "tls/handshake_flight.hpp"

namespace tunnel::client {

struct udp_flow {
  using clock = std::chrono::steady_clock;

  // `held_bytes`: the relay's total of held datagrams (held_datagrams.hpp).
  udp_flow(asio::io_context& io, net::udp::endpoint from, std::shared_ptr<std::size_t> held_bytes)
      : legacy(from), key(net::endpoint_key(from)), secure(io), wake(io, asio::steady_timer::time_point::max()),
        queued(std::move(held_bytes)) {}

  net::udp::endpoint legacy;  // the legacy client this flow belongs to
  std::string key;
  net::udp::socket secure;    // connected to tunnel-out
  std::unique_ptr<tls::dtls_engine> tls;  // set once the socket is connected
  // Wakes the flow's coroutine when a deadline may have moved or the flow has ended.
  asio::steady_timer wake;
  net::held_datagrams queued;  // legacy datagrams awaiting the handshake
  tls::flight_guard flights;   // a flight a copied or forged record asked for again is not resent
  clock::time_point started = clock::now();
  clock::time_point last_activity = clock::now();
  bool ready = false;  // handshake done: datagrams go straight through
  bool ended = false;
  // Over TLS: datagram frames in a mux connection instead of DTLS (`tls` then unused).
  bool over_tls = false;
  std::unique_ptr<mux::flow> mux;
  bool heard = false;       // DTLS: something came back from tunnel-out's UDP port
  std::string silence;      // DTLS: why the handshake heard nothing (the fallback's reason)
  bool probe = false;       // a DTLS handshake testing whether UDP gets through again
  ops::flow_record rec;
};

}  // namespace tunnel::client
