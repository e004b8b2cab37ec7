#pragma once
// What the streams and flows of one mux connection on tunnel-out share. Touched only on
// the connection's thread.
#include <asio/cancellation_signal.hpp>
#include <list>
#include <memory>
#include <optional>
#include <string>

#include "net/udp_drops.hpp"
#include "ops/connection_log.hpp"
#include "policy/peer_identity.hpp"
#include "proxy/ip_endpoint.hpp"

namespace tunnel::server {

struct connection_info {
  ops::connection_record rec;
  std::optional<policy::peer_identity> peer;
  std::string version, cipher;
  std::optional<proxy::ip_endpoint> accepted_on;  // our end of the TLS connection
  std::optional<proxy::ip_endpoint> tunnel_in;    // its other end: tunnel-in's address
  // Stream and flow coroutines still running: the connection's last line waits for them.
  std::size_t live_streams = 0;
  // One per stream coroutine (so also what the per-connection stream limit counts),
  // emitted when its stream fails — tunnel-in's RESET or the session's end — while its
  // target is still being dialled: the dial stops there instead of connecting for a stream
  // that is gone. (A stream already relaying is left alone: what it has received still
  // goes to the target.)
  struct stream_cancel {
    asio::cancellation_signal signal;
    bool dialling = true;
  };
  std::list<stream_cancel> stream_cancels;
  net::drop_counter flows_refused_at_limit{ops::udp_drop::flow_limit};  // rate-limits its warning
  // Bytes its flows hold for targets still being looked up (net::held_datagrams).
  std::shared_ptr<std::size_t> held_bytes = std::make_shared<std::size_t>(0);
};

}  // namespace tunnel::server
