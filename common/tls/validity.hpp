#pragma once
// Certificate lifetimes: refusing trust material that cannot work (an expired CA, a stale
// CRL), warning before our own certificate or a peer's runs out, and exposing our own
// certificate's notAfter as a metric.
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include <chrono>
#include <cstdint>
#include <string>

namespace tunnel::tls {

// Seconds since the Unix epoch for an X.509 time (UTC). Pure.
std::int64_t unix_seconds(const mbedtls_x509_time& t);
// Seconds since the Unix epoch now.
std::int64_t now_unix();

// Throws credential_error (naming `flag` and `path`) when any certificate in `bundle` is
// outside its validity period: a CA that has expired (or is not valid yet) makes every
// peer fail, so loading it is a mistake better reported now than per handshake.
void require_valid_cas(const mbedtls_x509_crt& bundle, const std::string& flag, const std::string& path);

// Throws credential_error (naming `where`) when our own leaf is not valid now: every peer
// would refuse it, and a reload that brings it in would break a working tunnel.
void require_current_leaf(const mbedtls_x509_crt& leaf, const std::string& where);

// Throws credential_error when a CRL in `crls` is past its nextUpdate (mbedTLS would then
// refuse every peer), not valid yet, not signed by the CA it names, or issued by none of the
// CAs in `cas` (it would never be used, and revocation would silently go unchecked).
void require_usable_crls(const mbedtls_x509_crl& crls, const mbedtls_x509_crt& cas, const std::string& path,
                         const std::string& crl_flag = "--crl", const std::string& ca_flag = "--ca");

// Our own leaf, as loaded by `source` (one per port or service): records its expiry for
// ops::metrics::certificate_expiry_unix, which shows the soonest of every source's, and
// logs a warning when it expires within `warn_before` (an error when it has expired).
// Called at start and on every successful reload. Never throws.
void report_own_expiry(const void* source, const mbedtls_x509_crt& leaf, std::chrono::seconds warn_before);

// A peer's leaf seen during a handshake: logs a warning when it expires within
// `warn_before`, at most once an hour per certificate (bounded memory). Thread-safe;
// never throws.
void note_peer_expiry(const mbedtls_x509_crt& leaf, std::chrono::seconds warn_before);

}  // namespace tunnel::tls
