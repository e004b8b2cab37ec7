#pragma once
// Outgoing connections on either leg: resolve (for names), connect, bounded by a timeout.
#include <asio/awaitable.hpp>
#include <chrono>
#include <string>
#include <system_error>

#include "net/address.hpp"
#include "net/endpoint.hpp"

namespace tunnel::net {

struct dial_result {
  std::error_code ec;        // asio::error::timed_out when the timeout passed
  generic_socket socket;     // connected on success; on failure closed
  bool in_lookup = false;    // the timeout passed while the name was being looked up

  // The failure for a log line: "name lookup timeout", "connect timeout" or ec's message.
  std::string reason() const;
};

// Connects to `to` on the current executor, trying each resolved address in turn, all
// within `timeout` (zero: no limit beyond the kernel's). Sets TCP_NODELAY on inet sockets.
// Out of descriptors (EMFILE, ENFILE), it tries again every 100 ms within `timeout` rather
// than failing: the connection being served was just accepted with a descriptor that
// another connection's end freed, and more come free the same way.
asio::awaitable<dial_result> dial(const address& to, std::chrono::milliseconds timeout);

// Like dial for an inet `to`, but the connection leaves from `source`, an address that need
// not be this host's (IP_TRANSPARENT, see net/transparent.hpp; the kernel picks the port
// when `source` has port 0). Only the addresses of `to` in source's family are tried;
// with none, ec is address_family_not_supported. Without the capability, ec is EPERM.
// Waits out a lack of descriptors as dial does.
asio::awaitable<dial_result> dial_from(const address& to, const generic_endpoint& source,
                                       std::chrono::milliseconds timeout);

}  // namespace tunnel::net
