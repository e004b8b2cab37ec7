#pragma once
// Asio 1.22: a coroutine that turned throw_if_cancelled off (so that a nested co_await does
// not throw once it is cancelled) must look at its cancellation state itself; this is that
// look: `if (net::is_cancelled(co_await asio::this_coro::cancellation_state)) ...`.
#include <asio/cancellation_state.hpp>

namespace tunnel::net {

inline bool is_cancelled(const asio::cancellation_state& cs) { return cs.cancelled() != asio::cancellation_type::none; }

}  // namespace tunnel::net
