// plain_stream over a Unix socket pair: reads and writes made directly when the socket can
// take them at once (net/immediate_io.hpp), and the asynchronous path when it cannot — a
// write larger than the socket buffer, a read before anything arrived.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <cstddef>
#include <vector>

#include "net/immediate_io.hpp"
#include "net/plain_stream.hpp"

using namespace tunnel;

namespace {

struct socket_pair {
  int fds[2] = {-1, -1};  // before the streams: open() fills it
  asio::io_context io;
  net::plain_stream a{open(0)}, b{open(1)};

  net::generic_socket open(int which) {
    if (fds[0] < 0) REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    return net::generic_socket(io, asio::generic::stream_protocol(AF_UNIX, SOCK_STREAM), fds[which]);
  }
};

std::vector<std::byte> pattern(std::size_t n) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((i * 131 + i / 7) & 0xff);
  return v;
}

// Free coroutines (GCC 12 mishandles capturing coroutine lambdas).
asio::awaitable<void> write_all(net::plain_stream& s, const std::vector<std::byte>& data, std::error_code& ec, bool& done) {
  ec = co_await s.write_all(data);
  done = true;
}

asio::awaitable<void> read_all(net::plain_stream& s, std::vector<std::byte>& got, std::size_t want) {
  std::vector<std::byte> buffer(65536);
  while (got.size() < want) {
    if ((co_await s.wait_readable()).ec) co_return;
    const auto r = co_await s.read_some(buffer);
    if (r.ec) co_return;
    got.insert(got.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(r.bytes));
  }
}

}  // namespace

TEST_CASE("read_now: would_block before data, the bytes after") {
  socket_pair p;
  std::byte buf[16];
  std::error_code ec;
  CHECK(net::read_now(p.a.socket(), asio::buffer(buf), ec) == 0);
  CHECK(net::would_block(ec));
  const char msg[] = "ping";
  REQUIRE(::send(p.fds[1], msg, 4, 0) == 4);
  ec = {};
  CHECK(net::read_now(p.a.socket(), asio::buffer(buf), ec) == 4);
  CHECK(!ec);
}

TEST_CASE("write_now takes what fits; write_all sends the rest asynchronously, bytes intact") {
  socket_pair p;
  const int small = 4096;
  REQUIRE(::setsockopt(p.fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small) == 0);
  const auto data = pattern(4 << 20);  // far more than the socket buffers hold
  std::error_code ec;
  const std::size_t first = net::write_now(p.a.socket(), asio::buffer(data), ec);
  CHECK(net::would_block(ec));
  CHECK(first > 0);
  CHECK(first < data.size());
  // Read what went out directly, then relay the whole buffer through write_all.
  std::vector<std::byte> got;
  asio::co_spawn(p.io, read_all(p.b, got, first + data.size()), asio::detached);
  bool done = false;
  std::error_code wec;
  asio::co_spawn(p.io, write_all(p.a, data, wec, done), asio::detached);
  p.io.run();
  CHECK(done);
  CHECK(!wec);
  REQUIRE(got.size() == first + data.size());
  CHECK(std::equal(got.begin(), got.begin() + static_cast<std::ptrdiff_t>(first), data.begin()));
  CHECK(std::equal(got.begin() + static_cast<std::ptrdiff_t>(first), got.end(), data.begin()));
}

TEST_CASE("plain_stream: end of input after the data, read directly after a wait") {
  socket_pair p;
  const char msg[] = "last words";
  REQUIRE(::send(p.fds[1], msg, 10, 0) == 10);
  REQUIRE(::shutdown(p.fds[1], SHUT_WR) == 0);
  std::vector<std::byte> got;
  asio::co_spawn(p.io, read_all(p.a, got, 1 << 20), asio::detached);  // reads until EOF ends it
  p.io.run();
  CHECK(got.size() == 10);
}

TEST_CASE("read_now: the end of input is eof; write_now to a closed peer fails without SIGPIPE") {
  socket_pair p;
  REQUIRE(::shutdown(p.fds[1], SHUT_WR) == 0);
  std::byte buf[16];
  std::error_code ec;
  CHECK(net::read_now(p.a.socket(), asio::buffer(buf), ec) == 0);
  CHECK(ec == asio::error::eof);
  p.b.close();  // the peer is gone: a write must fail with EPIPE, not kill the process
  const char msg[] = "anyone?";
  CHECK(net::write_now(p.a.socket(), asio::buffer(msg, 7), ec) == 0);
  CHECK(ec == asio::error::broken_pipe);
}

namespace {
asio::awaitable<void> read_to_end_then_shut(net::plain_stream& s, std::vector<std::byte>& got, std::error_code& ec) {
  std::vector<std::byte> buffer(64);
  for (;;) {
    const auto r = co_await s.read_some(buffer);
    if (r.ec) break;
    got.insert(got.end(), buffer.begin(), buffer.begin() + static_cast<std::ptrdiff_t>(r.bytes));
  }
  ec = co_await s.shutdown_send();
}

asio::awaitable<void> shut(net::plain_stream& s, std::error_code& ec) { ec = co_await s.shutdown_send(); }
}  // namespace

TEST_CASE("plain_stream: shutdown_send after the end of input closes; the peer reads all, then EOF") {
  socket_pair p;
  const char reply[] = "reply";
  REQUIRE(::send(p.fds[0], reply, 5, 0) == 5);  // queued for the peer before our close
  REQUIRE(::shutdown(p.fds[1], SHUT_WR) == 0);   // the peer is done sending
  std::vector<std::byte> got;
  std::error_code ec;
  asio::co_spawn(p.io, read_to_end_then_shut(p.a, got, ec), asio::detached);
  p.io.run();
  CHECK(!ec);
  CHECK(got.empty());
  CHECK(!p.a.socket().is_open());  // one close() did the shutdown's work
  char buf[16];
  CHECK(::recv(p.fds[1], buf, sizeof buf, 0) == 5);
  CHECK(::recv(p.fds[1], buf, sizeof buf, 0) == 0);  // FIN, no reset
}

TEST_CASE("plain_stream: shutdown_send with input still open only half-closes") {
  socket_pair p;
  std::error_code ec;
  asio::co_spawn(p.io, shut(p.a, ec), asio::detached);
  p.io.run();
  CHECK(!ec);
  CHECK(p.a.socket().is_open());
  char buf[16];
  CHECK(::recv(p.fds[1], buf, sizeof buf, 0) == 0);  // the peer sees our end of input
  const char late[] = "late";
  REQUIRE(::send(p.fds[1], late, 4, 0) == 4);  // and can still send to us
  std::error_code rec;
  CHECK(net::read_now(p.a.socket(), asio::buffer(buf), rec) == 4);
  CHECK(!rec);
}

TEST_CASE("plain_stream over loopback TCP: the close after the end of input is a FIN, not a reset") {
  const int listener = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(listener >= 0);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t size = sizeof at;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
  REQUIRE(::listen(listener, 1) == 0);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&at), &size) == 0);
  const int client = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(::connect(client, reinterpret_cast<sockaddr*>(&at), sizeof at) == 0);
  const int served = ::accept(listener, nullptr, nullptr);
  REQUIRE(served >= 0);
  ::close(listener);

  asio::io_context io;
  net::plain_stream s(net::generic_socket(io, asio::generic::stream_protocol(AF_INET, IPPROTO_TCP), served));
  const char reply[] = "reply";
  REQUIRE(::send(served, reply, 5, 0) == 5);
  REQUIRE(::shutdown(client, SHUT_WR) == 0);
  std::vector<std::byte> got;
  std::error_code ec;
  asio::co_spawn(io, read_to_end_then_shut(s, got, ec), asio::detached);
  io.run();
  CHECK(!ec);
  CHECK(!s.socket().is_open());
  char buf[16];
  CHECK(::recv(client, buf, sizeof buf, 0) == 5);
  CHECK(::recv(client, buf, sizeof buf, 0) == 0);  // an orderly end: a reset would be -1, ECONNRESET
  ::close(client);
}
