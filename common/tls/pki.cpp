#include "tls/pki.hpp"

#include <mbedtls/asn1write.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
extern "C" {
#include <mbedtls/psa_util.h>
}

#include <asio/ip/address.hpp>
#include <ctime>
#include <list>
#include <memory>
#include <stdexcept>

namespace tunnel::tls {
namespace {

void check(int rc, const char* what) {
  if (rc != 0) throw std::runtime_error(std::string("certificate generation failed: ") + what);
}

struct pk_holder {
  mbedtls_pk_context pk;
  pk_holder() { mbedtls_pk_init(&pk); }
  ~pk_holder() { mbedtls_pk_free(&pk); }
};

void generate_key(mbedtls_pk_context& pk) {
  check(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), "pk setup");
  check(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk), mbedtls_psa_get_random,
                            MBEDTLS_PSA_RANDOM_STATE),
        "key generation");
}

void parse_key(mbedtls_pk_context& pk, const std::string& pem) {
  check(mbedtls_pk_parse_key(&pk, reinterpret_cast<const unsigned char*>(pem.c_str()), pem.size() + 1,
                             nullptr, 0, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE),
        "issuer key");
}

std::string x509_time(std::chrono::hours offset) {
  const std::time_t t = std::time(nullptr) + std::chrono::duration_cast<std::chrono::seconds>(offset).count();
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y%m%d%H%M%S", &tm);
  return buf;
}

std::string subject_name(const std::string& cn) {
  // The writer parses "CN=..." strings; commas and quotes in a name would change its meaning.
  for (char c : cn)
    if (c == ',' || c == '=' || c == '"' || c == '\\' || c == '+')
      throw std::runtime_error("common name must not contain , = \" \\ +");
  return "CN=" + cn;
}

std::string pem_key(mbedtls_pk_context& pk) {
  std::string out(4096, '\0');
  check(mbedtls_pk_write_key_pem(&pk, reinterpret_cast<unsigned char*>(out.data()), out.size()), "write key");
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

issued write(const cert_request& req, mbedtls_pk_context& subject_key, mbedtls_pk_context& issuer_key,
             const std::string& issuer_name) {
  mbedtls_x509write_cert crt;
  mbedtls_x509write_crt_init(&crt);
  std::unique_ptr<mbedtls_x509write_cert, void (*)(mbedtls_x509write_cert*)> guard(&crt, mbedtls_x509write_crt_free);
  mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
  mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
  mbedtls_x509write_crt_set_subject_key(&crt, &subject_key);
  mbedtls_x509write_crt_set_issuer_key(&crt, &issuer_key);
  check(mbedtls_x509write_crt_set_subject_name(&crt, subject_name(req.common_name).c_str()), "subject");
  check(mbedtls_x509write_crt_set_issuer_name(&crt, issuer_name.c_str()), "issuer");
  unsigned char serial[16];
  check(mbedtls_psa_get_random(MBEDTLS_PSA_RANDOM_STATE, serial, sizeof serial), "serial");
  serial[0] &= 0x7f;  // positive INTEGER
  serial[0] |= 0x01;  // no leading zero byte
  check(mbedtls_x509write_crt_set_serial_raw(&crt, serial, sizeof serial), "serial");
  check(mbedtls_x509write_crt_set_validity(&crt, x509_time(req.not_before_offset).c_str(),
                                           x509_time(req.not_after_offset).c_str()),
        "validity");
  const bool is_ca = req.purpose == usage::ca;
  check(mbedtls_x509write_crt_set_basic_constraints(&crt, is_ca ? 1 : 0, is_ca ? -1 : 0), "basic constraints");
  check(mbedtls_x509write_crt_set_subject_key_identifier(&crt), "subject key id");
  check(mbedtls_x509write_crt_set_authority_key_identifier(&crt), "authority key id");
  check(mbedtls_x509write_crt_set_key_usage(&crt, is_ca ? (MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN)
                                                        : MBEDTLS_X509_KU_DIGITAL_SIGNATURE),
        "key usage");

  // Extended key usage: serverAuth / clientAuth, as the peers' libraries enforce them.
  std::list<mbedtls_asn1_sequence> eku;
  auto add_eku = [&](const char* oid, std::size_t len) {
    mbedtls_asn1_sequence s{};
    s.buf.tag = MBEDTLS_ASN1_OID;
    s.buf.p = reinterpret_cast<unsigned char*>(const_cast<char*>(oid));
    s.buf.len = len;
    eku.push_back(s);
  };
  if (req.purpose == usage::server || req.purpose == usage::server_and_client)
    add_eku(MBEDTLS_OID_SERVER_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH));
  if (req.purpose == usage::client || req.purpose == usage::server_and_client)
    add_eku(MBEDTLS_OID_CLIENT_AUTH, MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH));
  for (auto it = eku.begin(); it != eku.end(); ++it) {
    auto next = std::next(it);
    it->next = next == eku.end() ? nullptr : &*next;
  }
  if (!eku.empty()) check(mbedtls_x509write_crt_set_ext_key_usage(&crt, &eku.front()), "extended key usage");

  // Subject alternative names.
  std::list<mbedtls_x509_san_list> sans;
  std::list<std::vector<unsigned char>> ip_bytes;
  auto add_san = [&](int type, const unsigned char* p, std::size_t len) {
    mbedtls_x509_san_list node{};
    node.node.type = type;
    node.node.san.unstructured_name.p = const_cast<unsigned char*>(p);
    node.node.san.unstructured_name.len = len;
    sans.push_back(node);
  };
  for (const auto& d : req.dns)
    add_san(MBEDTLS_X509_SAN_DNS_NAME, reinterpret_cast<const unsigned char*>(d.data()), d.size());
  for (const auto& u : req.uri)
    add_san(MBEDTLS_X509_SAN_UNIFORM_RESOURCE_IDENTIFIER, reinterpret_cast<const unsigned char*>(u.data()), u.size());
  for (const auto& text : req.ip) {
    std::error_code ec;
    const auto addr = asio::ip::make_address(text, ec);
    if (ec) throw std::runtime_error("not an IP address: " + text);
    if (addr.is_v4()) {
      auto b = addr.to_v4().to_bytes();
      ip_bytes.emplace_back(b.begin(), b.end());
    } else {
      auto b = addr.to_v6().to_bytes();
      ip_bytes.emplace_back(b.begin(), b.end());
    }
    add_san(MBEDTLS_X509_SAN_IP_ADDRESS, ip_bytes.back().data(), ip_bytes.back().size());
  }
  for (auto it = sans.begin(); it != sans.end(); ++it) {
    auto next = std::next(it);
    it->next = next == sans.end() ? nullptr : &*next;
  }
  if (!sans.empty()) check(mbedtls_x509write_crt_set_subject_alternative_name(&crt, &sans.front()), "SAN");

  std::string pem(8192, '\0');
  check(mbedtls_x509write_crt_pem(&crt, reinterpret_cast<unsigned char*>(pem.data()), pem.size(),
                                  mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE),
        "write certificate");
  pem.resize(std::char_traits<char>::length(pem.c_str()));
  return {pem, pem_key(subject_key)};
}

std::string subject_of(const std::string& cert_pem) {
  mbedtls_x509_crt crt;
  mbedtls_x509_crt_init(&crt);
  const int rc = mbedtls_x509_crt_parse(&crt, reinterpret_cast<const unsigned char*>(cert_pem.c_str()),
                                        cert_pem.size() + 1);
  char name[512] = {};
  if (rc == 0) mbedtls_x509_dn_gets(name, sizeof name, &crt.subject);
  mbedtls_x509_crt_free(&crt);
  check(rc, "issuer certificate");
  return name;
}

}  // namespace

issued make_ca(const cert_request& req) {
  pk_holder key;
  generate_key(key.pk);
  cert_request ca = req;
  ca.purpose = usage::ca;
  return write(ca, key.pk, key.pk, subject_name(req.common_name));
}

issued issue(const cert_request& req, const issued& issuer) {
  pk_holder key, issuer_key;
  generate_key(key.pk);
  parse_key(issuer_key.pk, issuer.key_pem);
  return write(req, key.pk, issuer_key.pk, subject_of(issuer.cert_pem));
}

}  // namespace tunnel::tls
