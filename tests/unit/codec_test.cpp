#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "codec/bytes.hpp"

using namespace tunnel;

namespace {

std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

}  // namespace

TEST_CASE("codec writes every integer width big-endian and reads it back") {
  std::vector<std::byte> out;
  codec::writer w(out);
  w.u8(0x01);
  w.u16(0x0203);
  w.u24(0x040506);
  w.u32(0x0708090a);
  w.u64(0x0b0c0d0e0f101112ull);
  CHECK(out == bytes({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10,
                      0x11, 0x12}));

  codec::reader r(out);
  CHECK(r.u8() == 0x01);
  CHECK(r.u16() == 0x0203);
  CHECK(r.u24() == 0x040506);
  CHECK(r.u32() == 0x0708090a);
  CHECK(r.u64() == 0x0b0c0d0e0f101112ull);
  CHECK(r.empty());
  CHECK_FALSE(r.failed());
}

TEST_CASE("codec writer keeps only the low bytes of a width and round-trips the extremes") {
  std::vector<std::byte> out;
  codec::writer w(out);
  w.u24(0xff123456);  // the top byte does not fit in 24 bits
  w.u64(~std::uint64_t{0});
  w.u16(0);
  CHECK(out == bytes({0x12, 0x34, 0x56, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00}));
  codec::reader r(out);
  CHECK(r.u24() == 0x123456);
  CHECK(r.u64() == ~std::uint64_t{0});
  CHECK(r.u16() == 0);
  CHECK_FALSE(r.failed());
}

TEST_CASE("codec load_be reads a fixed-layout field over std::byte and unsigned char") {
  const auto b = bytes({0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04});
  CHECK(codec::load_be<std::uint8_t>(b.data()) == 0xde);
  CHECK(codec::load_be<std::uint16_t>(b.data() + 1) == 0xadbe);
  CHECK(codec::load_be<std::uint32_t>(b.data()) == 0xdeadbeef);
  CHECK(codec::load_be<std::uint64_t>(b.data()) == 0xdeadbeef01020304ull);
  const std::uint8_t u[] = {0x80, 0x01};
  CHECK(codec::load_be<std::uint16_t>(u) == 0x8001);
}

TEST_CASE("codec reads of every width one byte short fail and return 0") {
  const auto b = bytes({0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88});
  const std::span<const std::byte> all(b);
  using read_fn = std::uint64_t (*)(codec::reader&);
  const std::pair<std::size_t, read_fn> reads[] = {
      {1, [](codec::reader& r) -> std::uint64_t { return r.u8(); }},
      {2, [](codec::reader& r) -> std::uint64_t { return r.u16(); }},
      {3, [](codec::reader& r) -> std::uint64_t { return r.u24(); }},
      {4, [](codec::reader& r) -> std::uint64_t { return r.u32(); }},
      {8, [](codec::reader& r) -> std::uint64_t { return r.u64(); }},
  };
  for (const auto& entry : reads) {
    const std::size_t width = entry.first;  // not a structured binding: CAPTURE's lambda takes it (clang)
    const read_fn read = entry.second;
    CAPTURE(width);
    codec::reader short_by_one(all.first(width - 1));
    CHECK(read(short_by_one) == 0);
    CHECK(short_by_one.failed());
    codec::reader exact(all.first(width));
    CHECK(read(exact) == codec::load_be<std::uint64_t>(b.data()) >> (8 * (8 - width)));
    CHECK(exact.empty());
    CHECK_FALSE(exact.failed());
  }
}

TEST_CASE("codec reader never looks past the end of its span") {
  // The bytes after the reader's span would change the value if they were read.
  const auto b = bytes({0x01, 0x02, 0x03, 0xff, 0xff, 0xff});
  const auto first3 = std::span(b).first(3);
  codec::reader r(first3);
  CHECK(r.u32() == 0);
  CHECK(r.failed());
  CHECK(r.left() == 0);

  codec::reader t(first3);
  CHECK(t.take(4).empty());
  CHECK(t.failed());

  codec::reader p(first3);  // a length of 0x0102, then only one byte
  CHECK(p.prefixed<2>().empty());
  CHECK(p.failed());
}

TEST_CASE("codec reader failure is sticky: every later read yields nothing") {
  const auto b = bytes({0x00, 0x05, 0xaa, 0xbb, 0xcc, 0xdd});
  codec::reader r(b);
  CHECK(r.take(7).empty());  // one more than there is
  REQUIRE(r.failed());
  CHECK(r.u8() == 0);
  CHECK(r.u16() == 0);
  CHECK(r.u64() == 0);
  CHECK(r.take(0).empty());
  CHECK(r.take(1).empty());
  CHECK(r.prefixed<1>().empty());
  CHECK(r.rest().empty());
  CHECK(r.empty());
  CHECK(r.failed());
}

TEST_CASE("codec reader takes exact amounts, an empty take, and the rest") {
  const auto b = bytes({0x01, 0x02, 0x03, 0x04, 0x05});
  codec::reader r(b);
  CHECK(r.take(0).empty());
  auto two = r.take(2);
  REQUIRE(two.size() == 2);
  CHECK(two.data() == b.data());  // a view into the input, not a copy
  CHECK(r.left() == 3);
  auto rest = r.rest();
  CHECK(rest.size() == 3);
  CHECK(rest.data() == b.data() + 2);
  CHECK(r.empty());
  CHECK(r.rest().empty());
  CHECK_FALSE(r.failed());
  CHECK(r.take(1).empty());  // now past the end
  CHECK(r.failed());
}

namespace {

// A W-byte length prefix promising more than `shorted` holds, and a prefix cut short itself.
template <std::size_t W>
void check_short_prefixed(const std::vector<std::byte>& shorted) {
  CAPTURE(W);
  codec::reader s(shorted);
  CHECK(s.prefixed<W>().empty());
  CHECK(s.failed());
  CHECK(s.left() == 0);
  const auto zero = std::vector<std::byte>(W, std::byte{0});
  codec::reader n{std::span<const std::byte>(zero).first(W - 1)};
  CHECK(n.prefixed<W>().empty());
  CHECK(n.failed());
}

}  // namespace

TEST_CASE("codec length-prefixed fields: whole, empty and with a short body") {
  // width 1: "ab", then an empty field; width 2: three bytes
  const auto b = bytes({0x02, 'a', 'b', 0x00, 0x00, 0x03, 0x10, 0x20, 0x30});
  codec::reader r(b);
  CHECK(codec::as_text(r.prefixed<1>()) == "ab");
  CHECK(r.prefixed<1>().empty());
  CHECK_FALSE(r.failed());
  auto three = r.prefixed<2>();
  CHECK(std::vector<std::byte>(three.begin(), three.end()) == bytes({0x10, 0x20, 0x30}));
  CHECK(r.empty());
  CHECK_FALSE(r.failed());

  check_short_prefixed<1>(bytes({0x04, 1, 2, 3}));
  check_short_prefixed<2>(bytes({0x00, 0x04, 1, 2, 3}));
}

TEST_CASE("codec writer writes length-prefixed fields and refuses ones that do not fit") {
  std::vector<std::byte> out;
  codec::writer w(out);
  CHECK(w.prefixed<1>(std::string_view("hi")));
  CHECK(w.prefixed<2>(std::span<const std::byte>(bytes({0x7f}))));
  CHECK(w.prefixed<1>(std::string_view()));
  CHECK(out == bytes({0x02, 'h', 'i', 0x00, 0x01, 0x7f, 0x00}));

  const std::string max1(255, 'x'), over1(256, 'x'), max2(65535, 'y'), over2(65536, 'y');
  std::vector<std::byte> big;
  codec::writer b(big);
  CHECK_FALSE(b.prefixed<1>(over1));
  CHECK_FALSE(b.prefixed<2>(over2));
  CHECK(big.empty());  // nothing written for a refused field
  CHECK(b.prefixed<1>(max1));
  CHECK(b.prefixed<2>(max2));
  REQUIRE(big.size() == 1 + 255 + 2 + 65535);
  codec::reader r(big);
  CHECK(codec::as_text(r.prefixed<1>()) == max1);
  CHECK(codec::as_text(r.prefixed<2>()) == max2);
  CHECK(r.empty());
  CHECK_FALSE(r.failed());
}

TEST_CASE("codec works over unsigned char buffers the same way") {
  std::vector<unsigned char> out;
  codec::basic_writer w(out);
  w.u16(0xabcd);
  CHECK(w.prefixed<2>(std::string_view("ticket")));
  const unsigned char raw[] = {9, 8};
  w.raw(raw);
  CHECK(out == std::vector<unsigned char>{0xab, 0xcd, 0x00, 0x06, 't', 'i', 'c', 'k', 'e', 't', 9, 8});

  codec::basic_reader<unsigned char> r(out);
  CHECK(r.u16() == 0xabcd);
  CHECK(codec::as_text(r.prefixed<2>()) == "ticket");
  CHECK(r.rest().size() == 2);
  CHECK(r.u8() == 0);
  CHECK(r.failed());
}
