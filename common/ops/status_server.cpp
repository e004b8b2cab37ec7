#include "ops/status_server.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include "net/timeout.hpp"
#include "ops/accept_backoff.hpp"
#include "ops/metrics.hpp"

namespace tunnel::ops {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
constexpr std::size_t max_request = 8192;
constexpr int max_active = 64;
// /readyz answers wait for the readiness checks (a dial of the next hop): at most this many
// at once, each for at most ready_limit, so that they can never hold every connection and
// lock /healthz out (a connection being answered is not pushed out).
constexpr int max_readiness_answers = max_active / 2;
constexpr auto ready_limit = std::chrono::seconds(3);  // (a next-hop probe dials for 2 s at most)

// One unit of a shared count for a scope. (The count is shared: a connection still open at
// exit has its coroutine destroyed with the event loop, after the server.)
struct held {
  std::shared_ptr<int> n;
  explicit held(std::shared_ptr<int> count) : n(std::move(count)) { ++*n; }
  ~held() { --*n; }
  held(const held&) = delete;
  held& operator=(const held&) = delete;
};

std::string response(int code, const char* status, const std::string& type, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(code) + " " + status + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

asio::awaitable<std::string> read_head(net::generic_socket& s) {
  std::string head;
  char buf[1024];
  std::size_t searched = 0;  // the end of the head cannot start before this (no re-scanning)
  while (head.find("\r\n\r\n", searched) == std::string::npos && head.size() < max_request) {
    searched = head.size() < 3 ? 0 : head.size() - 3;
    auto [ec, n] = co_await s.async_read_some(asio::buffer(buf), as_result);
    if (ec) co_return std::string();
    head.append(buf, n);
  }
  co_return head;
}

asio::awaitable<bool> write_reply(net::generic_socket& s, const std::string& reply) {
  auto [ec, n] = co_await asio::async_write(s, asio::buffer(reply), as_result);
  (void)n;
  co_return !ec;
}

}  // namespace

std::pair<std::string, std::string> parse_request_line(std::string_view head) {
  const auto eol = head.find("\r\n");
  if (eol == std::string_view::npos) return {};
  const std::string_view line = head.substr(0, eol);
  const auto sp1 = line.find(' ');
  const auto sp2 = line.rfind(' ');
  if (sp1 == std::string_view::npos || sp2 == sp1) return {};
  const auto version = line.substr(sp2 + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return {};
  std::string path(line.substr(sp1 + 1, sp2 - sp1 - 1));
  if (path.empty() || path.front() != '/') return {};
  if (auto q = path.find('?'); q != std::string::npos) path.resize(q);
  return {std::string(line.substr(0, sp1)), path};
}

status_server::status_server(asio::io_context& io, const net::address& at, readiness_check ready)
    : acceptor_(net::listen_on(io, at)), ready_(std::move(ready)) {}

void status_server::start() { asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached); }

asio::awaitable<void> status_server::accept_loop() {
  accept_backoff backoff(bound());
  for (;;) {
    auto [ec, socket] = co_await acceptor_.async_accept(as_result);
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) {
      co_await backoff.failed(ec);
      continue;
    }
    backoff.succeeded();
    // Full: make room by closing the oldest connection that has not sent its request yet;
    // with none (every one is being answered), the socket closes as it goes out of scope.
    if (*active_ >= max_active && !evict_oldest_reader()) continue;
    asio::co_spawn(acceptor_.get_executor(), serve(std::move(socket)), asio::detached);
  }
}

bool status_server::evict_oldest_reader() {
  while (!readers_.empty()) {
    auto r = readers_.front().lock();
    readers_.pop_front();
    if (!r) continue;
    std::error_code ignored;
    r->socket->close(ignored);  // its read ends at once; serve() then winds up
    return true;
  }
  return false;
}

asio::awaitable<void> status_server::serve(net::generic_socket socket) {
  const held serving(active_);
  using namespace std::chrono_literals;
  auto watched = std::make_shared<reader>(reader{&socket});
  readers_.push_back(watched);
  if (readers_.size() > 4 * max_active)  // forget the ones long gone
    std::erase_if(readers_, [](const std::weak_ptr<reader>& r) { return r.expired(); });
  // Probes send their request at once: 2 s is plenty, and bounds what an idle one holds.
  auto head = co_await net::with_timeout(read_head(socket), 2s);
  watched.reset();  // answering now: no longer the one to push out
  std::string reply;
  const auto [method, path] = head ? parse_request_line(*head) : std::pair<std::string, std::string>{};
  if (method.empty()) {
    reply = response(400, "Bad Request", "text/plain", "bad request\n");
  } else if (method != "GET" && method != "HEAD") {
    reply = response(405, "Method Not Allowed", "text/plain", "only GET\n");
  } else if (path == "/healthz") {
    reply = response(200, "OK", "text/plain", "ok\n");
  } else if (path == "/readyz") {
    std::string why;
    if (*answering_ready_ >= max_readiness_answers) {
      why = "too many readiness checks at once";
    } else if (ready_) {
      const held answering(answering_ready_);
      auto checked = co_await net::with_timeout(ready_(), ready_limit);
      why = checked ? *checked : "the readiness checks took too long";
    }
    reply = why.empty() ? response(200, "OK", "text/plain", "ready\n")
                        : response(503, "Service Unavailable", "text/plain", "not ready: " + why + "\n");
  } else if (path == "/metrics") {
    reply = response(200, "OK", "text/plain; version=0.0.4; charset=utf-8", metrics::get().render());
  } else {
    reply = response(404, "Not Found", "text/plain", "not found\n");
  }
  if (method == "HEAD") reply.resize(reply.find("\r\n\r\n") + 4);
  co_await net::with_timeout(write_reply(socket, reply), 5s);
  std::error_code ignored;
  socket.shutdown(net::generic_socket::shutdown_both, ignored);
  socket.close(ignored);
}

}  // namespace tunnel::ops
