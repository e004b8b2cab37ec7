#include "policy/server_name.hpp"

#include <algorithm>
#include <cctype>

#include "policy/allow_list.hpp"

namespace tunnel::policy {
namespace {

bool same_ascii(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

bool dns_matches(std::string_view pattern, std::string_view name) {
  if (same_ascii(pattern, name)) return true;
  // "*.example.net" stands for exactly one label in front of "example.net".
  if (pattern.size() < 3 || pattern.substr(0, 2) != "*.") return false;
  const auto dot = name.find('.');
  return dot != std::string_view::npos && dot > 0 && same_ascii(pattern.substr(1), name.substr(dot));
}

}  // namespace

bool certifies_name(const peer_identity& peer, std::string_view name) {
  if (name.empty()) return false;
  if (auto ip = canonical_ip(std::string(name)))
    return std::find(peer.ip.begin(), peer.ip.end(), *ip) != peer.ip.end();
  if (std::any_of(peer.dns.begin(), peer.dns.end(), [&](const std::string& d) { return dns_matches(d, name); }))
    return true;
  // RFC 6125 6.4.4: the CN is looked at only in a certificate with no subjectAltName at all
  // (a URI or e-mail SAN alone still rules it out), as mbedTLS's own name check does.
  return !peer.has_san && peer.dns.empty() && peer.ip.empty() && same_ascii(peer.cn, name);
}

}  // namespace tunnel::policy
