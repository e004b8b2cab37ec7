#include <doctest/doctest.h>

#include <algorithm>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <string>
#include <vector>

#include "net/lookup.hpp"

// (The silent-name-server cases, a lookup given up on at the connect timeout and one name's
// lookup not queued behind another's, are end-to-end: test_faults.py, with a name server
// of the test's own.)

namespace {

struct outcome {
  std::error_code ec;
  std::vector<asio::ip::address> found;
  bool done = false;
};

asio::awaitable<void> look_up_into(std::string host, outcome& o) {
  o.ec = co_await tunnel::net::look_up(host, o.found);
  o.done = true;
}

}  // namespace

TEST_CASE("look_up: many waiters at once for one name (from /etc/hosts) all get its addresses") {
  asio::io_context io(1);
  std::vector<outcome> outcomes(20);
  for (auto& o : outcomes) asio::co_spawn(io, look_up_into("localhost", o), asio::detached);
  io.run();
  for (const auto& o : outcomes) {
    REQUIRE(o.done);
    CHECK_FALSE(o.ec);
    CHECK(std::find(o.found.begin(), o.found.end(), asio::ip::make_address("127.0.0.1")) != o.found.end());
    for (const auto& a : o.found)  // each address once
      CHECK(std::count(o.found.begin(), o.found.end(), a) == 1);
  }
}
