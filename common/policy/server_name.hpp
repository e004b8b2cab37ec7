#pragma once
// Does a server certificate carry the name a client asked for? mbedTLS checks this itself
// when the name is also the SNI; tunnel-in does it here when the SNI names a service
// (--service) and so cannot double as the name to verify.
#include <string_view>

#include "policy/peer_identity.hpp"

namespace tunnel::policy {

// True when `name` is one of the certificate's identities, by the rules of RFC 6125 as
// mbedTLS applies them: an IP address must equal an IP SAN; a host name must equal a DNS SAN
// (ASCII case-insensitive), or match a "*.rest" SAN by exactly one leading label; the subject
// CN counts only when the certificate has no DNS or IP SAN at all. Pure.
bool certifies_name(const peer_identity& peer, std::string_view name);

}  // namespace tunnel::policy
