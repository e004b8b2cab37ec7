// bench_ceiling: what mbedTLS itself allows on one core of this machine.
//
//   bench_ceiling PKI_DIR [SECONDS]
//
// 1. AEAD bytes per second through PSA (what mbedTLS 3.6's TLS 1.3 record layer calls),
//    encrypt and decrypt, on 16 KiB buffers (one full TLS record):
//    ChaCha20-Poly1305, AES-128-GCM, AES-256-GCM.
// 2. CPU per full TLS 1.3 mutually authenticated handshake (ECDSA P-256 certificates from
//    PKI_DIR as made by `tunnel-certs init`, P-256 key exchange as the tunnel's defaults
//    pick it, ephemeral key exchange only, no tickets: what a first connection costs), client and server in this one thread over memory
//    buffers, so the figure is CPU time of both ends together, no I/O.
//
// Output: one "key value" pair per line (parsed by bench/report.py).
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/pk.h>
#include <mbedtls/error.h>
// psa_util.h lacks extern "C" guards in mbedTLS 3.6.
extern "C" {
#include <mbedtls/psa_util.h>
}
#include <psa/crypto.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

namespace {

double cpu_now() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

[[noreturn]] void fail(const char* what, int rc) {
  char buf[200];
  mbedtls_strerror(rc, buf, sizeof buf);
  std::fprintf(stderr, "bench_ceiling: %s: %d %s\n", what, rc, buf);
  std::exit(1);
}

struct aead_result {
  double enc_bps, dec_bps;
};

aead_result aead_rate(psa_key_type_t type, size_t bits, psa_algorithm_t alg, double seconds) {
  psa_key_attributes_t attr = PSA_KEY_ATTRIBUTES_INIT;
  psa_set_key_type(&attr, type);
  psa_set_key_bits(&attr, bits);
  psa_set_key_usage_flags(&attr, PSA_KEY_USAGE_ENCRYPT | PSA_KEY_USAGE_DECRYPT);
  psa_set_key_algorithm(&attr, alg);
  std::vector<uint8_t> key(bits / 8, 0x42);
  psa_key_id_t id;
  if (psa_status_t s = psa_import_key(&attr, key.data(), key.size(), &id); s != PSA_SUCCESS) fail("import", s);

  const size_t len = 16384;  // a full TLS record's plaintext
  std::vector<uint8_t> pt(len, 0xA5), ct(len + 16), out(len);
  uint8_t nonce[12] = {0};
  uint8_t aad[5] = {0x17, 0x03, 0x03, 0x40, 0x11};  // a TLS 1.3 record header
  size_t ct_len = 0, pt_len = 0;

  auto run = [&](bool enc) {
    uint64_t bytes = 0;
    double t0 = cpu_now(), t = t0;
    while (t - t0 < seconds) {
      for (int i = 0; i < 16; i++) {
        nonce[11]++;
        psa_status_t s;
        if (enc)
          s = psa_aead_encrypt(id, alg, nonce, 12, aad, 5, pt.data(), len, ct.data(), ct.size(), &ct_len);
        else
          s = psa_aead_decrypt(id, alg, nonce, 12, aad, 5, ct.data(), ct_len, out.data(), out.size(), &pt_len);
        if (s != PSA_SUCCESS) fail(enc ? "encrypt" : "decrypt", s);
        bytes += len;
      }
      t = cpu_now();
    }
    return bytes / (t - t0);
  };
  aead_result r{};
  r.enc_bps = run(true);
  // decrypt needs a valid tag for a fixed nonce: encrypt once with the nonce we decrypt with
  psa_aead_encrypt(id, alg, nonce, 12, aad, 5, pt.data(), len, ct.data(), ct.size(), &ct_len);
  auto dec_run = [&]() {
    uint64_t bytes = 0;
    double t0 = cpu_now(), t = t0;
    while (t - t0 < seconds) {
      for (int i = 0; i < 16; i++) {
        psa_status_t s = psa_aead_decrypt(id, alg, nonce, 12, aad, 5, ct.data(), ct_len, out.data(), out.size(), &pt_len);
        if (s != PSA_SUCCESS) fail("decrypt", s);
        bytes += len;
      }
      t = cpu_now();
    }
    return bytes / (t - t0);
  };
  r.dec_bps = dec_run();
  psa_destroy_key(id);
  return r;
}

// ---- handshake over memory buffers
struct pipe_buf {
  std::string data;
};
struct endpoint_io {
  pipe_buf* in;
  pipe_buf* out;
};

int bio_send(void* ctx, const unsigned char* buf, size_t len) {
  auto* io = static_cast<endpoint_io*>(ctx);
  io->out->data.append(reinterpret_cast<const char*>(buf), len);
  return static_cast<int>(len);
}
int bio_recv(void* ctx, unsigned char* buf, size_t len) {
  auto* io = static_cast<endpoint_io*>(ctx);
  if (io->in->data.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
  size_t n = std::min(len, io->in->data.size());
  std::memcpy(buf, io->in->data.data(), n);
  io->in->data.erase(0, n);
  return static_cast<int>(n);
}

const int suites[] = {MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256, MBEDTLS_TLS1_3_AES_256_GCM_SHA384,
                      MBEDTLS_TLS1_3_AES_128_GCM_SHA256, 0};
const uint16_t groups[] = {MBEDTLS_SSL_IANA_TLS_GROUP_SECP256R1, MBEDTLS_SSL_IANA_TLS_GROUP_X25519, 0};

struct side {
  mbedtls_ssl_config conf;
  mbedtls_x509_crt cert, ca;
  mbedtls_pk_context key;
};

void setup_side(side& s, bool server, const std::string& dir) {
  mbedtls_ssl_config_init(&s.conf);
  mbedtls_x509_crt_init(&s.cert);
  mbedtls_x509_crt_init(&s.ca);
  mbedtls_pk_init(&s.key);
  const std::string name = server ? "server" : "client";
  int rc;
  if ((rc = mbedtls_x509_crt_parse_file(&s.cert, (dir + "/" + name + ".crt").c_str()))) fail("cert", rc);
  if ((rc = mbedtls_x509_crt_parse_file(&s.ca, (dir + "/ca.crt").c_str()))) fail("ca", rc);
  if ((rc = mbedtls_pk_parse_keyfile(&s.key, (dir + "/" + name + ".key").c_str(), nullptr, mbedtls_psa_get_random,
                                     MBEDTLS_PSA_RANDOM_STATE)))
    fail("key", rc);
  if ((rc = mbedtls_ssl_config_defaults(&s.conf, server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                        MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT)))
    fail("defaults", rc);
  mbedtls_ssl_conf_rng(&s.conf, mbedtls_psa_get_random, MBEDTLS_PSA_RANDOM_STATE);
  mbedtls_ssl_conf_min_tls_version(&s.conf, MBEDTLS_SSL_VERSION_TLS1_3);
  mbedtls_ssl_conf_max_tls_version(&s.conf, MBEDTLS_SSL_VERSION_TLS1_3);
  mbedtls_ssl_conf_ciphersuites(&s.conf, suites);
  mbedtls_ssl_conf_groups(&s.conf, groups);
  mbedtls_ssl_conf_tls13_key_exchange_modes(&s.conf, MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL);
  mbedtls_ssl_conf_authmode(&s.conf, MBEDTLS_SSL_VERIFY_REQUIRED);
  mbedtls_ssl_conf_ca_chain(&s.conf, &s.ca, nullptr);
  if ((rc = mbedtls_ssl_conf_own_cert(&s.conf, &s.cert, &s.key))) fail("own cert", rc);
  if (server) mbedtls_ssl_conf_new_session_tickets(&s.conf, 0);
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
  if (!server) mbedtls_ssl_conf_session_tickets(&s.conf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
#endif
}

// One full handshake; returns CPU seconds spent in the client and in the server.
void one_handshake(side& cs, side& ss, double& cpu_client, double& cpu_server) {
  mbedtls_ssl_context c, s;
  mbedtls_ssl_init(&c);
  mbedtls_ssl_init(&s);
  pipe_buf c2s, s2c;
  endpoint_io cio{&s2c, &c2s}, sio{&c2s, &s2c};
  double t0 = cpu_now();
  int rc;
  if ((rc = mbedtls_ssl_setup(&c, &cs.conf))) fail("setup client", rc);
  if ((rc = mbedtls_ssl_set_hostname(&c, "localhost"))) fail("hostname", rc);
  mbedtls_ssl_set_bio(&c, &cio, bio_send, bio_recv, nullptr);
  double t1 = cpu_now();
  if ((rc = mbedtls_ssl_setup(&s, &ss.conf))) fail("setup server", rc);
  mbedtls_ssl_set_bio(&s, &sio, bio_send, bio_recv, nullptr);
  double t2 = cpu_now();
  cpu_client += t1 - t0;
  cpu_server += t2 - t1;
  for (int round = 0; round < 100; round++) {
    bool c_done = mbedtls_ssl_is_handshake_over(&c), s_done = mbedtls_ssl_is_handshake_over(&s);
    if (c_done && s_done) break;
    if (!c_done) {
      double a = cpu_now();
      rc = mbedtls_ssl_handshake(&c);
      cpu_client += cpu_now() - a;
      if (rc && rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE) fail("client handshake", rc);
    }
    if (!s_done) {
      double a = cpu_now();
      rc = mbedtls_ssl_handshake(&s);
      cpu_server += cpu_now() - a;
      if (rc && rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_WANT_WRITE) fail("server handshake", rc);
    }
  }
  if (!mbedtls_ssl_is_handshake_over(&c) || !mbedtls_ssl_is_handshake_over(&s)) fail("handshake stalled", -1);
  // Prove the keys match: one record each way.
  const unsigned char msg[] = "ping";
  unsigned char got[16];
  if (mbedtls_ssl_write(&c, msg, 4) != 4) fail("write", -1);
  int n = mbedtls_ssl_read(&s, got, sizeof got);
  if (n != 4 || std::memcmp(got, msg, 4) != 0) fail("read", n);
  double a = cpu_now();
  mbedtls_ssl_free(&c);
  double b = cpu_now();
  mbedtls_ssl_free(&s);
  cpu_client += b - a;
  cpu_server += cpu_now() - b;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_ceiling PKI_DIR [SECONDS]\n");
    return 2;
  }
  const std::string dir = argv[1];
  const double seconds = argc > 2 ? std::atof(argv[2]) : 1.0;
  if (psa_crypto_init() != PSA_SUCCESS) fail("psa_crypto_init", -1);

  std::printf("mbedtls_version %s\n", MBEDTLS_VERSION_STRING);
  auto cc = aead_rate(PSA_KEY_TYPE_CHACHA20, 256, PSA_ALG_CHACHA20_POLY1305, seconds);
  std::printf("chacha20_poly1305_encrypt_Bps %.0f\nchacha20_poly1305_decrypt_Bps %.0f\n", cc.enc_bps, cc.dec_bps);
  auto g128 = aead_rate(PSA_KEY_TYPE_AES, 128, PSA_ALG_GCM, seconds);
  std::printf("aes_128_gcm_encrypt_Bps %.0f\naes_128_gcm_decrypt_Bps %.0f\n", g128.enc_bps, g128.dec_bps);
  auto g256 = aead_rate(PSA_KEY_TYPE_AES, 256, PSA_ALG_GCM, seconds);
  std::printf("aes_256_gcm_encrypt_Bps %.0f\naes_256_gcm_decrypt_Bps %.0f\n", g256.enc_bps, g256.dec_bps);
  std::fflush(stdout);

  side cs, ss;
  setup_side(cs, false, dir);
  setup_side(ss, true, dir);
  double cc_cpu = 0, sc_cpu = 0;
  one_handshake(cs, ss, cc_cpu, sc_cpu);  // warm-up
  cc_cpu = sc_cpu = 0;
  int count = 0;
  double t0 = cpu_now();
  while (cpu_now() - t0 < 2 * seconds || count < 10) {
    one_handshake(cs, ss, cc_cpu, sc_cpu);
    count++;
  }
  std::printf("handshakes %d\n", count);
  std::printf("handshake_cpu_ms_both %.3f\n", 1000 * (cc_cpu + sc_cpu) / count);
  std::printf("handshake_cpu_ms_client %.3f\n", 1000 * cc_cpu / count);
  std::printf("handshake_cpu_ms_server %.3f\n", 1000 * sc_cpu / count);
  return 0;
}
