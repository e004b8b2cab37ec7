#pragma once
// The one big-endian codec for wire formats read from or written to the network (mux
// frames, ClientHello, PROXY headers, DTLS records, session tickets). The reader is bounded:
// every read checks what is left, and a short input sets a sticky failure flag instead of
// reading past the end or throwing; from then on every read yields 0 or an empty span.
// Everything works over std::byte or, for buffers handed to mbedTLS, unsigned char.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace tunnel::codec {

template <class B>
concept byte_type = std::same_as<B, std::byte> || std::same_as<B, unsigned char>;

// The big-endian integer in the sizeof(T) bytes at `p`; the caller has checked they are there.
template <std::unsigned_integral T, byte_type B>
constexpr T load_be(const B* p) {
  T v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v = static_cast<T>(v << 8 | static_cast<T>(p[i]));
  return v;
}

template <byte_type B>
std::string_view as_text(std::span<const B> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

template <byte_type B>
class basic_reader {
 public:
  explicit basic_reader(std::span<const B> in) : in_(in) {}

  std::uint8_t u8() { return static_cast<std::uint8_t>(number(1)); }
  std::uint16_t u16() { return static_cast<std::uint16_t>(number(2)); }
  std::uint32_t u24() { return static_cast<std::uint32_t>(number(3)); }
  std::uint32_t u32() { return static_cast<std::uint32_t>(number(4)); }
  std::uint64_t u64() { return number(8); }

  // The next `n` bytes.
  std::span<const B> take(std::size_t n) {
    if (failed_ || n > in_.size()) return fail(), std::span<const B>{};
    auto out = in_.first(n);
    in_ = in_.subspan(n);
    return out;
  }
  // A length of W bytes (1..4), then that many bytes: what TLS calls a vector.
  template <std::size_t W>
  std::span<const B> prefixed() {
    static_assert(W >= 1 && W <= 4);
    return take(number(W));
  }
  // Everything left; the reader is empty afterwards.
  std::span<const B> rest() {
    auto out = in_;
    in_ = {};
    return out;
  }

  std::size_t left() const { return in_.size(); }
  bool empty() const { return in_.empty(); }
  bool failed() const { return failed_; }

 private:
  std::uint64_t number(std::size_t width) {
    const auto at = take(width);
    std::uint64_t v = 0;
    for (B b : at) v = v << 8 | static_cast<std::uint8_t>(b);
    return v;
  }
  void fail() {
    failed_ = true;
    in_ = {};
  }

  std::span<const B> in_;
  bool failed_ = false;
};

// Appends to a caller's buffer.
template <byte_type B>
class basic_writer {
 public:
  explicit basic_writer(std::vector<B>& out) : out_(out) {}

  void u8(std::uint8_t v) { number(v, 1); }
  void u16(std::uint16_t v) { number(v, 2); }
  void u24(std::uint32_t v) { number(v, 3); }
  void u32(std::uint32_t v) { number(v, 4); }
  void u64(std::uint64_t v) { number(v, 8); }

  void raw(std::span<const B> bytes) { out_.insert(out_.end(), bytes.begin(), bytes.end()); }
  void raw(std::string_view text) { raw(std::span(reinterpret_cast<const B*>(text.data()), text.size())); }

  // A length of W bytes (1..4), then the bytes. False, with nothing written, when the
  // length does not fit in W bytes.
  template <std::size_t W>
  [[nodiscard]] bool prefixed(std::span<const B> bytes) {
    static_assert(W >= 1 && W <= 4);
    if (static_cast<std::uint64_t>(bytes.size()) >> (8 * W) != 0) return false;
    number(bytes.size(), W);
    raw(bytes);
    return true;
  }
  template <std::size_t W>
  [[nodiscard]] bool prefixed(std::string_view text) {
    return prefixed<W>(std::span(reinterpret_cast<const B*>(text.data()), text.size()));
  }

 private:
  void number(std::uint64_t v, std::size_t width) {
    for (std::size_t i = width; i-- > 0;) out_.push_back(static_cast<B>(static_cast<std::uint8_t>(v >> (8 * i))));
  }

  std::vector<B>& out_;
};

using reader = basic_reader<std::byte>;
using writer = basic_writer<std::byte>;

}  // namespace tunnel::codec
