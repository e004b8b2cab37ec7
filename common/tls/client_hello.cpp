#include "tls/client_hello.hpp"

#include <cstdint>
#include <cstring>

#include "codec/bytes.hpp"

namespace tunnel::tls {
namespace {

constexpr std::uint8_t handshake_record = 22;
constexpr std::uint8_t client_hello = 1;
constexpr std::uint16_t alpn_extension = 16;
constexpr std::size_t max_record = 16384 + 256;  // beyond it the engine refuses the record at once

alpn_offer scan_alpn(std::span<const std::byte> list, std::string_view wanted) {
  codec::reader r(list);
  bool found = false;
  while (!r.failed() && !r.empty()) {
    auto name = r.prefixed<1>();
    if (!r.failed() && name.size() == wanted.size() && std::memcmp(name.data(), wanted.data(), wanted.size()) == 0)
      found = true;
  }
  if (r.failed()) return alpn_offer::none;
  return found ? alpn_offer::includes : alpn_offer::excludes;
}

}  // namespace

alpn_offer offered_alpn(std::span<const std::byte> first_bytes, std::string_view wanted) {
  codec::reader record(first_bytes);
  const std::uint8_t type = record.u8();
  record.u16();  // legacy record version
  const std::size_t length = record.u16();
  if (record.failed()) return alpn_offer::need_more;
  if (type != handshake_record || length == 0 || length > max_record) return alpn_offer::none;
  if (record.left() < length) return alpn_offer::need_more;

  codec::reader hello(record.take(length));
  if (hello.u8() != client_hello) return alpn_offer::none;
  const std::size_t body = hello.u24();
  if (hello.failed() || body > hello.left()) return alpn_offer::none;  // continues in another record
  codec::reader msg(hello.take(body));
  msg.take(2 + 32);  // legacy version, random
  msg.prefixed<1>();  // session id
  msg.prefixed<2>();  // cipher suites
  msg.prefixed<1>();  // compression methods
  if (msg.failed() || msg.empty()) return alpn_offer::none;  // no extensions at all
  codec::reader extensions(msg.prefixed<2>());
  if (msg.failed()) return alpn_offer::none;
  while (!extensions.failed() && !extensions.empty()) {
    const std::uint16_t ext_type = extensions.u16();
    auto data = extensions.prefixed<2>();
    if (!extensions.failed() && ext_type == alpn_extension) {
      codec::reader alpn(data);
      auto list = alpn.prefixed<2>();
      return !alpn.failed() && alpn.empty() && !list.empty() ? scan_alpn(list, wanted) : alpn_offer::none;
    }
  }
  return alpn_offer::none;
}

}  // namespace tunnel::tls
