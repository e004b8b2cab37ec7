#pragma once
// Addresses as operators write them on the command line:
//   host:port      (host is a name or an IPv4 literal)
//   [v6]:port      (IPv6 literal in brackets)
//   unix:/path     (a Unix stream socket; absolute path)
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunnel::net {

struct address {
  enum class kind { inet, unix_socket };
  kind type = kind::inet;
  std::string host;    // inet: name or literal, without brackets
  std::uint16_t port = 0;
  std::string path;    // unix_socket: filesystem path

  bool is_unix() const { return type == kind::unix_socket; }
  // The canonical text form, which parse_address accepts again.
  std::string to_string() const;
};

// Parses one address. Returns nullopt and sets `error` to a short reason on failure.
// Ports must be 1..65535 (0 is accepted only when allow_port_zero, for listeners that
// let the kernel choose). Host names are checked for characters, not resolved.
std::optional<address> parse_address(std::string_view text, std::string& error,
                                     bool allow_port_zero = false);

}  // namespace tunnel::net
