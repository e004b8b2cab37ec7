#pragma once
// Fresh certificates for unit tests, written to a temporary directory (no checked-in keys).
#include <filesystem>
#include <fstream>
#include <string>

#include "tls/credentials.hpp"
#include "tls/pki.hpp"

namespace test {

class temp_pki {
 public:
  temp_pki() {
    dir_ = std::filesystem::temp_directory_path() /
           ("tunnel-unit-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(dir_);
    ca = tunnel::tls::make_ca({.common_name = "unit-ca"});
    foreign_ca = tunnel::tls::make_ca({.common_name = "foreign-ca"});
    save("ca.crt", ca.cert_pem);
    save("foreign-ca.crt", foreign_ca.cert_pem);
  }
  ~temp_pki() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Issues a certificate and returns the credential files for it, trusting `trust_ca`.
  tunnel::tls::credential_files files(const std::string& name, const tunnel::tls::cert_request& req,
                                      bool from_foreign_ca = false, const std::string& trust = "ca.crt") {
    const auto cert = tunnel::tls::issue(req, from_foreign_ca ? foreign_ca : ca);
    save(name + ".crt", cert.cert_pem);
    save(name + ".key", cert.key_pem);
    return {path(name + ".crt"), path(name + ".key"), path(trust)};
  }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  void save(const std::string& name, const std::string& text) { std::ofstream(dir_ / name) << text; }

  tunnel::tls::issued ca, foreign_ca;

 private:
  std::filesystem::path dir_;
  static inline int counter_ = 0;
};

}  // namespace test
