#include "tls/client_hello.hpp"

#include <cstdint>
#include <cstring>

namespace tunnel::tls {
namespace {

// A cursor over untrusted bytes: every read checks what is left.
struct reader {
  std::span<const std::byte> rest;
  bool ok = true;

  std::size_t number(std::size_t width) {
    if (!ok || rest.size() < width) return ok = false, 0;
    std::size_t n = 0;
    for (std::size_t i = 0; i < width; ++i) n = (n << 8) | static_cast<std::uint8_t>(rest[i]);
    rest = rest.subspan(width);
    return n;
  }
  std::span<const std::byte> bytes(std::size_t n) {
    if (!ok || rest.size() < n) return ok = false, std::span<const std::byte>{};
    auto out = rest.first(n);
    rest = rest.subspan(n);
    return out;
  }
  std::span<const std::byte> vector(std::size_t length_width) { return bytes(number(length_width)); }
};

constexpr std::uint8_t handshake_record = 22;
constexpr std::uint8_t client_hello = 1;
constexpr std::size_t alpn_extension = 16;
constexpr std::size_t max_record = 16384 + 256;  // beyond it the engine refuses the record at once

alpn_offer scan_alpn(std::span<const std::byte> list, std::string_view wanted) {
  reader r{list};
  bool found = false;
  while (r.ok && !r.rest.empty()) {
    auto name = r.vector(1);
    if (r.ok && name.size() == wanted.size() && std::memcmp(name.data(), wanted.data(), wanted.size()) == 0)
      found = true;
  }
  if (!r.ok) return alpn_offer::none;
  return found ? alpn_offer::includes : alpn_offer::excludes;
}

}  // namespace

alpn_offer offered_alpn(std::span<const std::byte> first_bytes, std::string_view wanted) {
  reader record{first_bytes};
  const std::size_t type = record.number(1);
  record.number(2);  // legacy record version
  const std::size_t length = record.number(2);
  if (!record.ok) return alpn_offer::need_more;
  if (type != handshake_record || length == 0 || length > max_record) return alpn_offer::none;
  if (record.rest.size() < length) return alpn_offer::need_more;

  reader hello{record.rest.first(length)};
  if (hello.number(1) != client_hello) return alpn_offer::none;
  const std::size_t body = hello.number(3);
  if (!hello.ok || body > hello.rest.size()) return alpn_offer::none;  // continues in another record
  reader msg{hello.rest.first(body)};
  msg.bytes(2 + 32);  // legacy version, random
  msg.vector(1);      // session id
  msg.vector(2);      // cipher suites
  msg.vector(1);      // compression methods
  if (!msg.ok || msg.rest.empty()) return alpn_offer::none;  // no extensions at all
  reader extensions{msg.vector(2)};
  if (!msg.ok) return alpn_offer::none;
  while (extensions.ok && !extensions.rest.empty()) {
    const std::size_t ext_type = extensions.number(2);
    auto data = extensions.vector(2);
    if (extensions.ok && ext_type == alpn_extension) {
      reader alpn{data};
      auto list = alpn.vector(2);
      return alpn.ok && alpn.rest.empty() && !list.empty() ? scan_alpn(list, wanted) : alpn_offer::none;
    }
  }
  return alpn_offer::none;
}

}  // namespace tunnel::tls
