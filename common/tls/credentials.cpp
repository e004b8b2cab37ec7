#include "tls/credentials.hpp"

#include <mbedtls/error.h>
#include <mbedtls/oid.h>
// psa_util.h lacks extern "C" guards in mbedTLS 3.6.
extern "C" {
#include <mbedtls/psa_util.h>
}
#include <psa/crypto.h>
#include <unistd.h>

#include "tls/validity.hpp"

namespace tunnel::tls {
namespace {

std::string mbedtls_text(int code) {
  char text[160];
  mbedtls_strerror(code, text, sizeof text);
  return text;
}

void check_readable(const char* flag, const std::string& path) {
  if (path.empty()) throw credential_error(std::string(flag) + " is required");
  if (::access(path.c_str(), R_OK) != 0)
    throw credential_error(std::string(flag) + " " + path + ": cannot read file");
}

}  // namespace

credentials::credentials() {
  mbedtls_x509_crt_init(&chain_);
  mbedtls_pk_init(&key_);
  mbedtls_x509_crt_init(&ca_);
  mbedtls_x509_crl_init(&crl_);
}

credentials::~credentials() {
  mbedtls_x509_crt_free(&chain_);
  mbedtls_pk_free(&key_);
  mbedtls_x509_crt_free(&ca_);
  mbedtls_x509_crl_free(&crl_);
}

std::shared_ptr<credentials> credentials::load(const credential_files& files) {
  if (!files.psk.empty()) {
    std::shared_ptr<credentials> c(new credentials());
    c->psk_ = load_psk_file(files.psk);
    return c;
  }
  const std::string cert_flag = files.flag_prefix + "cert", key_flag = files.flag_prefix + "key",
                    ca_flag = files.flag_prefix + "ca";
  std::shared_ptr<credentials> c(new credentials());
  if (files.need_own_cert || !files.cert.empty() || !files.key.empty()) {
    check_readable(cert_flag.c_str(), files.cert);
    check_readable(key_flag.c_str(), files.key);
    if (int rc = mbedtls_x509_crt_parse_file(&c->chain_, files.cert.c_str()); rc != 0)
      throw credential_error(cert_flag + " " + files.cert + ": not a valid certificate (" +
                             (rc > 0 ? std::to_string(rc) + " certificates unparsable" : mbedtls_text(rc)) + ")");
    if (int rc = mbedtls_pk_parse_keyfile(&c->key_, files.key.c_str(), nullptr,
                                          mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
        rc != 0)
      throw credential_error(key_flag + " " + files.key + ": not a valid unencrypted private key (" +
                             mbedtls_text(rc) + ")");
    if (int rc = mbedtls_pk_check_pair(&c->chain_.pk, &c->key_, mbedtls_psa_get_random,
                                       MBEDTLS_PSA_RANDOM_STATE);
        rc != 0)
      throw credential_error(key_flag + " " + files.key + " does not match the certificate in " + cert_flag + " " +
                             files.cert);
  }
  if (files.need_ca || !files.ca.empty()) {
    check_readable(ca_flag.c_str(), files.ca);
    if (int rc = mbedtls_x509_crt_parse_file(&c->ca_, files.ca.c_str()); rc != 0)
      throw credential_error(ca_flag + " " + files.ca + ": not a valid certificate bundle (" +
                             (rc > 0 ? std::to_string(rc) + " certificates unparsable" : mbedtls_text(rc)) + ")");
    require_valid_cas(c->ca_, ca_flag, files.ca);
  }
  if (!files.crl.empty()) {
    check_readable("--crl", files.crl);
    // PEM or DER: mbedTLS tells them apart by the PEM header.
    if (int rc = mbedtls_x509_crl_parse_file(&c->crl_, files.crl.c_str()); rc != 0)
      throw credential_error("--crl " + files.crl + ": not a valid CRL (" + mbedtls_text(rc) + ")");
    c->crl_loaded_ = true;
    require_usable_crls(c->crl_, c->ca_, files.crl);
  }
  return c;
}

void require_usable_for(const credentials& c, bool as_server, const credential_files& files) {
  if (!c.has_own_cert()) return;
  const std::string where = files.flag_prefix + "cert " + files.cert;
  const char* oid = as_server ? MBEDTLS_OID_SERVER_AUTH : MBEDTLS_OID_CLIENT_AUTH;
  const std::size_t oid_len = as_server ? MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH) : MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH);
  if (mbedtls_x509_crt_check_extended_key_usage(&c.leaf(), oid, oid_len) != 0)
    throw credential_error(where + ": its extended key usage leaves out " +
                           (as_server ? "serverAuth (TLS server authentication): every client would refuse it"
                                      : "clientAuth (TLS client authentication): every server would refuse it"));
  if (mbedtls_x509_crt_check_key_usage(&c.leaf(), MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0)
    throw credential_error(where + ": its key usage leaves out digitalSignature, which TLS 1.3 needs to prove the key");
}

void init_library() {
  if (psa_crypto_init() != PSA_SUCCESS) throw std::runtime_error("cannot initialise PSA crypto");
}

}  // namespace tunnel::tls
