#include <doctest/doctest.h>

#include "config/duration.hpp"

using tunnel::config::format_duration;
using tunnel::config::parse_duration;
using namespace std::chrono_literals;

TEST_CASE("durations in every unit parse to milliseconds") {
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("10s") == 10s);
  CHECK(parse_duration("5m") == 5min);
  CHECK(parse_duration("2h") == 2h);
  CHECK(parse_duration("0") == 0ms);
  CHECK(parse_duration("0s") == 0ms);
}

TEST_CASE("malformed durations are refused") {
  for (const char* bad : {"", "s", "10", "-5s", "1.5s", "10x", "10 s", "ms", "5sec", "10S", "99999999999s", "800h"})
    CHECK_MESSAGE(!parse_duration(bad), bad);
}

TEST_CASE("durations format in the largest exact unit") {
  CHECK(format_duration(1500ms) == "1500ms");
  CHECK(format_duration(10s) == "10s");
  CHECK(format_duration(5min) == "5m");
  CHECK(format_duration(1h) == "1h");
  CHECK(format_duration(0ms) == "0");
}
