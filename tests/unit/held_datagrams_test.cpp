// The datagrams UDP flows hold while their handshakes run: bounded by count and bytes per
// flow and by bytes across a relay, and the relay's total follows every push, pop and clear.
#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "net/held_datagrams.hpp"

using tunnel::net::held_datagrams;

TEST_CASE("a flow holds at most its count and its bytes of datagrams") {
  auto total = std::make_shared<std::size_t>(0);
  const std::size_t& relay = *total;
  held_datagrams q(total);
  const std::vector<unsigned char> small(100, 1);
  for (std::size_t i = 0; i < held_datagrams::max_count; ++i) CHECK(q.push(small));
  CHECK_FALSE(q.push(small));  // the count
  CHECK(q.size() == held_datagrams::max_count);
  CHECK(relay == held_datagrams::max_count * small.size());
  q.clear();
  CHECK(relay == 0);
  // 65 KB datagrams (UDP's largest): the byte bound takes the second one already.
  const std::vector<unsigned char> big(65000, 2);
  CHECK(q.push(big));
  CHECK_FALSE(q.push(big));
  CHECK(q.pop() == big);
  CHECK(relay == 0);
}

TEST_CASE("all flows of a relay together hold at most the relay's bound") {
  auto total = std::make_shared<std::size_t>(0);
  const std::size_t& relay = *total;
  std::vector<std::unique_ptr<held_datagrams>> flows;
  const std::vector<unsigned char> d(60000, 3);
  std::size_t kept = 0;
  for (int i = 0; i < 200; ++i) {  // a burst from 200 source addresses
    flows.push_back(std::make_unique<held_datagrams>(total));
    if (flows.back()->push(d)) ++kept;
  }
  CHECK(kept == held_datagrams::max_relay_bytes / d.size());
  CHECK(relay <= held_datagrams::max_relay_bytes);
  flows.clear();  // flows that end give their share back
  CHECK(relay == 0);
}
