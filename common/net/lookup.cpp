#include "net/lookup.hpp"

#include "net/cancelled.hpp"
#include "net/off_loop.hpp"

#include <algorithm>
#include <asio/error.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <netdb.h>
#include <sys/socket.h>
#include <thread>

namespace tunnel::net {
namespace {

// More names than this being looked up at once (each a thread blocked in getaddrinfo) and
// a new one fails at once with host_not_found_try_again.
constexpr std::size_t max_lookups_in_flight = 64;

struct lookup_answer {
  std::error_code ec;
  std::vector<asio::ip::address> answers;
};

// One name being looked up, shared by every connection waiting for it.
struct lookup {
  struct waiter {
    std::uint64_t id;
    asio::any_io_executor executor;
    std::shared_ptr<wakeup_gate> gate;  // the executor's event loop's
    std::weak_ptr<asio::steady_timer> wake;
  };
  std::mutex m;
  bool done = false;
  std::error_code ec;
  std::vector<asio::ip::address> answers;
  std::vector<waiter> waiters;
  std::uint64_t next_id = 0;
};

// The names being looked up now. Never destroyed: a lookup thread may finish after main()
// has returned.
struct in_flight_table {
  std::mutex m;
  std::map<std::string, std::shared_ptr<lookup>> by_host;
};
in_flight_table& in_flight() {
  static auto* table = new in_flight_table;
  return *table;
}

std::error_code from_gai(int rc) {
  switch (rc) {
    case EAI_AGAIN: return asio::error::host_not_found_try_again;
    case EAI_FAIL: return asio::error::no_recovery;
    case EAI_FAMILY: return asio::error::address_family_not_supported;
    case EAI_MEMORY: return asio::error::no_memory;
    case EAI_SERVICE: return asio::error::service_not_found;
    case EAI_SOCKTYPE: return asio::error::socket_type_not_supported;
    case EAI_SYSTEM: return {errno, std::system_category()};
    default: return asio::error::host_not_found;  // EAI_NONAME, EAI_NODATA, EAI_ADDRFAMILY
  }
}

// The blocking part, on the lookup's own thread.
lookup_answer ask_resolver(const std::string& host) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;  // one entry per address (UDP callers want the same list)
  addrinfo* list = nullptr;
  const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &list);
  std::error_code ec = rc == 0 ? std::error_code{} : from_gai(rc);  // (at once: EAI_SYSTEM reads errno)
  std::vector<asio::ip::address> answers;
  for (const addrinfo* ai = rc == 0 ? list : nullptr; ai; ai = ai->ai_next) {
    asio::ip::address a;
    if (ai->ai_family == AF_INET) {
      const auto* sin = reinterpret_cast<const sockaddr_in*>(ai->ai_addr);
      asio::ip::address_v4::bytes_type b;
      std::memcpy(b.data(), &sin->sin_addr, b.size());
      a = asio::ip::address_v4(b);
    } else if (ai->ai_family == AF_INET6) {
      const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(ai->ai_addr);
      asio::ip::address_v6::bytes_type b;
      std::memcpy(b.data(), &sin6->sin6_addr, b.size());
      a = asio::ip::address_v6(b, sin6->sin6_scope_id);
    } else {
      continue;
    }
    if (std::find(answers.begin(), answers.end(), a) == answers.end()) answers.push_back(a);
  }
  if (list) ::freeaddrinfo(list);
  if (!ec && answers.empty()) ec = asio::error::host_not_found;
  return {ec, std::move(answers)};
}

// The whole of a lookup thread's work. Nothing may escape it (std::terminate).
void resolve(const std::string& host, lookup& l) noexcept {
  lookup_answer answer{asio::error::no_memory, {}};
  try {
    answer = ask_resolver(host);
  } catch (const std::exception&) {
  }
  {  // No longer in flight: a connection from now on asks again.
    auto& table = in_flight();
    std::lock_guard lk(table.m);
    table.by_host.erase(host);
  }
  std::lock_guard lk(l.m);
  l.done = true;
  l.ec = answer.ec;
  l.answers = std::move(answer.answers);
  // Each waiter's timer is cancelled on its own executor, where its coroutine runs; a
  // coroutine already gone took its entry out (waiter_entry's destructor, under l.m), and
  // an event loop being destroyed has closed its gate.
  for (auto& w : l.waiters) wake_waiter(*w.gate, w.executor, w.wake);  // (out of memory: it waits out its timeout)
  l.waiters.clear();
}

// The lookup of `host` under way, joined, or a new one started. Null when too many are
// under way or no thread could be made.
std::shared_ptr<lookup> join_or_start(const std::string& host) {
  auto& table = in_flight();
  std::lock_guard lk(table.m);
  if (auto it = table.by_host.find(host); it != table.by_host.end()) return it->second;
  if (table.by_host.size() >= max_lookups_in_flight) return nullptr;
  auto l = std::make_shared<lookup>();
  try {
    start_detached([host, l] { resolve(host, *l); });
  } catch (...) {  // no thread (std::system_error) or no memory for one
    return nullptr;
  }
  table.by_host.emplace(host, l);
  return l;
}

// A waiting coroutine's place on a lookup's list, for as long as its frame lives.
class waiter_entry {
 public:
  waiter_entry(lookup& l, asio::any_io_executor ex, const std::shared_ptr<asio::steady_timer>& wake) : l_(l) {
    auto gate = gate_of(ex);
    std::lock_guard lk(l_.m);
    if (l_.done) return;
    id_ = l_.next_id++;
    l_.waiters.push_back({id_, std::move(ex), std::move(gate), wake});
    listed_ = true;
  }
  ~waiter_entry() {
    if (!listed_) return;
    std::lock_guard lk(l_.m);
    std::erase_if(l_.waiters, [this](const lookup::waiter& w) { return w.id == id_; });
  }
  waiter_entry(const waiter_entry&) = delete;
  waiter_entry& operator=(const waiter_entry&) = delete;
  bool listed() const { return listed_; }

 private:
  lookup& l_;
  std::uint64_t id_ = 0;
  bool listed_ = false;
};

}  // namespace

asio::awaitable<std::error_code> look_up(const std::string& host, std::vector<asio::ip::address>& out) {
  std::error_code not_literal;
  if (const auto literal = asio::ip::make_address(host, not_literal); !not_literal) {
    out.push_back(literal);
    co_return std::error_code{};
  }
  const std::shared_ptr<lookup> l = join_or_start(host);
  if (!l) co_return asio::error::host_not_found_try_again;
  const auto ex = co_await asio::this_coro::executor;
  auto wake = std::make_shared<asio::steady_timer>(ex, asio::steady_timer::time_point::max());
  const waiter_entry entry(*l, ex, wake);
  // Ends when the answer's post cancels the timer, or when this coroutine is cancelled
  // (looked at first: a cancellation that came before the wait would not reach it).
  if (entry.listed() && !is_cancelled(co_await asio::this_coro::cancellation_state))
    co_await wake->async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  std::lock_guard lk(l->m);
  if (!l->done) co_return asio::error::operation_aborted;
  out.insert(out.end(), l->answers.begin(), l->answers.end());
  co_return l->ec;
}

}  // namespace tunnel::net
