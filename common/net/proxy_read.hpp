#pragma once
// Reading a PROXY protocol header (v1 or v2, detected by its signature) from the start of
// an accepted plain connection, bounded in bytes and time.
#include <asio/awaitable.hpp>
#include <chrono>
#include <string>

#include "net/plain_stream.hpp"
#include "proxy/header.hpp"

namespace tunnel::net {

struct proxy_read_result {
  enum class outcome {
    ok,        // `header` is complete (its addr may be empty: LOCAL / UNKNOWN)
    probe,     // the peer left before sending a byte (a health check)
    timeout,   // no decision within the time limit
    refused,   // not a valid header, or the connection failed meanwhile: see `reason`
  };
  outcome result = outcome::refused;
  proxy::decoded header;
  std::string reason;
};

// Reads from `s` until the bytes decide (at most proxy::max_header_length, within
// `timeout`). On success the bytes that arrived behind the header are handed back to `s`
// (plain_stream::unread), so the stream continues exactly after it. `s` must outlive the
// call. Never throws for network errors.
asio::awaitable<proxy_read_result> read_proxy_header(plain_stream& s, std::chrono::milliseconds timeout);

}  // namespace tunnel::net
