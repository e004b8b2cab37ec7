#pragma once
// mbedTLS error codes (negative ints) as std::error_code.
#include <mbedtls/ssl.h>

#include <string>
#include <system_error>

#include "tls/context.hpp"

namespace tunnel::tls {

const std::error_category& mbedtls_category();

// `code` is an mbedTLS return value (negative); the error_code holds its magnitude.
inline std::error_code make_mbedtls_error(int code) {
  return {code < 0 ? -code : code, mbedtls_category()};
}

// Our own TLS-layer conditions that have no mbedTLS code.
enum class tls_errc {
  truncated = 1,      // the transport ended without close_notify
  peer_refused,       // the peer's certificate failed verification or policy
  refused_after_handshake,  // TLS 1.3 client: the server rejected us after our Finished
  record_overflow,    // the peer announced a record longer than TLS allows
};
std::error_code make_error_code(tls_errc e);

// Why peer verification failed, for a log line ("The certificate validity has expired;
// ..."), or "" when it did not. `refused_by_policy`: our allow-list (server) or pins
// (client) turned the peer down, which mbedTLS only knows as BADCERT_OTHER.
std::string describe_verify_failure(const mbedtls_ssl_context& ssl, role side, bool refused_by_policy);

// The negotiated cipher suite's name, or "" before a ServerHello settled one (mbedTLS then
// returns NULL, which must not reach a std::string).
std::string ciphersuite_name(const mbedtls_ssl_context& ssl);

}  // namespace tunnel::tls

template <>
struct std::is_error_code_enum<tunnel::tls::tls_errc> : std::true_type {};
