// listen_on: accepted TCP connections come with TCP_NODELAY already set, inherited from the
// listening socket (no setsockopt per connection).
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <asio/io_context.hpp>
#include <string>

#include "net/listener.hpp"

using namespace tunnel;

namespace {
int nodelay_of(int fd) {
  int value = -1;
  socklen_t length = sizeof value;
  REQUIRE(::getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &value, &length) == 0);
  return value;
}

void check_accepted_nodelay(const std::string& host) {
  asio::io_context io;
  std::string error;
  const auto address = net::parse_address(host + ":0", error, true);
  REQUIRE(address);
  auto acceptor = net::listen_on(io, *address);
  const auto at = acceptor.local_endpoint();
  asio::generic::stream_protocol::socket client(io, at.protocol());
  client.connect(at);
  auto accepted = acceptor.accept();
  CHECK(nodelay_of(accepted.native_handle()) == 1);
  CHECK(nodelay_of(client.native_handle()) == 0);  // a socket we did not set stays as it was
}
}  // namespace

TEST_CASE("listen_on: connections accepted over IPv4 and IPv6 have TCP_NODELAY") {
  check_accepted_nodelay("127.0.0.1");
  check_accepted_nodelay("[::1]");
}
