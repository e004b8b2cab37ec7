#pragma once
// UDP sockets for both legs of UDP mode: binding, resolving, addressing flows by their
// source address, and sending without ever waiting (a datagram that cannot go now is lost,
// exactly as the network would lose it).
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/udp.hpp>
#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <system_error>

#include "net/address.hpp"

namespace tunnel::net {

using udp = asio::ip::udp;

// Largest UDP payload over IPv4; a receive buffer this large never truncates a datagram,
// so an oversized one is seen whole and can be counted rather than cut.
inline constexpr std::size_t max_udp_payload = 65507;

// Resolves `at`, an inet address to bind to (a name once, at start-up). Throws
// std::runtime_error with a one-line reason.
udp::endpoint resolve_udp(asio::io_context& io, const address& at);

// Opens a non-blocking UDP socket bound to `at`, with generous kernel buffers (bursts from
// many flows share one socket). Throws std::runtime_error with a one-line reason.
udp::socket bind_udp(asio::io_context& io, const address& at);
// The same for a resolved endpoint, returning the error instead of throwing.
std::error_code bind_udp(udp::socket& s, const udp::endpoint& at);

// Opens a non-blocking UDP socket connected to `to` (the kernel then filters replies from
// other sources and reports ICMP errors). Returns the error instead of throwing.
std::error_code connect_udp(udp::socket& s, const udp::endpoint& to);
// The endpoint of `to` when its host is an IP literal (nothing to look up), else nullopt.
std::optional<udp::endpoint> literal_endpoint(const address& to);
// The same as connect_udp above for `to` as configured: a name is looked up now (net::look_up: off the event
// loop, and again for every flow, so DNS changes are followed) and its first address
// taken, into `reached`. timed_out when the lookup outlasts `limit` (0: no limit);
// operation_aborted when the caller was cancelled.
asio::awaitable<std::error_code> connect_udp(udp::socket& s, const address& to, std::chrono::milliseconds limit,
                                             udp::endpoint& reached);
// What a failed connect_udp says in a log line ("name lookup timeout", as TCP's dial).
std::string connect_udp_error(const std::error_code& ec);

// Whether `ec`, from a connected UDP socket, reports an ICMP error about an earlier
// datagram (port or host unreachable, administratively prohibited, fragmentation needed,
// parameter problem, ...) rather than a fault of the socket. Anyone who can guess the
// addresses and ports can send one, so it ends nothing.
bool is_icmp_report(const std::error_code& ec);

// A compact, hashable key for an endpoint: family, address bytes, port. Also what DTLS
// cookies bind to (mbedtls_ssl_set_client_transport_id). Equal endpoints give equal keys.
std::string endpoint_key(const udp::endpoint& ep);

// "127.0.0.1:5000" / "[::1]:5000".
std::string describe(const udp::endpoint& ep);

// Sends one datagram now, on a connected socket (no `to`) or an unconnected one.
// Returns would_block when the socket buffer is full: the caller counts it as a drop.
std::error_code send_datagram(udp::socket& s, std::span<const unsigned char> data);
std::error_code send_datagram(udp::socket& s, std::span<const unsigned char> data, const udp::endpoint& to);

}  // namespace tunnel::net
