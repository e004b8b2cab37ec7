#include "tls/credentials.hpp"

#include <mbedtls/error.h>
#include <mbedtls/oid.h>
// psa_util.h lacks extern "C" guards in mbedTLS 3.6.
extern "C" {
#include <mbedtls/psa_util.h>
}
#include <psa/crypto.h>
#include <mbedtls/platform_util.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <string_view>

#include "config/read_file.hpp"
#include "ops/log.hpp"

#include "tls/validity.hpp"

namespace tunnel::tls {
namespace {

std::string mbedtls_text(int code) {
  char text[160];
  mbedtls_strerror(code, text, sizeof text);
  return text;
}

// Credential files are small; a CA bundle of every public root is about 200 KiB.
constexpr std::size_t max_credential_bytes = 16u << 20;

// The content of a credential file, read whole (a regular file within the bound). The
// bytes of a private key are wiped when the holder goes.
struct file_text {
  std::string bytes;
  ~file_text() { mbedtls_platform_zeroize(bytes.data(), bytes.size()); }
  bool pem() const { return bytes.find("-----BEGIN ") != std::string::npos; }
  // For mbedTLS's parsers: PEM is read up to and including the terminating NUL.
  const unsigned char* data() const { return reinterpret_cast<const unsigned char*>(bytes.c_str()); }
  std::size_t size() const { return bytes.size() + (pem() ? 1 : 0); }
};

// What is wrong with a PEM file's blocks, or "": every "-----BEGIN X-----" line well formed
// and its block ended by "-----END X-----". Text around the blocks (OpenSSL's "Bag
// Attributes", a certificate's text dump, comment lines) and blocks of other kinds (a key
// next to a certificate) are left to the parser, which takes what it wants, as OpenSSL
// does; but mbedTLS silently skips a block cut short, so half a bundle would pass.
// Nothing from the file is echoed but a well-formed label: a damaged key must not end up
// in an error line.
std::string pem_structure_error(const std::string& text) {
  constexpr std::string_view begin = "-----BEGIN ", dashes = "-----";
  for (std::size_t at = text.find(begin); at != std::string::npos; at = text.find(begin, at)) {
    const std::size_t label_at = at + begin.size();
    const std::size_t line_end = std::min(text.find('\n', label_at), text.size());
    const std::size_t label_end = text.find(dashes, label_at);
    if (label_end == std::string::npos || label_end > line_end || label_end - label_at > 40)
      return "has a malformed PEM header";
    const std::string label = text.substr(label_at, label_end - label_at);
    if (label.empty() || label.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ") != std::string::npos)
      return "has a malformed PEM header";
    const std::string end_line = "-----END " + label + "-----";
    const std::size_t end_at = text.find(end_line, label_end);
    if (end_at == std::string::npos) return "has an unterminated PEM block (" + label + ")";
    at = end_at + end_line.size();
  }
  return "";
}

// Reads a credential file for `flag`, refusing what is not a regular file within the
// bound, and (PEM) what pem_structure_error finds.
// Returns the file's mode bits.
mode_t read_credential(file_text& out, const std::string& flag, const std::string& path) {
  if (path.empty()) throw credential_error(flag + " is required");
  auto r = config::read_regular_file(path, max_credential_bytes);
  if (!r.error.empty()) throw credential_error(flag + " " + path + ": " + r.error);
  out.bytes = std::move(r.bytes);
  if (out.pem()) {
    if (const std::string why = pem_structure_error(out.bytes); !why.empty())
      throw credential_error(flag + " " + path + ": " + why);
  }
  return r.info.st_mode;
}

// A DER file is one object: bytes after it are not part of it.
void require_whole_der(const file_text& f, std::size_t parsed, const std::string& flag, const std::string& path) {
  if (!f.pem() && parsed != f.bytes.size())
    throw credential_error(flag + " " + path + ": has " + std::to_string(f.bytes.size() - parsed) +
                           " bytes after its DER content");
}

std::size_t der_bytes(const mbedtls_x509_crt& chain) {
  std::size_t n = 0;
  for (const mbedtls_x509_crt* c = &chain; c != nullptr && c->raw.p != nullptr; c = c->next) n += c->raw.len;
  return n;
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

void warn_if_key_readable_by_others(const credentials& c, const credential_files& files) {
  if ((c.key_mode() & 007) == 0) return;
  char text[8];
  std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(c.key_mode() & 07777));
  ops::warn("private key file readable by every user: chmod o-rwx it")
      .kv("flag", files.flag_prefix + "key")
      .kv("path", files.key)
      .kv("mode", std::string(text));
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
    file_text cert, key;
    read_credential(cert, cert_flag, files.cert);
    c->key_mode_ = read_credential(key, key_flag, files.key);
    if (int rc = mbedtls_x509_crt_parse(&c->chain_, cert.data(), cert.size()); rc != 0)
      throw credential_error(cert_flag + " " + files.cert + ": not a valid certificate (" +
                             (rc > 0 ? std::to_string(rc) + " certificates unparsable" : mbedtls_text(rc)) + ")");
    require_whole_der(cert, der_bytes(c->chain_), cert_flag, files.cert);
    if (int rc = mbedtls_pk_parse_key(&c->key_, key.data(), key.size(), nullptr, 0, mbedtls_psa_get_random,
                                      MBEDTLS_PSA_RANDOM_STATE);
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
    file_text ca;
    read_credential(ca, ca_flag, files.ca);
    if (int rc = mbedtls_x509_crt_parse(&c->ca_, ca.data(), ca.size()); rc != 0)
      throw credential_error(ca_flag + " " + files.ca + ": not a valid certificate bundle (" +
                             (rc > 0 ? std::to_string(rc) + " certificates unparsable" : mbedtls_text(rc)) + ")");
    require_whole_der(ca, der_bytes(c->ca_), ca_flag, files.ca);
    require_valid_cas(c->ca_, ca_flag, files.ca);
  }
  if (!files.crl.empty()) {
    file_text crl;
    const std::string crl_flag = files.flag_prefix + "crl";
    read_credential(crl, crl_flag, files.crl);
    // PEM or DER: mbedTLS tells them apart by the PEM header (and refuses bytes after DER).
    if (int rc = mbedtls_x509_crl_parse(&c->crl_, crl.data(), crl.size()); rc != 0)
      throw credential_error(crl_flag + " " + files.crl + ": not a valid CRL (" + mbedtls_text(rc) + ")");
    c->crl_loaded_ = true;
    require_usable_crls(c->crl_, c->ca_, files.crl, crl_flag, ca_flag);
  }
  return c;
}

void require_usable_for(const credentials& c, bool as_server, const credential_files& files) {
  if (!c.has_own_cert()) return;
  const std::string where = files.flag_prefix + "cert " + files.cert;
  require_current_leaf(c.leaf(), where);
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
