#include "policy/peer_identity.hpp"

#include <mbedtls/oid.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include <asio/ip/address.hpp>

namespace tunnel::policy {
namespace {

std::string common_name(const mbedtls_x509_name* name) {
  for (const mbedtls_x509_name* n = name; n != nullptr; n = n->next) {
    if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
      return std::string(reinterpret_cast<const char*>(n->val.p), n->val.len);
  }
  return {};
}

std::string ip_text(const unsigned char* p, std::size_t len) {
  if (len == 4) {
    asio::ip::address_v4::bytes_type b;
    std::copy(p, p + 4, b.begin());
    return asio::ip::address_v4(b).to_string();
  }
  if (len == 16) {
    asio::ip::address_v6::bytes_type b;
    std::copy(p, p + 16, b.begin());
    return asio::ip::address_v6(b).to_string();
  }
  return {};
}

void add_san(peer_identity& id, const mbedtls_x509_subject_alternative_name& san) {
  const auto& buf = san.san.unstructured_name;
  const std::string text(reinterpret_cast<const char*>(buf.p), buf.len);
  switch (san.type) {
    case MBEDTLS_X509_SAN_DNS_NAME: id.dns.push_back(text); break;
    case MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER: id.uri.push_back(text); break;
    case MBEDTLS_X509_SAN_IP_ADDRESS: {
      auto ip = ip_text(buf.p, buf.len);
      if (!ip.empty()) id.ip.push_back(std::move(ip));
      break;
    }
    default: break;
  }
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) {
    if (!out.empty()) out += ',';
    out += s;
  }
  return out;
}

}  // namespace

peer_identity identity_of(const mbedtls_x509_crt& crt) {
  peer_identity id;
  id.cn = common_name(&crt.subject);
  id.has_san = mbedtls_x509_crt_has_ext_type(&crt, MBEDTLS_X509_EXT_SUBJECT_ALT_NAME) != 0;
  for (const mbedtls_x509_sequence* seq = &crt.subject_alt_names; seq != nullptr && seq->buf.p;
       seq = seq->next) {
    mbedtls_x509_subject_alternative_name san{};
    if (mbedtls_x509_parse_subject_alt_name(&seq->buf, &san) == 0) add_san(id, san);
    mbedtls_x509_free_subject_alt_name(&san);
  }
  mbedtls_sha256(crt.pk_raw.p, crt.pk_raw.len, id.spki.data(), 0);
  return id;
}

std::string to_hex(const spki_digest& d) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(64);
  for (auto b : d) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::string peer_identity::describe() const {
  if (!psk.empty()) return "PSK=" + psk;
  std::string out = "CN=" + cn;
  if (!dns.empty()) out += " DNS=" + join(dns);
  if (!uri.empty()) out += " URI=" + join(uri);
  if (!ip.empty()) out += " IP=" + join(ip);
  return out;
}

}  // namespace tunnel::policy
