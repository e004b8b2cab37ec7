#pragma once
// Watches the TLS record headers in a received byte stream and notices a record whose
// length field exceeds the protocol's limit. mbedTLS compares the length only with its own
// input buffer (a little larger than the limit) and otherwise waits for the whole announced
// body, so a peer could announce an illegal record and hold the connection until a timeout;
// with this guard the record is refused as soon as its header has arrived
// (RFC 8446 5.2, RFC 5246 6.2.3: record_overflow). Pure and allocation-free.
#include <cstddef>
#include <cstdint>
#include <span>

#include "codec/bytes.hpp"

namespace tunnel::tls {

class record_guard {
 public:
  // TLSCiphertext.length limits: TLS 1.3 2^14 + 256, TLS 1.2 2^14 + 2048.
  static constexpr std::size_t tls13_limit = (1u << 14) + 256;
  static constexpr std::size_t tls12_limit = (1u << 14) + 2048;

  explicit record_guard(std::size_t limit) : limit_(limit) {}

  // Follows `data`, the next bytes of the stream. Returns false once a header has announced
  // more than the limit (and from then on).
  bool feed(std::span<const std::byte> data) {
    while (!data.empty() && !overflow_) {
      if (body_left_ > 0) {
        const std::size_t n = body_left_ < data.size() ? body_left_ : data.size();
        body_left_ -= n;
        data = data.subspan(n);
        continue;
      }
      header_[header_seen_++] = static_cast<std::uint8_t>(data.front());
      data = data.subspan(1);
      if (header_seen_ < header_size) continue;
      header_seen_ = 0;
      body_left_ = codec::load_be<std::uint16_t>(header_ + 3);  // type, version(2), length(2)
      overflow_ = body_left_ > limit_;
    }
    return !overflow_;
  }

  bool overflow() const { return overflow_; }

 private:
  static constexpr std::size_t header_size = 5;
  std::size_t limit_;
  std::size_t body_left_ = 0;
  std::uint8_t header_[header_size] = {};
  std::size_t header_seen_ = 0;
  bool overflow_ = false;
};

}  // namespace tunnel::tls
