#pragma once
// One immutable TLS configuration per role and service: the mbedTLS config built once at
// start, the credentials it points at, and the peer policy. Shared by all connections on
// all threads; never modified after construction.
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cookie.h>

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/allow_list.hpp"
#include "tls/credentials.hpp"
#include "tls/resumption.hpp"

namespace tunnel::tls {

enum class role { client, server };
enum class version { tls1_2, tls1_3 };
// stream: TLS over TCP; datagram: DTLS 1.2 over UDP (min_version is then ignored).
enum class transport { stream, datagram };

// Server: one service on this port and who may use it. With a single route every client
// lands on it and SNI is not consulted (any TLS client works); with several, the client's
// SNI (raw mode) or each stream's service name (mux mode) picks one.
struct route {
  std::string name;
  policy::allow_list allow;
};

struct tls_options {
  role side = role::server;
  version min_version = version::tls1_3;
  std::vector<route> routes{1};             // server: the services on this port (at least one)
  std::optional<std::string> server_name;   // client: name to verify (nullopt: pins only)
  // Client: the SNI to send when it names a service rather than the server (--service);
  // the server's certificate is then checked against server_name by us, not by mbedTLS.
  std::optional<std::string> sni;
  std::vector<policy::spki_digest> pins;    // client: accepted server keys (empty: any)
  transport carrier = transport::stream;
  // Mux mode (stream transport only): the client offers ALPN "tunnel-mux/1", the server
  // accepts it; a client offering no ALPN still gets plain TLS (raw mode).
  bool mux_alpn = false;
  // Warn when our own or a peer's certificate expires within this (--expiry-warning).
  std::chrono::seconds expiry_warning{14 * 24 * 3600};
  // A legacy leg of a TLS bridge (tunnel-out to a TLS target, tunnel-in accepting TLS from a
  // legacy client) rather than the tunnel itself: its own certificate is not the one the
  // expiry metric reports, and `verify_peer` may be off (a listener not asking legacy
  // clients for certificates). The tunnel's legs always verify.
  bool legacy_leg = false;
  bool verify_peer = true;
  // ALPN protocols to offer (client) or accept (server) besides mux; empty: none.
  std::vector<std::string> alpn;
  // TLS 1.3 resumption (tls/resumption.hpp) within this window; 0: a full handshake for
  // every connection. Only the tunnel's own certificate-authenticated TCP legs resume.
  std::chrono::seconds resumption{0};
};

// Server: the service a connection's SNI chose. The engine owns one and hangs it on its
// mbedTLS context as user data, where the SNI callback fills it in.
struct route_choice {
  std::optional<std::size_t> route;  // index into options().routes; nullopt: none (yet)
  std::string asked;                 // the SNI the client sent ("" when none)
};

class tls_context {
 public:
  // Builds the mbedTLS configuration. Throws std::runtime_error on an mbedTLS failure.
  tls_context(tls_options options, std::shared_ptr<credentials> creds);
  ~tls_context();
  tls_context(const tls_context&) = delete;
  tls_context& operator=(const tls_context&) = delete;

  const mbedtls_ssl_config* config() const { return &config_; }
  // Server with mux: the same configuration without ALPN, for clients that offer other
  // protocols only (see tls/client_hello.hpp). Otherwise config().
  const mbedtls_ssl_config* raw_config() const {
    return options_.side == role::server && options_.mux_alpn ? &raw_config_ : &config_;
  }
  const tls_options& options() const { return options_; }
  const credentials& creds() const { return *creds_; }

  // Client: the server's key matches a pin (or there are none). Server: `peer` may use
  // route `route` (an index into options().routes).
  bool admits(const policy::peer_identity& peer, std::size_t route = 0) const;
  // Server, mux connection: at least one route admits `peer` (each stream is then checked
  // against its own service).
  bool admits_any(const policy::peer_identity& peer) const;
  // Server: the route named `name` (ASCII case-insensitive). With a single route, that
  // route whatever the name. nullopt when no route matches.
  std::optional<std::size_t> find_route(std::string_view name) const;
  // Server: the route of a connection that names none (no SNI): the only one, if one.
  std::optional<std::size_t> default_route() const;
  // Client with resumption: the session the next connection offers. nullptr otherwise.
  session_cache* sessions() const { return sessions_.get(); }
  // With resumption: erases what has expired of its secrets now (the server's old ticket
  // keys, the client's old sessions) rather than at the next handshake. Returns how many.
  std::size_t forget_expired() const;
  // With resumption: erases every ticket key and saved session, and takes no new ones, once
  // a reload has replaced this context: no new connection may resume through it. (Const
  // like the handshakes that use them: the issuer and the cache lock their own state.)
  // `now`: what a handshake still running on this context must also pass at its end (the
  // source's current context, looked up then).
  void retire(std::function<std::shared_ptr<const tls_context>()> now) const;
  // A reload has replaced this context (retire() ran). A handshake that was still running
  // on it was judged by the old CA, CRL and allow-list; run_handshake checks it again
  // against replacement() (engine::admitted_after_reload), so that a peer the reload
  // revoked does not get in through a connection it had opened before.
  bool replaced() const;
  // The context in force now, for a replaced one; null when there is none to ask.
  std::shared_ptr<const tls_context> replacement() const;
  // What the chain check trusts: the CA bundle and CRL (or the pre-shared key), as a
  // digest. Two contexts with the same one reach the same verdict on any certificate chain.
  const std::array<unsigned char, 32>& trust_digest() const { return trust_; }
  // The chain check of this context on `chain`, outside a handshake: 0 when it passes.
  int verify_chain(mbedtls_x509_crt* chain) const;
  // Called on the context in force after a handshake that ran on `then`, which a reload
  // replaced: whether the peer's proof holds here too. `pass` when `then` authenticated no
  // peer, or checked a pre-shared key that is still the same; `fail` when the CA bundle or
  // CRL (or key) changed and `chain`, the peer's (null: none, or a resumed session), does
  // not verify against this context's; else `ask_allow_list`: the caller asks admits().
  enum class recheck { pass, fail, ask_allow_list };
  static constexpr const char* overtaken_refusal = "refused by the credentials reloaded during the handshake";
  recheck recheck_after_reload(const tls_context& then, const mbedtls_x509_crt* chain) const;

 private:
  tls_options options_;
  mutable std::mutex replaced_mutex_;  // guards now_
  mutable std::function<std::shared_ptr<const tls_context>()> now_;  // set by retire()
  std::array<unsigned char, 32> trust_{};
  void configure(mbedtls_ssl_config& config, bool mux_alpn);
  // DTLS only: cookies, connection IDs, retransmission, DTLS 1.2 suites.
  void configure_datagram(mbedtls_ssl_config& config, bool server);
  static int sni_cb(void* self, mbedtls_ssl_context* ssl, const unsigned char* name, std::size_t len);

  bool resumes() const;

  std::shared_ptr<credentials> creds_;
  std::unique_ptr<ticket_issuer> tickets_;   // server with resumption
  std::unique_ptr<session_cache> sessions_;  // client with resumption
  std::vector<const char*> alpn_list_;  // mbedTLS keeps the pointer: into options_.alpn
  mbedtls_ssl_cookie_ctx cookies_;  // DTLS server: HelloVerifyRequest secret
  mbedtls_ssl_config config_;
  mbedtls_ssl_config raw_config_;  // server with mux only
};

}  // namespace tunnel::tls
