#pragma once
// Our certificate chain, private key and trust anchors, loaded from files and checked
// before any connection uses them. Immutable once loaded; shared by every connection.
#include <sys/types.h>

#include <mbedtls/pk.h>
#include <mbedtls/x509_crl.h>
#include <mbedtls/x509_crt.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "tls/psk_file.hpp"

namespace tunnel::tls {

struct credential_files {
  std::string cert;  // PEM chain, leaf first
  std::string key;   // PEM or DER private key, unencrypted
  std::string ca;    // PEM bundle of trust anchors for the peer's chain
  std::string crl;   // optional: PEM or DER revocation lists for --ca's CAs
  std::string psk;   // instead of all of the above: a `identity:hexkey` file (psk_file.hpp)
  // The legacy legs of a TLS bridge may go without: a TLS client to a legacy server need not
  // present a certificate, a TLS listener for legacy clients need not ask for one.
  bool need_own_cert = true;
  bool need_ca = true;
  std::string flag_prefix = "--";  // errors name "--cert", or "--target-cert", ...
};

// Thrown with a one-line reason naming the flag and the file.
class credential_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class credentials {
 public:
  // Loads and cross-checks the files: the key must match the leaf certificate, no CA may
  // be expired, a CRL must be fresh and issued by one of the CAs. With files.psk set,
  // loads only the pre-shared key (certificate fields must then be empty).
  // Throws credential_error on any failure.
  static std::shared_ptr<credentials> load(const credential_files& files);

  ~credentials();
  credentials(const credentials&) = delete;
  credentials& operator=(const credentials&) = delete;

  // mbedTLS takes non-const pointers but never modifies these after parsing.
  mbedtls_x509_crt* chain() { return &chain_; }
  mbedtls_pk_context* key() { return &key_; }
  mbedtls_x509_crt* ca() { return &ca_; }
  const mbedtls_x509_crt& leaf() const { return chain_; }
  bool has_own_cert() const { return chain_.raw.p != nullptr; }
  bool has_ca() const { return ca_.raw.p != nullptr; }
  // nullptr without --crl (revocation then goes unchecked).
  mbedtls_x509_crl* crl() { return crl_loaded_ ? &crl_ : nullptr; }
  // Set in PSK mode, where there are no certificates at all.
  const std::optional<psk_entry>& psk() const { return psk_; }
  // The private key file's mode as loaded (0 without one).
  mode_t key_mode() const { return key_mode_; }

 private:
  credentials();
  mbedtls_x509_crt chain_;
  mbedtls_pk_context key_;
  mbedtls_x509_crt ca_;
  mbedtls_x509_crl crl_;
  bool crl_loaded_ = false;
  std::optional<psk_entry> psk_;
  mode_t key_mode_ = 0;
};

// A private key every user may read is used (a Kubernetes secret mounts as 0644 unless told
// otherwise), but said, each time it is loaded; by the caller of load(), which may run off
// the event loop and so logs nothing itself. (Group access, 0640 root:tunnel, is the usual
// way to let a process running as --user read it again on reload: not warned of.)
void warn_if_key_readable_by_others(const credentials& c, const credential_files& files);

// Throws credential_error (naming the flag and the file) when our own certificate cannot
// authenticate the side it is presented from: its extended key usage leaves out serverAuth
// (`as_server`) or clientAuth, or its key usage leaves out digitalSignature. Every peer would
// refuse it, and a server's mbedTLS finds no certificate to send at all. Nothing to check
// without an own certificate (PSK mode, a bridge leg without one).
void require_usable_for(const credentials& c, bool as_server, const credential_files& files);

// Once per process, before threads: initialises PSA crypto (and with it the RNG).
// Throws std::runtime_error if the library cannot start.
void init_library();

}  // namespace tunnel::tls
