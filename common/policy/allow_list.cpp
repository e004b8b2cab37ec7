#include "policy/allow_list.hpp"

#include <algorithm>
#include <asio/ip/address.hpp>

namespace tunnel::policy {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

template <class T, class Eq>
bool any_match(const std::vector<T>& allowed, const std::vector<T>& presented, Eq eq) {
  for (const auto& a : allowed)
    for (const auto& p : presented)
      if (eq(a, p)) return true;
  return false;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool allow_list::allows(const peer_identity& peer) const {
  if (empty()) return true;
  auto same = [](const std::string& a, const std::string& b) { return a == b; };
  if (!peer.cn.empty() && std::find(cn.begin(), cn.end(), peer.cn) != cn.end()) return true;
  if (any_match(dns, peer.dns, [](const std::string& a, const std::string& b) { return iequals(a, b); }))
    return true;
  if (any_match(uri, peer.uri, same)) return true;
  if (any_match(ip, peer.ip, same)) return true;
  return std::find(spki.begin(), spki.end(), peer.spki) != spki.end();
}

std::optional<std::string> canonical_ip(std::string_view text) {
  std::error_code ec;
  auto addr = asio::ip::make_address(std::string(text), ec);
  if (ec) return std::nullopt;
  if (addr.is_v6() && addr.to_v6().is_v4_mapped())
    addr = asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6());
  return addr.to_string();
}

std::optional<spki_digest> parse_spki_hex(std::string_view text) {
  spki_digest out{};
  std::size_t n = 0;
  int high = -1;
  for (char c : text) {
    if (c == ':') continue;
    const int v = hex_value(c);
    if (v < 0) return std::nullopt;
    if (high < 0) {
      high = v;
    } else {
      if (n >= out.size()) return std::nullopt;
      out[n++] = static_cast<std::uint8_t>(high << 4 | v);
      high = -1;
    }
  }
  if (n != out.size() || high >= 0) return std::nullopt;
  return out;
}

}  // namespace tunnel::policy
