#pragma once
// Name lookups for a next hop named by host name, off the event loop and abandonable.
//
// getaddrinfo blocks, and Asio's resolver runs every lookup of an io_context one after
// another on one private thread and cannot give one up: with a slow or silent DNS server,
// connections waited far past --connect-timeout, and a lookup of a healthy name queued
// behind one of a silent name. Here a name being looked up has one thread of its own, which
// every connection wanting that name meanwhile shares (so the threads are bounded by the
// names the configuration holds), and a connection stops waiting the moment it is cancelled
// (its timeout), the lookup finishing without it. Answers are not cached: each lookup after
// the last one ended asks again, as the system's resolver configuration says.
#include <asio/awaitable.hpp>
#include <asio/ip/address.hpp>
#include <string>
#include <system_error>
#include <vector>

namespace tunnel::net {

// The addresses of `host`, in getaddrinfo's order, each once. An IP literal is its own
// answer, at once: no thread, no getaddrinfo. Errors as Asio's resolver reports them (host_not_found, host_not_found_try_again,
// ...); operation_aborted when the awaiting coroutine was cancelled before the answer came.
asio::awaitable<std::error_code> look_up(const std::string& host, std::vector<asio::ip::address>& out);

}  // namespace tunnel::net
