#pragma once
// tunnel-out reads a client's first TLS record before choosing its TLS configuration: a
// client offering ALPN tunnel-mux/1 gets mux, one offering only other protocols (a TLS
// client of the legacy protocol, stunnel with `protocol`...) gets plain TLS without ALPN
// instead of a refusal. The bytes read are then handed to the TLS engine (tls_stream::preload).
#include <asio/awaitable.hpp>
#include <chrono>
#include <system_error>
#include <optional>
#include <span>

#include "net/endpoint.hpp"
#include "net/io_buffer.hpp"
#include "tls/client_hello.hpp"

namespace tunnel::server {

struct first_record {
  std::optional<net::io_buffer> bytes;  // set while it holds what was read
  std::size_t size = 0;
  tls::alpn_offer offer = tls::alpn_offer::none;
  // The peer's end of input (or a read error) seen while reading: Asio would not report it
  // a second time (its edge-triggered reactor waits for a new event), so it is handed on.
  std::error_code ended;

  std::span<const std::byte> read() { return bytes ? bytes->span().first(size) : std::span<const std::byte>{}; }
};

// Reads into `r` until the first record is complete (at most one io_buffer), the peer stops
// sending or errs, or `limit` passes. Never throws for I/O errors. (`r` is the caller's:
// GCC 12 mishandled returning this struct from the coroutine.)
asio::awaitable<void> read_first_record(net::generic_socket& socket, first_record& r, std::chrono::milliseconds limit);

}  // namespace tunnel::server
