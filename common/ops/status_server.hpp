#pragma once
// A small HTTP/1.1 endpoint for operators and orchestrators:
//   GET /healthz  200 "ok" while the process runs
//   GET /readyz   200 "ready" or 503 with the reason (listeners, credentials, next hop)
//   GET /metrics  Prometheus text exposition (ops::metrics)
// Requests are bounded (8 KiB, 2 s to send the request, 5 s to take the reply, 64 at once);
// anything else gets 404/405/400. When 64 are open, a new connection pushes out the oldest
// one still sending its request: idle connections cannot lock the probes out. /readyz
// waits for its checks 3 s at most, 32 such answers at once (more get 503 at once), so
// readiness requests cannot lock /healthz out either.
#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "net/address.hpp"
#include "net/endpoint.hpp"
#include "net/listener.hpp"

namespace tunnel::ops {

// Returns "" when ready, otherwise a one-line reason.
using readiness_check = std::function<asio::awaitable<std::string>()>;

class status_server {
 public:
  // Binds at once (throws std::runtime_error with a reason, like net::listen_on).
  status_server(asio::io_context& io, const net::address& at, readiness_check ready);
  void start();
  std::string bound() const { return net::bound_address(acceptor_); }

 private:
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> serve(net::generic_socket socket);
  // Closes the oldest connection still reading its request head; false when there is none.
  bool evict_oldest_reader();

  // A connection while it reads its request head (serve() owns it; the list only watches).
  struct reader {
    net::generic_socket* socket;
  };

  net::generic_acceptor acceptor_;
  readiness_check ready_;
  std::shared_ptr<int> active_ = std::make_shared<int>(0);  // connections being served
  std::shared_ptr<int> answering_ready_ = std::make_shared<int>(0);  // /readyz waiting for its checks
  std::deque<std::weak_ptr<reader>> readers_;  // oldest first; gone ones are skipped
};

// Parses the request line of an HTTP request head; returns {method, path} or empty
// strings when it is not a well-formed HTTP/1.x request line. Exposed for tests.
std::pair<std::string, std::string> parse_request_line(std::string_view head);

}  // namespace tunnel::ops
