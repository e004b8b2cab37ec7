#include "net/listener.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <asio/ip/tcp.hpp>
#include <stdexcept>

#include "net/endpoint.hpp"

namespace tunnel::net {
namespace {

generic_endpoint resolve_listen(asio::io_context& io, const address& at) {
  if (at.is_unix()) return unix_endpoint(at.path);
  asio::ip::tcp::resolver resolver(io);
  std::error_code ec;
  auto results = resolver.resolve(at.host, std::to_string(at.port),
                                  asio::ip::resolver_base::passive |
                                      asio::ip::resolver_base::numeric_service,
                                  ec);
  if (ec || results.empty())
    throw std::runtime_error("cannot resolve listen address " + at.to_string() + ": " +
                             (ec ? ec.message() : "no addresses"));
  return to_generic(results.begin()->endpoint());
}

void remove_stale_unix_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode))
    throw std::runtime_error("listen path " + path + " exists and is not a socket");
  ::unlink(path.c_str());
}

}  // namespace

generic_acceptor listen_on(asio::io_context& io, const address& at) {
  const generic_endpoint ep = resolve_listen(io, at);
  if (at.is_unix()) remove_stale_unix_socket(at.path);
  generic_acceptor acceptor(io);
  std::error_code ec;
  acceptor.open(ep.protocol(), ec);
  if (!ec && !at.is_unix()) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(ep, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + at.to_string() + ": " + ec.message());
  return acceptor;
}

std::string bound_address(const generic_acceptor& acceptor) {
  std::error_code ec;
  const auto ep = acceptor.local_endpoint(ec);
  return ec ? std::string("unknown") : describe(ep);
}

}  // namespace tunnel::net
