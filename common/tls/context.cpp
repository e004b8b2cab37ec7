#include "tls/context.hpp"

#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

// psa_util.h lacks extern "C" guards in mbedTLS 3.6.
extern "C" {
#include <mbedtls/psa_util.h>
}

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "tls/dtls_record.hpp"
#include "tls/psk_config.hpp"

namespace tunnel::tls {
namespace {

// mbedTLS keeps pointers to these arrays: they must outlive every config (static storage).
// ChaCha20-Poly1305 first: it is the faster AEAD in mbedTLS on x86.
const int tls13_and_12_suites[] = {
    MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
    MBEDTLS_TLS1_3_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    0};

// DTLS 1.2 has no TLS 1.3 suites; the same AEADs in the same order.
const int dtls12_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    0};

// DTLS retransmission: the first flight is resent after 1 s (RFC 6347's initial value),
// doubling up to 32 s; the service's handshake timeout usually ends a hopeless one sooner.
constexpr std::uint32_t dtls_retransmit_min_ms = 1000;
constexpr std::uint32_t dtls_retransmit_max_ms = 32000;

// mbedTLS keeps the pointer: static storage. (Must match mux::alpn_name.)
const char* mux_alpn_list[] = {"tunnel-mux/1", nullptr};

// Same order on both sides: the TLS 1.3 client sends one key share, a mismatch costs a
// HelloRetryRequest. P-256 first: mbedTLS 3.6 does a P-256 key generation and agreement in
// 0.85 ms of CPU on this class of machine, X25519 in 1.34 ms, and every handshake, resumed
// ones included, pays it on both ends. (A client offering X25519 still gets it.) P-256
// must be present anyway for TLS 1.2 with P-256 certificates.
const std::uint16_t groups[] = {MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1,
                                MBEDTLS_SSL_IANA_TLS_GROUP_X25519,
                                MBEDTLS_SSL_IANA_TLS_GROUP_SECP384R1, 0};

void check(int rc, const char* what) {
  if (rc != 0) throw std::runtime_error(std::string("TLS configuration failed: ") + what);
}

// The CA bundle and CRLs (or the pre-shared key) as one SHA-256: what the chain check
// depends on besides the allow-lists.
std::array<unsigned char, 32> digest_of_trust(credentials& creds) {
  mbedtls_sha256_context sha;
  mbedtls_sha256_init(&sha);
  mbedtls_sha256_starts(&sha, 0);
  const auto add = [&](const void* p, std::size_t n) {
    const std::uint64_t length = n;  // framed: no two lists of blobs hash alike
    mbedtls_sha256_update(&sha, reinterpret_cast<const unsigned char*>(&length), sizeof length);
    mbedtls_sha256_update(&sha, static_cast<const unsigned char*>(p), n);
  };
  if (const auto& psk = creds.psk()) {
    add(psk->identity.data(), psk->identity.size());
    add(psk->key.data(), psk->key.size());
  }
  if (creds.has_ca())
    for (const mbedtls_x509_crt* c = creds.ca(); c && c->raw.p; c = c->next) add(c->raw.p, c->raw.len);
  add("crl", 3);
  for (const mbedtls_x509_crl* c = creds.crl(); c && c->raw.p; c = c->next) add(c->raw.p, c->raw.len);
  std::array<unsigned char, 32> out{};
  mbedtls_sha256_finish(&sha, out.data());
  mbedtls_sha256_free(&sha);
  return out;
}

}  // namespace

tls_context::tls_context(tls_options options, std::shared_ptr<credentials> creds)
    : options_(std::move(options)), creds_(std::move(creds)) {
  mbedtls_ssl_config_init(&config_);
  mbedtls_ssl_config_init(&raw_config_);
  mbedtls_ssl_cookie_init(&cookies_);
  try {
    if (resumes()) {
      if (options_.side == role::server) tickets_ = std::make_unique<ticket_issuer>(options_.resumption);
      else sessions_ = std::make_unique<session_cache>(options_.resumption);
    }
    trust_ = digest_of_trust(*creds_);
    configure(config_, options_.mux_alpn);
    // A client offering other ALPN protocols only is served raw by a config that offers none
    // (mbedTLS would refuse it: it has no ALPN selection callback).
    if (options_.side == role::server && options_.mux_alpn) configure(raw_config_, false);
  } catch (...) {
    mbedtls_ssl_config_free(&config_);
    mbedtls_ssl_config_free(&raw_config_);
    mbedtls_ssl_cookie_free(&cookies_);
    throw;
  }
}

void tls_context::configure(mbedtls_ssl_config& config, bool mux_alpn) {
  const bool server = options_.side == role::server;
  check(mbedtls_ssl_config_defaults(&config, server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                    options_.carrier == transport::datagram ? MBEDTLS_SSL_TRANSPORT_DATAGRAM
                                                                            : MBEDTLS_SSL_TRANSPORT_STREAM,
                                    MBEDTLS_SSL_PRESET_DEFAULT),
        "defaults");
  mbedtls_ssl_conf_rng(&config, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
  mbedtls_ssl_conf_min_tls_version(&config, options_.min_version == version::tls1_2
                                                 ? MBEDTLS_SSL_VERSION_TLS1_2
                                                 : MBEDTLS_SSL_VERSION_TLS1_3);
  mbedtls_ssl_conf_max_tls_version(&config, MBEDTLS_SSL_VERSION_TLS1_3);
  mbedtls_ssl_conf_ciphersuites(&config, tls13_and_12_suites);
  mbedtls_ssl_conf_groups(&config, groups);
  // Pure PSK modes have no forward secrecy: certificates use the ephemeral mode, and a
  // resumed session psk_dhe_ke, which runs a fresh ECDHE too.
  mbedtls_ssl_conf_tls13_key_exchange_modes(
      &config, resumes() ? MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ALL : MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL);
  // Mutual authentication both ways (the server default would be NONE). Only a legacy
  // leg may go without, and then only by asking for it.
  if (options_.verify_peer && !creds_->psk() && !creds_->has_ca())
    throw std::runtime_error("TLS configuration failed: peer verification without a CA");
  mbedtls_ssl_conf_authmode(&config, options_.verify_peer ? MBEDTLS_SSL_VERIFY_REQUIRED : MBEDTLS_SSL_VERIFY_NONE);
  if (!creds_->psk()) {
    // Without a CRL mbedTLS silently skips revocation checks; with one, a revoked peer fails.
    if (creds_->has_ca()) mbedtls_ssl_conf_ca_chain(&config, creds_->ca(), creds_->crl());
    if (creds_->has_own_cert())
      check(mbedtls_ssl_conf_own_cert(&config, creds_->chain(), creds_->key()), "own certificate");
  }
  mbedtls_ssl_conf_renegotiation(&config, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
  // Resumption only as tls/resumption.hpp does it (a resumed TLS 1.3 session in mbedTLS
  // carries no certificate, so the identity travels in our own tickets); TLS 1.2 tickets never.
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
  if (server) {
    if (tickets_) mbedtls_ssl_conf_session_tickets_cb(&config, ticket_issuer::write, ticket_issuer::parse, tickets_.get());
    // Four after a full handshake (mbedTLS sends one after a resumed one): tunnel-in offers
    // each ticket once (tls/resumption.hpp).
    mbedtls_ssl_conf_new_session_tickets(&config, tickets_ ? 4 : 0);
  } else {
    mbedtls_ssl_conf_session_tickets(&config, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
    if (sessions_)
      mbedtls_ssl_conf_tls13_enable_signal_new_session_tickets(&config, MBEDTLS_SSL_TLS1_3_SIGNAL_NEW_SESSION_TICKETS_ENABLED);
  }
#endif
  // Several services on one port: the ClientHello's SNI picks one, an unknown name is
  // refused there (unrecognized_name), before any certificate is even looked at.
  if (server && options_.routes.size() > 1) mbedtls_ssl_conf_sni(&config, sni_cb, this);
  if (options_.carrier == transport::datagram) configure_datagram(config, server);
  else if (mux_alpn) check(mbedtls_ssl_conf_alpn_protocols(&config, mux_alpn_list), "ALPN");
  else if (!options_.alpn.empty()) {
    if (alpn_list_.empty()) {
      for (const auto& protocol : options_.alpn) alpn_list_.push_back(protocol.c_str());
      alpn_list_.push_back(nullptr);
    }
    check(mbedtls_ssl_conf_alpn_protocols(&config, alpn_list_.data()), "ALPN");
  }
  // Last: PSK mode replaces the certificate suites and key exchange modes chosen above.
  if (creds_->psk())
    check(configure_psk(config, *creds_->psk(), options_.carrier, options_.min_version), "pre-shared key");
}

std::size_t tls_context::forget_expired() const {
  return (tickets_ ? tickets_->forget_expired() : 0) + (sessions_ ? sessions_->forget_expired() : 0);
}

void tls_context::retire(std::function<std::shared_ptr<const tls_context>()> now) const {
  {
    std::lock_guard lock(replaced_mutex_);
    now_ = std::move(now);
  }
  if (tickets_) tickets_->retire();
  if (sessions_) sessions_->retire();
}

bool tls_context::replaced() const {
  std::lock_guard lock(replaced_mutex_);
  return static_cast<bool>(now_);
}

std::shared_ptr<const tls_context> tls_context::replacement() const {
  std::function<std::shared_ptr<const tls_context>()> now;
  {
    std::lock_guard lock(replaced_mutex_);
    now = now_;
  }
  return now ? now() : nullptr;
}

int tls_context::verify_chain(mbedtls_x509_crt* chain) const {
  if (!creds_->has_ca()) return MBEDTLS_ERR_X509_CERT_VERIFY_FAILED;
  std::uint32_t flags = 0;
  // The profile of MBEDTLS_SSL_PRESET_DEFAULT, which the handshakes use.
  return mbedtls_x509_crt_verify_with_profile(chain, creds_->ca(), creds_->crl(), &mbedtls_x509_crt_profile_default,
                                              nullptr, &flags, nullptr, nullptr);
}

tls_context::recheck tls_context::recheck_after_reload(const tls_context& then, const mbedtls_x509_crt* chain) const {
  const bool psk = then.creds().psk().has_value();
  if (!then.options().verify_peer && !psk) return recheck::pass;  // that leg authenticated no peer
  if (trust_digest() != then.trust_digest()) {
    // mbedTLS takes the chain non-const; verification does not change it.
    if (psk || !chain || verify_chain(const_cast<mbedtls_x509_crt*>(chain)) != 0) return recheck::fail;
  }
  return psk ? recheck::pass : recheck::ask_allow_list;  // a PSK is its own identity
}

bool tls_context::resumes() const {
  return options_.resumption.count() > 0 && options_.carrier == transport::stream && !options_.legacy_leg &&
         options_.verify_peer && !creds_->psk();
}

tls_context::~tls_context() {
  mbedtls_ssl_config_free(&config_);
  mbedtls_ssl_config_free(&raw_config_);
  mbedtls_ssl_cookie_free(&cookies_);
}

void tls_context::configure_datagram(mbedtls_ssl_config& config, bool server) {
  mbedtls_ssl_conf_min_tls_version(&config, MBEDTLS_SSL_VERSION_TLS1_2);
  mbedtls_ssl_conf_max_tls_version(&config, MBEDTLS_SSL_VERSION_TLS1_2);
  mbedtls_ssl_conf_ciphersuites(&config, dtls12_suites);
  mbedtls_ssl_conf_handshake_timeout(&config, dtls_retransmit_min_ms, dtls_retransmit_max_ms);
  mbedtls_ssl_conf_dtls_anti_replay(&config, MBEDTLS_SSL_ANTI_REPLAY_ENABLED);
  // The server hands out connection IDs so a flow survives its client's address changing;
  // the client asks for none (it reads on a connected socket) but accepts the server's.
  check(mbedtls_ssl_conf_cid(&config, server ? server_cid_length : 0, MBEDTLS_SSL_UNEXPECTED_CID_IGNORE),
        "connection ID");
  if (server) {
    // Cookies always: a server that answers an unverified ClientHello with its certificate
    // chain is an amplifier. mbedTLS's built-in cookie callbacks fail on purpose.
    check(mbedtls_ssl_cookie_setup(&cookies_, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE), "cookies");
    mbedtls_ssl_conf_dtls_cookies(&config, mbedtls_ssl_cookie_write, mbedtls_ssl_cookie_check, &cookies_);
  }
}

bool tls_context::admits(const policy::peer_identity& peer, std::size_t route) const {
  if (options_.side == role::server) return route < options_.routes.size() && options_.routes[route].allow.allows(peer);
  if (options_.pins.empty()) return true;
  return std::find(options_.pins.begin(), options_.pins.end(), peer.spki) != options_.pins.end();
}

bool tls_context::admits_any(const policy::peer_identity& peer) const {
  return std::any_of(options_.routes.begin(), options_.routes.end(),
                     [&](const route& r) { return r.allow.allows(peer); });
}

std::optional<std::size_t> tls_context::find_route(std::string_view name) const {
  if (options_.routes.size() == 1) return 0;
  for (std::size_t i = 0; i < options_.routes.size(); ++i) {
    const auto& n = options_.routes[i].name;
    if (n.size() == name.size() && std::equal(n.begin(), n.end(), name.begin(), [](char a, char b) {
          return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
        }))
      return i;
  }
  return std::nullopt;
}

std::optional<std::size_t> tls_context::default_route() const {
  if (options_.routes.size() == 1) return 0;
  return std::nullopt;
}

int tls_context::sni_cb(void* self, mbedtls_ssl_context* ssl, const unsigned char* name, std::size_t len) {
  auto* ctx = static_cast<tls_context*>(self);
  const std::string_view wanted(reinterpret_cast<const char*>(name), len);
  const auto route = ctx->find_route(wanted);
  if (auto* choice = static_cast<route_choice*>(mbedtls_ssl_get_user_data_p(ssl))) {
    choice->route = route;
    choice->asked.assign(wanted.substr(0, 255));
  }
  return route ? 0 : -1;
}

}  // namespace tunnel::tls
