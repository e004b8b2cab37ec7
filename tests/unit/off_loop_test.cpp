#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <thread>

#include "net/off_loop.hpp"

namespace {

using namespace std::chrono_literals;

asio::awaitable<void> wait_for_work(std::function<void()> work, bool& ran, bool& returned) {
  ran = co_await tunnel::net::run_off_loop(std::move(work));
  returned = true;
}

}  // namespace

TEST_CASE("run_off_loop: the loop serves others while the work blocks, and resumes its caller after it") {
  asio::io_context io(1);
  std::promise<void> unblock;
  auto blocked = unblock.get_future().share();
  std::atomic<bool> work_done{false};
  bool ran = false, returned = false, served = false;
  std::function<void()> work = [blocked, &work_done] {
    blocked.wait();
    work_done = true;
  };
  asio::co_spawn(io, wait_for_work(std::move(work), ran, returned), asio::detached);
  // While the work blocks, a timer on the same loop fires; then the work is let go.
  asio::steady_timer timer(io, 20ms);
  timer.async_wait([&](std::error_code) {
    served = true;
    CHECK_FALSE(returned);
    unblock.set_value();
  });
  io.run();  // returns once the caller has resumed (nothing else is left)
  CHECK(served);
  CHECK(work_done);
  CHECK(ran);
  CHECK(returned);
}

TEST_CASE("run_off_loop: work that ends before the caller waits does not leave it waiting") {
  asio::io_context io(1);
  bool ran = false, returned = false;
  std::function<void()> work = [] {};
  asio::co_spawn(io, wait_for_work(std::move(work), ran, returned), asio::detached);
  io.run();
  CHECK(ran);
  CHECK(returned);
}
