#pragma once
// Running a handshake under a deadline and saying why it failed, in one place for both roles.
#include <asio/awaitable.hpp>
#include <chrono>
#include <string>

#include "ops/metrics.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::tls {

struct handshake_outcome {
  bool ok = false;
  // A peer that connected and left (or reset) without sending a byte: a load-balancer or
  // Kubernetes TCP probe. Logged at debug, not as a failure.
  bool probe = false;
  std::string reason;  // why it failed, for the log line
  ops::handshake_failure kind = ops::handshake_failure::protocol;
};

// Never throws for network or TLS errors. Cancels the handshake when `limit` passes.
// Counts the outcome in ops::metrics (duration on success, failure kind otherwise).
asio::awaitable<handshake_outcome> run_handshake(tls_stream& stream, std::chrono::milliseconds limit);

// A TLS bridge leg's handshake (tunnel-in's --listen-cert, tunnel-out's --target-tls),
// not counted in the tunnel's metrics. "" when up; else why: `timeout_reason` when `limit`
// passed, the reload that overtook it, the verify failure, or the TLS error.
asio::awaitable<std::string> bridge_handshake(tls_stream& stream, std::chrono::milliseconds limit,
                                              const char* timeout_reason);

}  // namespace tunnel::tls
