#include "net/dial.hpp"

#include "net/cancelled.hpp"
#include "net/immediate_io.hpp"
#include "net/lookup.hpp"
#include "net/timeout.hpp"
#include "net/transparent.hpp"

#include <asio/connect.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <optional>
#include <sys/socket.h>
#include <vector>

namespace tunnel::net {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);

asio::awaitable<dial_result> connect_unix(const address& to) {
  auto ex = co_await asio::this_coro::executor;
  dial_result out{{}, generic_socket(ex)};
  auto [ec] = co_await out.socket.async_connect(unix_endpoint(to.path), as_result);
  out.ec = ec;
  co_return out;
}

// Opens `s` for `to`, non-blocking for connect_soon. (Set through Asio, which then knows it
// and sets nothing more; a descriptor made non-blocking elsewhere and assigned would cost an
// epoll_ctl at close instead.)
std::error_code open_for(generic_socket& s, const generic_endpoint& to) {
  std::error_code ec;
  s.open(to.protocol(), ec);
  if (!ec) s.native_non_blocking(true, ec);
  return ec;
}

// Opens `s` for `to`, transparent and bound to `source` (port 0: the kernel picks one).
std::error_code prepare_transparent(generic_socket& s, const generic_endpoint& to, const generic_endpoint& source) {
  std::error_code ec = open_for(s, to);
  if (!ec) ec = make_transparent(s, to.data()->sa_family);
  if (!ec) s.bind(source, ec);
  return ec;
}

// Starts connecting `s` (opened by open_for) to `to` and reports what connect() already
// knows: settled (connected, or the failure itself) or still under way. A connection the
// kernel has completed by the time connect() returns (on loopback, always) is taken at
// once; Asio's async_connect would send every one through the event loop first (an
// epoll_ctl and one more pass per connection, which a legacy client opening a connection
// per request pays each time).
struct connect_state {
  bool settled = false;
  std::error_code ec;
};

connect_state connect_now(generic_socket& s, const generic_endpoint& to) {
  const auto call = [&] { return ::connect(s.native_handle(), to.data(), static_cast<socklen_t>(to.size())); };
  if (call() == 0) return {true, {}};
  if (errno != EINPROGRESS && errno != EINTR) return {true, last_socket_error()};
  // Calling connect() again is how a non-blocking connect tells its outcome in one system
  // call: 0 once established, the failure itself (ECONNREFUSED), or EALREADY while the
  // handshake is still under way.
  if (call() == 0 || errno == EISCONN) return {true, {}};
  if (errno != EALREADY && errno != EINPROGRESS && errno != EINTR) return {true, last_socket_error()};
  return {false, {}};
}

// The outcome of a connect connect_now left under way.
asio::awaitable<std::error_code> finish_connect(generic_socket& s) {
  auto [ec] = co_await s.async_wait(generic_socket::wait_write, as_result);
  if (ec) co_return ec;
  int error = 0;
  socklen_t length = sizeof error;
  if (::getsockopt(s.native_handle(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) co_return last_socket_error();
  co_return std::error_code(error, asio::error::get_system_category());
}

asio::awaitable<std::error_code> connect_soon(generic_socket& s, const generic_endpoint& to) {
  const connect_state state = connect_now(s, to);
  if (state.settled) co_return state.ec;
  co_return co_await finish_connect(s);
}

// The addresses to try for `to`, in order (an IP literal is its own answer: look_up makes
// no lookup for it).
asio::awaitable<std::error_code> addresses_of(const address& to, std::vector<generic_endpoint>& out) {
  std::vector<asio::ip::address> found;
  const std::error_code ec = co_await look_up(to.host, found);
  for (const auto& a : found) out.push_back(to_generic(asio::ip::tcp::endpoint(a, to.port)));
  co_return ec;
}

// `source`: nullptr for an ordinary connection, else the address to leave from.
// `looking_up`: true while the name lookup is under way.
asio::awaitable<dial_result> connect_inet(const address& to, const generic_endpoint* source, bool& looking_up) {
  auto ex = co_await asio::this_coro::executor;
  dial_result out{{}, generic_socket(ex)};
  std::vector<generic_endpoint> endpoints;
  looking_up = true;
  if ((out.ec = co_await addresses_of(to, endpoints))) co_return out;  // (a timeout leaves it true)
  looking_up = false;
  // A lookup that lost to the timeout is not acted on (a connect from here would not be
  // cancelled and could last minutes).
  if (is_cancelled(co_await asio::this_coro::cancellation_state)) {
    out.ec = asio::error::operation_aborted;
    co_return out;
  }
  out.ec = asio::error::host_not_found;
  if (source) out.ec = asio::error::address_family_not_supported;
  for (const auto& endpoint : endpoints) {
    std::error_code ignored;
    out.socket.close(ignored);
    if (source) {
      if (endpoint.data()->sa_family != source->data()->sa_family) continue;
      if ((out.ec = prepare_transparent(out.socket, endpoint, *source))) continue;
    } else if ((out.ec = open_for(out.socket, endpoint))) {
      continue;
    }
    const auto ec = co_await connect_soon(out.socket, endpoint);
    out.ec = ec;
    if (!ec) {
      set_low_latency(out.socket);
      break;
    }
    if (ec == asio::error::operation_aborted) break;  // the timeout: no next address
  }
  co_return out;
}

bool out_of_descriptors(const std::error_code& ec) {
  return ec.category() == asio::error::get_system_category() && (ec.value() == EMFILE || ec.value() == ENFILE);
}

// One attempt after another while the process or the system has no descriptor to spare
// (the caller's timeout ends the wait). `source`, `looking_up`: as for connect_inet; unused
// for unix.
asio::awaitable<dial_result> connect_patiently(const address& to, const generic_endpoint* source, bool& looking_up) {
  co_await asio::this_coro::throw_if_cancelled(false);  // the timeout's cancellation: looked at below
  const auto ex = co_await asio::this_coro::executor;
  asio::steady_timer pause(ex);
  for (;;) {
    // (No conditional operator around awaitables: GCC 12 destroys such a temporary twice.)
    std::optional<dial_result> r;
    if (to.is_unix()) r = co_await connect_unix(to);
    else r = co_await connect_inet(to, source, looking_up);
    if (!out_of_descriptors(r->ec)) co_return std::move(*r);
    pause.expires_after(std::chrono::milliseconds(100));
    co_await pause.async_wait(as_result);
    if (is_cancelled(co_await asio::this_coro::cancellation_state))
      co_return dial_result{asio::error::operation_aborted, generic_socket(ex)};
  }
}

// The common case, an IP-literal target, without the timeout's machinery (two more
// coroutines, a timer, a parallel group) when connect() settles at once, as on loopback.
// Nullopt: not that case, or no descriptor to spare (the patient path waits for one).
asio::awaitable<std::optional<dial_result>> dial_literal(const address& to, std::chrono::milliseconds timeout) {
  if (to.is_unix()) co_return std::nullopt;
  std::error_code ec;
  const auto literal = asio::ip::make_address(to.host, ec);
  if (ec) co_return std::nullopt;
  dial_result out{{}, generic_socket(co_await asio::this_coro::executor)};
  const auto endpoint = to_generic(asio::ip::tcp::endpoint(literal, to.port));
  if ((out.ec = open_for(out.socket, endpoint))) {
    if (out_of_descriptors(out.ec)) co_return std::nullopt;
    co_return out;
  }
  const connect_state state = connect_now(out.socket, endpoint);
  out.ec = state.ec;
  if (!state.settled) {
    auto outcome = co_await with_timeout(finish_connect(out.socket), timeout);
    out.ec = outcome ? *outcome : std::error_code(asio::error::timed_out);
  }
  std::error_code ignored;
  if (out.ec) out.socket.close(ignored);
  else set_low_latency(out.socket);
  co_return out;
}

// Both public dials past the literal shortcut: the attempts within the timeout.
asio::awaitable<dial_result> dial_within(const address& to, const generic_endpoint* source,
                                         std::chrono::milliseconds timeout) {
  bool looking_up = false;
  auto outcome = co_await with_timeout(connect_patiently(to, source, looking_up), timeout);
  if (outcome) co_return std::move(*outcome);
  dial_result out{asio::error::timed_out, generic_socket(co_await asio::this_coro::executor)};
  out.in_lookup = looking_up;
  co_return out;
}

}  // namespace

std::string dial_result::reason() const {
  if (ec != asio::error::timed_out) return ec.message();
  return in_lookup ? "name lookup timeout" : "connect timeout";
}

asio::awaitable<dial_result> dial(const address& to, std::chrono::milliseconds timeout) {
  std::optional<dial_result> direct = co_await dial_literal(to, timeout);
  if (direct) co_return std::move(*direct);
  co_return co_await dial_within(to, nullptr, timeout);
}

asio::awaitable<dial_result> dial_from(const address& to, const generic_endpoint& source,
                                       std::chrono::milliseconds timeout) {
  co_return co_await dial_within(to, &source, timeout);
}

}  // namespace tunnel::net
