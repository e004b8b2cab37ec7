#pragma once
// A small private PKI on mbedTLS's certificate writer: ECDSA P-256 keys, a CA, and leaf
// certificates with SANs and the right key usages. Used by the `certs` tool and by tests,
// so no openssl CLI is needed to get a working pair.
#include <chrono>
#include <string>
#include <vector>

namespace tunnel::tls {

struct issued {
  std::string cert_pem;
  std::string key_pem;
};

enum class usage { ca, server, client, server_and_client };

struct cert_request {
  std::string common_name;
  std::vector<std::string> dns;
  std::vector<std::string> ip;   // textual IPv4/IPv6
  std::vector<std::string> uri;
  usage purpose = usage::client;
  // Validity window relative to now (negative offsets make expired / not-yet-valid certs).
  std::chrono::hours not_before_offset{-1};
  std::chrono::hours not_after_offset{24 * 365};
};

// Creates a self-signed CA (basicConstraints CA:TRUE, keyCertSign|cRLSign).
// Throws std::runtime_error on any mbedTLS failure or invalid input (bad IP text).
issued make_ca(const cert_request& req);

// Issues a leaf (or with usage::ca an intermediate) signed by `issuer`.
// Throws std::runtime_error on failure.
issued issue(const cert_request& req, const issued& issuer);

}  // namespace tunnel::tls
