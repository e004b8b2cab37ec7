#include "net/proxy_endpoint.hpp"

#include <netinet/in.h>

#include <cstring>

namespace tunnel::net {

std::optional<proxy::ip_endpoint> to_ip_endpoint(const generic_endpoint& ep) {
  const sockaddr* sa = ep.data();
  proxy::ip_endpoint out;
  if (sa->sa_family == AF_INET && ep.size() >= sizeof(sockaddr_in)) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    std::memcpy(out.ip.data(), &in->sin_addr, 4);
    out.port = ntohs(in->sin_port);
    return out;
  }
  if (sa->sa_family == AF_INET6 && ep.size() >= sizeof(sockaddr_in6)) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    out.v6 = true;
    std::memcpy(out.ip.data(), &in6->sin6_addr, 16);
    out.port = ntohs(in6->sin6_port);
    return proxy::unmapped(out);
  }
  return std::nullopt;
}

generic_endpoint to_generic(const proxy::ip_endpoint& e) {
  if (e.v6) {
    sockaddr_in6 in6{};
    in6.sin6_family = AF_INET6;
    std::memcpy(&in6.sin6_addr, e.ip.data(), 16);
    in6.sin6_port = htons(e.port);
    return generic_endpoint(&in6, sizeof in6, IPPROTO_TCP);
  }
  sockaddr_in in{};
  in.sin_family = AF_INET;
  std::memcpy(&in.sin_addr, e.ip.data(), 4);
  in.sin_port = htons(e.port);
  return generic_endpoint(&in, sizeof in, IPPROTO_TCP);
}

}  // namespace tunnel::net
