#include "net/address.hpp"

#include <asio/ip/address.hpp>
#include <charconv>

namespace tunnel::net {
namespace {

// sun_path is 108 bytes on Linux including the terminating NUL.
constexpr std::size_t max_unix_path = 107;

bool valid_host_name(std::string_view host) {
  if (host.empty() || host.size() > 253) return false;
  for (char c : host) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '.' || c == '_';
    if (!ok) return false;
  }
  return true;
}

std::optional<std::uint16_t> parse_port(std::string_view text, bool allow_zero) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  if (value > 65535 || (value == 0 && !allow_zero)) return std::nullopt;
  return static_cast<std::uint16_t>(value);
}

}  // namespace

std::string address::to_string() const {
  if (is_unix()) return "unix:" + path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::optional<address> parse_address(std::string_view text, std::string& error,
                                     bool allow_port_zero) {
  address out;
  if (text.starts_with("unix:")) {
    out.type = address::kind::unix_socket;
    out.path = std::string(text.substr(5));
    if (out.path.empty() || out.path.front() != '/') {
      error = "unix socket path must be absolute";
      return std::nullopt;
    }
    if (out.path.size() > max_unix_path) {
      error = "unix socket path longer than 107 bytes";
      return std::nullopt;
    }
    if (out.path.find('\0') != std::string::npos) {
      error = "unix socket path contains NUL";
      return std::nullopt;
    }
    return out;
  }
  std::string_view host, port;
  if (text.starts_with("[")) {
    const auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      error = "expected [v6-address]:port";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    std::error_code ec;
    const auto ip = asio::ip::make_address_v6(std::string(host), ec);
    if (ec) {
      error = "not an IPv6 address in brackets";
      return std::nullopt;
    }
    out.host = ip.to_string();
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      error = "expected host:port, [v6]:port or unix:/path";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      error = "IPv6 addresses must be written in brackets: [v6]:port";
      return std::nullopt;
    }
    if (!valid_host_name(host)) {
      error = "invalid host name";
      return std::nullopt;
    }
    out.host = std::string(host);
  }
  const auto p = parse_port(port, allow_port_zero);
  if (!p) {
    error = "invalid port (1-65535)";
    return std::nullopt;
  }
  out.port = *p;
  return out;
}

}  // namespace tunnel::net
