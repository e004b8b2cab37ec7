#include "net/transparent.hpp"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tunnel::net {
namespace {

// Older libc headers may lack the Linux constants; the values are the kernel's ABI.
#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

std::error_code set_transparent(int fd, int family) {
  const int one = 1;
  const int rc = family == AF_INET6 ? ::setsockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, &one, sizeof one)
                                    : ::setsockopt(fd, IPPROTO_IP, IP_TRANSPARENT, &one, sizeof one);
  return rc == 0 ? std::error_code{} : std::error_code(errno, std::system_category());
}

}  // namespace

std::error_code make_transparent(generic_socket& s, int family) {
  if (auto ec = set_transparent(s.native_handle(), family)) return ec;
  // Without this, bind() with port 0 reserves a port for the address alone; deferring to
  // connect() lets the same port serve many targets. Best effort (Linux 4.2+).
  const int one = 1;
  ::setsockopt(s.native_handle(), IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  return {};
}

std::optional<std::string> transparent_unavailable() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return std::string("cannot open a socket: ") + std::strerror(errno);
  const auto ec = set_transparent(fd, AF_INET);
  ::close(fd);
  if (!ec) return std::nullopt;
  if (ec == std::errc::operation_not_permitted)
    return "not permitted: setting IP_TRANSPARENT needs CAP_NET_ADMIN (run as root or grant the capability)";
  return "IP_TRANSPARENT unavailable: " + ec.message();
}

}  // namespace tunnel::net
