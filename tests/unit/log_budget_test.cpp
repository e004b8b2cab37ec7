#include <doctest/doctest.h>

#include <string>

#include "ops/log_budget.hpp"

using tunnel::ops::log_budget;
using namespace std::chrono_literals;

namespace {
int printed(log_budget& b, std::string_view message, int attempts, log_budget::clock::time_point at) {
  int n = 0;
  for (int i = 0; i < attempts; ++i) n += b.admit(message, at).print ? 1 : 0;
  return n;
}
}  // namespace

TEST_CASE("log budget: a burst, then a steady rate, and the count of what was left out") {
  log_budget b(20, 5);
  const auto t0 = log_budget::clock::now();
  CHECK(printed(b, "handshake failed", 1000, t0) == 20);
  // One second later: five more lines; the first one reports the 980 left out.
  const auto first = b.admit("handshake failed", t0 + 1s);
  CHECK(first.print);
  CHECK(first.suppressed_before == 980);
  CHECK(printed(b, "handshake failed", 100, t0 + 1s) == 4);
  // A quiet minute refills the burst, never beyond it.
  CHECK(printed(b, "handshake failed", 100, t0 + 61s) == 20);
}

TEST_CASE("log budget: each message text has its own") {
  log_budget b(3, 1);
  const auto t0 = log_budget::clock::now();
  CHECK(printed(b, "flow refused", 10, t0) == 3);
  CHECK(printed(b, "target unreachable", 10, t0) == 3);
  const auto next = b.admit("target unreachable", t0 + 1s);
  CHECK(next.print);
  CHECK(next.suppressed_before == 7);
  CHECK(b.admit("flow refused", t0 + 1s).suppressed_before == 7);
}

TEST_CASE("log budget: a time that goes backwards refills nothing") {
  log_budget b(2, 100);
  const auto t0 = log_budget::clock::now();
  CHECK(printed(b, "x", 5, t0) == 2);
  CHECK(printed(b, "x", 5, t0 - 10s) == 0);
}

TEST_CASE("log budget: past max_kinds message texts, the rest share one budget") {
  log_budget b(1, 1);
  const auto t0 = log_budget::clock::now();
  for (std::size_t i = 0; i < log_budget::max_kinds; ++i) CHECK(b.admit("kind " + std::to_string(i), t0).print);
  CHECK(b.admit("one more", t0).print);       // the shared budget's one line
  CHECK_FALSE(b.admit("and another", t0).print);
  CHECK_FALSE(b.admit("kind 0", t0).print);  // the first kinds keep their own
}
