#pragma once
// Allow-lists: pure functions over a peer identity. Empty list = every certificate that
// chains to the CA is admitted (the caller logs that at start-up).
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/peer_identity.hpp"

namespace tunnel::policy {

struct allow_list {
  std::vector<std::string> cn;    // exact, case-sensitive (as ghostunnel)
  std::vector<std::string> dns;   // exact, case-insensitive; no wildcard expansion
  std::vector<std::string> uri;   // exact, case-sensitive
  std::vector<std::string> ip;    // canonical text (see canonical_ip)
  std::vector<spki_digest> spki;

  bool empty() const { return cn.empty() && dns.empty() && uri.empty() && ip.empty() && spki.empty(); }

  // True when the list is empty or the peer matches at least one entry of any kind.
  bool allows(const peer_identity& peer) const;
};

// "10.0.0.1" / "::ffff:10.0.0.1" / "2001:DB8::1" → canonical text; nullopt if not an IP.
std::optional<std::string> canonical_ip(std::string_view text);

// 64 hex digits (optionally with ':' separators) → digest; nullopt otherwise.
std::optional<spki_digest> parse_spki_hex(std::string_view text);

}  // namespace tunnel::policy
