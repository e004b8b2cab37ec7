#pragma once
// Credentials for the fuzz targets that drive real TLS/DTLS engines: a fresh CA, a server
// and a client certificate (so no key is ever checked in). credentials::load reads files,
// so they pass through a private temporary directory, removed once loaded.
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "tls/credentials.hpp"
#include "tls/pki.hpp"

namespace fuzz {

struct credential_pair {
  std::shared_ptr<tunnel::tls::credentials> server, client;
};

// The server's certificate names tunnel-out.fuzz; the client's CN is fuzz-client.
inline credential_pair make_credentials() {
  namespace fs = std::filesystem;
  namespace tls = tunnel::tls;
  spdlog::set_level(spdlog::level::off);  // expiry warnings about hostile certificates
  tls::init_library();
  std::string dir_template = (fs::temp_directory_path() / "tunnel-fuzz-XXXXXX").string();
  const fs::path dir = ::mkdtemp(dir_template.data());
  auto save = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  const auto ca = tls::make_ca({.common_name = "fuzz-ca"});
  const auto server = tls::issue({.common_name = "tunnel-out", .dns = {"tunnel-out.fuzz"},
                                  .purpose = tls::usage::server}, ca);
  const auto client = tls::issue({.common_name = "fuzz-client", .uri = {"spiffe://fuzz/client"},
                                  .purpose = tls::usage::client}, ca);
  const std::string ca_file = save("ca.crt", ca.cert_pem);
  credential_pair out{
      tls::credentials::load({save("server.crt", server.cert_pem), save("server.key", server.key_pem), ca_file}),
      tls::credentials::load({save("client.crt", client.cert_pem), save("client.key", client.key_pem), ca_file})};
  fs::remove_all(dir);
  return out;
}

}  // namespace fuzz
