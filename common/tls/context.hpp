#pragma once
// One immutable TLS configuration per role and service: the mbedTLS config built once at
// start, the credentials it points at, and the peer policy. Shared by all connections on
// all threads; never modified after construction.
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cookie.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "policy/allow_list.hpp"
#include "tls/credentials.hpp"

namespace tunnel::tls {

enum class role { client, server };
enum class version { tls1_2, tls1_3 };
// stream: TLS over TCP; datagram: DTLS 1.2 over UDP (min_version is then ignored).
enum class transport { stream, datagram };

struct tls_options {
  role side = role::server;
  version min_version = version::tls1_3;
  policy::allow_list allow;                 // server: who may connect
  std::optional<std::string> server_name;   // client: name to verify (nullopt: pins only)
  std::vector<policy::spki_digest> pins;    // client: accepted server keys (empty: any)
  transport carrier = transport::stream;
  // Mux mode (stream transport only): the client offers ALPN "tunnel-mux/1", the server
  // accepts it; a client offering no ALPN still gets plain TLS (raw mode).
  bool mux_alpn = false;
  // Warn when our own or a peer's certificate expires within this (--expiry-warning).
  std::chrono::seconds expiry_warning{14 * 24 * 3600};
};

class tls_context {
 public:
  // Builds the mbedTLS configuration. Throws std::runtime_error on an mbedTLS failure.
  tls_context(tls_options options, std::shared_ptr<credentials> creds);
  ~tls_context();
  tls_context(const tls_context&) = delete;
  tls_context& operator=(const tls_context&) = delete;

  const mbedtls_ssl_config* config() const { return &config_; }
  const tls_options& options() const { return options_; }
  const credentials& creds() const { return *creds_; }

  // Policy check on the peer's leaf certificate; true when admitted.
  bool admits(const policy::peer_identity& peer) const;

 private:
  tls_options options_;
  // DTLS only: cookies, connection IDs, retransmission, DTLS 1.2 suites.
  void configure_datagram(bool server);

  std::shared_ptr<credentials> creds_;
  mbedtls_ssl_cookie_ctx cookies_;  // DTLS server: HelloVerifyRequest secret
  mbedtls_ssl_config config_;
};

}  // namespace tunnel::tls
