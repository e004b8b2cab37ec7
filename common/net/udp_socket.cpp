#include "net/udp_socket.hpp"

#include <asio/buffer.hpp>
#include <asio/error.hpp>
#include <cerrno>
#include <stdexcept>
#include <vector>

#include "net/cancelled.hpp"
#include "net/lookup.hpp"
#include "net/timeout.hpp"

namespace tunnel::net {
namespace {

// Kernel socket buffers: the kernel caps these at net.core.{r,w}mem_max; asking for more
// is harmless and lets a tuned host absorb bursts instead of dropping them.
constexpr int socket_buffer_bytes = 4 * 1024 * 1024;

void tune(udp::socket& s) {
  std::error_code ignored;
  s.set_option(asio::socket_base::receive_buffer_size(socket_buffer_bytes), ignored);
  s.set_option(asio::socket_base::send_buffer_size(socket_buffer_bytes), ignored);
  // Synchronous sends then fail with would_block instead of stalling every flow on the
  // thread; asynchronous receives are unaffected.
  s.non_blocking(true, ignored);
}

}  // namespace

udp::endpoint resolve_udp(asio::io_context& io, const address& at) {
  if (at.is_unix()) throw std::runtime_error("UDP mode needs host:port, not " + at.to_string());
  udp::resolver resolver(io);
  std::error_code ec;
  const auto flags = asio::ip::resolver_base::numeric_service | asio::ip::resolver_base::passive;
  auto results = resolver.resolve(at.host, std::to_string(at.port), flags, ec);
  if (ec || results.empty())
    throw std::runtime_error("cannot resolve " + at.to_string() + ": " + (ec ? ec.message() : "no addresses"));
  return results.begin()->endpoint();
}

udp::socket bind_udp(asio::io_context& io, const address& at) {
  udp::socket s(io);
  if (const auto ec = bind_udp(s, resolve_udp(io, at)))
    throw std::runtime_error("cannot listen on " + at.to_string() + " (udp): " + ec.message());
  return s;
}

std::error_code bind_udp(udp::socket& s, const udp::endpoint& at) {
  std::error_code ec;
  s.open(at.protocol(), ec);
  if (!ec) s.bind(at, ec);
  if (ec) {
    std::error_code ignored;
    s.close(ignored);
    return ec;
  }
  tune(s);
  return ec;
}

std::error_code connect_udp(udp::socket& s, const udp::endpoint& to) {
  std::error_code ec;
  s.open(to.protocol(), ec);
  if (!ec) s.connect(to, ec);
  if (!ec) tune(s);
  return ec;
}

std::optional<udp::endpoint> literal_endpoint(const address& to) {
  std::error_code not_literal;
  const auto a = asio::ip::make_address(to.host, not_literal);
  if (not_literal) return std::nullopt;
  return udp::endpoint(a, to.port);
}

asio::awaitable<std::error_code> connect_udp(udp::socket& s, const address& to, std::chrono::milliseconds limit,
                                             udp::endpoint& reached) {
  std::vector<asio::ip::address> found;
  const auto looked_up = co_await with_timeout(look_up(to.host, found), limit);
  if (!looked_up) co_return asio::error::timed_out;
  if (*looked_up) co_return *looked_up;
  // An answer that came as the caller was cancelled (its flow ended) opens nothing.
  if (is_cancelled(co_await asio::this_coro::cancellation_state)) co_return asio::error::operation_aborted;
  reached = udp::endpoint(found.front(), to.port);  // (look_up answers at least one, or an error)
  co_return connect_udp(s, reached);
}

std::string connect_udp_error(const std::error_code& ec) {
  return ec == asio::error::timed_out ? "name lookup timeout" : ec.message();
}

bool is_icmp_report(const std::error_code& ec) {
  // (Asio reports socket errors in its own system category, not std::system_category.)
  if (ec.category() != asio::error::get_system_category() && ec.category() != std::system_category()) return false;
  switch (ec.value()) {  // what Linux makes of ICMP and ICMPv6 errors (icmp_err_convert, icmpv6_err_convert)
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case EHOSTDOWN:
    case ENONET:
    case ENOPROTOOPT:
    case EMSGSIZE:
    case EOPNOTSUPP:
    case EACCES:
    case EPROTO:
      return true;
    default:
      return false;
  }
}

std::string endpoint_key(const udp::endpoint& ep) {
  std::string key;
  const auto addr = ep.address();
  if (addr.is_v4()) {
    key.push_back('4');
    const auto b = addr.to_v4().to_bytes();
    key.append(b.begin(), b.end());
  } else {
    key.push_back('6');
    const auto b = addr.to_v6().to_bytes();
    key.append(b.begin(), b.end());
  }
  key.push_back(static_cast<char>(ep.port() >> 8));
  key.push_back(static_cast<char>(ep.port() & 0xff));
  return key;
}

std::string describe(const udp::endpoint& ep) {
  const auto addr = ep.address();
  const std::string host = addr.to_string();
  return addr.is_v6() ? "[" + host + "]:" + std::to_string(ep.port()) : host + ":" + std::to_string(ep.port());
}

std::error_code send_datagram(udp::socket& s, std::span<const unsigned char> data) {
  std::error_code ec;
  s.send(asio::buffer(data.data(), data.size()), 0, ec);
  return ec;
}

std::error_code send_datagram(udp::socket& s, std::span<const unsigned char> data, const udp::endpoint& to) {
  std::error_code ec;
  s.send_to(asio::buffer(data.data(), data.size()), to, 0, ec);
  return ec;
}

}  // namespace tunnel::net
