#include "tls/error.hpp"

#include <mbedtls/error.h>

#include <string>

namespace tunnel::tls {
namespace {

class mbedtls_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "mbedtls"; }
  std::string message(int value) const override {
    char text[160];
    mbedtls_strerror(-value, text, sizeof text);
    return text;
  }
};

class tls_error_category final : public std::error_category {
 public:
  const char* name() const noexcept override { return "tls"; }
  std::string message(int value) const override {
    switch (static_cast<tls_errc>(value)) {
      case tls_errc::truncated: return "connection ended without TLS close_notify";
      case tls_errc::peer_refused: return "peer certificate refused";
      case tls_errc::refused_after_handshake:
        return "the server ended the connection right after the handshake: it probably refused our "
               "certificate (see its log)";
      case tls_errc::record_overflow: return "record longer than TLS allows (record_overflow)";
    }
    return "unknown tls error";
  }
};

}  // namespace

const std::error_category& mbedtls_category() {
  static const mbedtls_error_category category;
  return category;
}

std::string describe_verify_failure(const mbedtls_ssl_context& ssl, role side, bool refused_by_policy) {
  if (refused_by_policy)
    return side == role::server ? "peer certificate not on the allow-list" : "server key does not match any pin";
  const std::uint32_t flags = mbedtls_ssl_get_verify_result(&ssl);
  if (flags == 0 || flags == static_cast<std::uint32_t>(-1)) return {};
  char text[512];
  const int n = mbedtls_x509_crt_verify_info(text, sizeof text, "", flags & ~MBEDTLS_X509_BADCERT_OTHER);
  std::string out = n > 0 ? std::string(text, static_cast<std::size_t>(n)) : std::string();
  for (auto& c : out)
    if (c == '\n') c = ';';
  while (!out.empty() && (out.back() == ';' || out.back() == ' ')) out.pop_back();
  return out;
}

std::error_code make_error_code(tls_errc e) {
  static const tls_error_category category;
  return {static_cast<int>(e), category};
}

std::string ciphersuite_name(const mbedtls_ssl_context& ssl) {
  const char* name = mbedtls_ssl_get_ciphersuite(&ssl);
  return name ? name : "";
}

}  // namespace tunnel::tls
