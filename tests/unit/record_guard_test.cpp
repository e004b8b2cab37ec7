#include <doctest/doctest.h>

#include <vector>

#include "tls/record_guard.hpp"

using tunnel::tls::record_guard;

namespace {

std::vector<std::byte> record(std::size_t announced, std::size_t body) {
  std::vector<std::byte> r(5 + body, std::byte{0xAA});
  r[0] = std::byte{23};
  r[1] = r[2] = std::byte{3};
  r[3] = std::byte(announced >> 8);
  r[4] = std::byte(announced & 0xff);
  return r;
}

}  // namespace

TEST_CASE("record guard lets records up to the limit through, whole or byte by byte") {
  for (std::size_t chunk : {std::size_t{1}, std::size_t{7}, std::size_t{100000}}) {
    record_guard g(record_guard::tls13_limit);
    std::vector<std::byte> stream;
    for (std::size_t len : {std::size_t{1}, std::size_t{300}, record_guard::tls13_limit, std::size_t{0}}) {
      auto r = record(len, len);
      stream.insert(stream.end(), r.begin(), r.end());
    }
    for (std::size_t at = 0; at < stream.size(); at += chunk)
      CHECK(g.feed(std::span(stream).subspan(at, std::min(chunk, stream.size() - at))));
    CHECK_FALSE(g.overflow());
  }
}

TEST_CASE("record guard refuses a header announcing one byte over the limit, before its body") {
  record_guard g(record_guard::tls13_limit);
  auto ok = record(10, 10);
  CHECK(g.feed(ok));
  auto bad = record(record_guard::tls13_limit + 1, 0);  // the header alone
  CHECK(g.feed(std::span(bad).first(4)));
  CHECK_FALSE(g.feed(std::span(bad).subspan(4)));
  CHECK(g.overflow());
  CHECK_FALSE(g.feed(ok));  // and stays refused
}

TEST_CASE("record guard with the TLS 1.2 limit admits 2^14 + 2048 and no more") {
  record_guard g(record_guard::tls12_limit);
  CHECK(g.feed(record(record_guard::tls12_limit, record_guard::tls12_limit)));
  CHECK_FALSE(g.feed(record(record_guard::tls12_limit + 1, 0)));
}
