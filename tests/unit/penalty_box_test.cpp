// penalty_box: sources whose failed handshakes cost too much CPU are kept out, longer at
// each repetition; ordinary failures never are; the table stays bounded.
#include <doctest/doctest.h>

#include <chrono>

#include "policy/penalty_box.hpp"

using tunnel::policy::penalty_box;
using namespace std::chrono_literals;

namespace {
penalty_box::source address(std::uint8_t last, std::uint8_t third = 0) {
  penalty_box::source s{};
  s[10] = s[11] = 0xff;
  s[12] = 192;
  s[14] = third;
  s[15] = last;
  return s;
}
}  // namespace

TEST_CASE("penalty_box: an ordinary failed handshake is not penalised") {
  penalty_box box;
  const auto now = penalty_box::clock::now();
  CHECK_FALSE(box.failed(address(1), 4ms, now));
  CHECK_FALSE(box.penalised(address(1), now));
  CHECK(box.size() == 0);
}

TEST_CASE("penalty_box: a costly one keeps its source out, doubling while it goes on, for that source only") {
  penalty_box box;
  auto now = penalty_box::clock::now();
  const auto first = box.failed(address(1), 1400ms, now);
  REQUIRE(first);
  CHECK(*first == penalty_box::first_penalty);
  CHECK(box.penalised(address(1), now + 9s));
  CHECK_FALSE(box.penalised(address(2), now));
  CHECK_FALSE(box.penalised(address(1), now + 10s));
  now += 11s;  // back at once, and costly again
  CHECK(*box.failed(address(1), 900ms, now) == 2 * penalty_box::first_penalty);
  for (int i = 0; i < 10; ++i) now += *box.failed(address(1), 900ms, now) + 1s;
  CHECK(*box.failed(address(1), 900ms, now) == penalty_box::longest_penalty);
  // Quiet for a whole longest penalty after the last one ended: it starts over.
  now += 2 * penalty_box::longest_penalty + 1s;
  CHECK(*box.failed(address(1), 900ms, now) == penalty_box::first_penalty);
}

TEST_CASE("penalty_box: bounded; a full table lets the oldest offender go first") {
  penalty_box box;
  auto now = penalty_box::clock::now();
  for (std::size_t i = 0; i < penalty_box::capacity; ++i) {
    box.failed(address(static_cast<std::uint8_t>(i), static_cast<std::uint8_t>(i >> 8)), 300ms, now);
    now += 1ms;
  }
  CHECK(box.size() == penalty_box::capacity);
  box.failed(address(0, 200), 300ms, now);  // one more: the first offender makes room
  CHECK(box.size() == penalty_box::capacity);
  CHECK_FALSE(box.penalised(address(0, 0), now));
  CHECK(box.penalised(address(1, 0), now));
  CHECK(box.penalised(address(0, 200), now));
}
