#include "target_leg.hpp"

#include <asio/experimental/as_tuple.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "net/dial.hpp"
#include "net/proxy_endpoint.hpp"
#include "net/timeout.hpp"
#include "ops/log.hpp"
#include "tls/handshake.hpp"
#include "proxy/header.hpp"

namespace tunnel::server {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);

// A free coroutine, not a capturing coroutine lambda: GCC 12 mishandles the latter.
asio::awaitable<std::error_code> write_header(net::generic_socket& s, std::vector<std::byte> header) {
  co_await asio::this_coro::throw_if_cancelled(false);
  auto [ec, n] = co_await asio::async_write(s, asio::buffer(header.data(), header.size()), as_result);
  (void)n;
  co_return ec;
}

// --transparent: from the client's IP with port 0. Reusing the client's own port would let
// a new connection collide with an earlier one still in TIME_WAIT towards the same target
// (clients reuse ports quickly); the target sees the client's address, which is what
// address-based access rules and logs look at.
asio::awaitable<net::dial_result> dial_transparent(const config::service& svc, const proxy::ip_endpoint& client) {
  proxy::ip_endpoint source = client;
  source.port = 0;
  co_return co_await net::dial_from(svc.target, net::to_generic(source), svc.limits.connect);
}

}  // namespace

std::optional<proxy::ip_endpoint> client_from_origin(const std::string& origin,
                                                     const std::optional<proxy::ip_endpoint>& tunnel_in) {
  auto e = proxy::parse_ip_endpoint(origin);
  if (!e) return std::nullopt;
  // A client on tunnel-in's own host (loopback) or link (link-local): that address means
  // another host here, and a target that trusts local addresses would take the client for
  // one of its own. It is named by tunnel-in's address instead, as raw mode names every client.
  if (!proxy::meaningful_elsewhere(*e)) return tunnel_in;
  return proxy::unmapped(*e);
}

std::optional<proxy::ip_endpoint> accepted_on(const net::generic_socket& accepted) {
  std::error_code ec;
  const auto local = accepted.local_endpoint(ec);
  if (ec) return std::nullopt;
  return net::to_ip_endpoint(local);
}

client_addresses addresses_of(const net::accepted& conn) {
  return client_addresses{net::to_ip_endpoint(conn.peer), accepted_on(conn.socket)};
}

asio::awaitable<target_connection> open_target(const config::service& svc, const client_addresses& from) {
  const auto ex = co_await asio::this_coro::executor;
  target_connection out{false, {}, net::generic_socket(ex)};
  net::dial_result dialed{{}, net::generic_socket(ex)};
  if (!svc.plain.transparent) {
    dialed = co_await net::dial(svc.target, svc.limits.connect);
  } else if (!from.client) {
    out.error = "--transparent: the client's address is not an IP address";
    co_return out;
  } else if (!proxy::usable_as_source(*from.client)) {
    // bind() would take an unspecified one as "any of ours": never our own address.
    out.error = "--transparent: the client's address cannot be a source (unspecified, multicast or broadcast)";
    co_return out;
  } else {
    dialed = co_await dial_transparent(svc, *from.client);
    if (dialed.ec == asio::error::address_family_not_supported)
      out.error = "--transparent: the target has no address of the client's family";
  }
  if (dialed.ec) {
    if (out.error.empty()) out.error = dialed.reason();
    co_return out;
  }
  out.socket = std::move(dialed.socket);
  if (svc.plain.send_proxy) {
    std::optional<proxy::addresses> named;
    if (from.client && from.accepted_on) named = proxy::addresses{*from.client, *from.accepted_on};
    auto written = co_await net::with_timeout(write_header(out.socket, proxy::encode(*svc.plain.send_proxy, named)),
                                              svc.limits.connect);
    if (!written || *written) {
      out.error = "sending the PROXY header: " + (written ? written->message() : std::string("timeout"));
      std::error_code ignored;
      out.socket.close(ignored);
      co_return out;
    }
  }
  out.ok = true;
  co_return out;
}

asio::awaitable<std::string> handshake_target(tls::tls_stream& target, const config::service& svc) {
  const std::string why = co_await tls::bridge_handshake(target, svc.limits.handshake, "timeout");
  if (why.empty()) {
    ops::debug("target TLS up")
        .kv("target", svc.target.to_string())
        .kv("tls", target.tls().version())
        .kv("alpn", target.tls().alpn().empty() ? std::string("(none)") : target.tls().alpn());
    co_return std::string();
  }
  ops::warn("target TLS handshake failed").kv("service", svc.name).kv("target", svc.target.to_string()).kv("reason", why);
  co_return "target TLS handshake failed: " + why;
}

}  // namespace tunnel::server
