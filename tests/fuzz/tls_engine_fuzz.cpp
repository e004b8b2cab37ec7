// libFuzzer target for the TLS engine facing a hostile peer: the input is what the peer
// sends, fed to a real engine (server or client, as tunnel-out and tunnel-in configure it)
// in pieces. The engine must end in an error or keep waiting for input: never crash,
// leak, loop, or wait for input while it still holds some (tls_stream would then read into
// a full buffer, forever).
//
// Input: one control byte, then the peer's bytes.
//   bit 0    0: we are the server (tunnel-out), 1: the client (tunnel-in)
//   bit 1    --tls-min 1.2 (else 1.3)
//   bit 2    mux ALPN offered/accepted
//   bits 3-7 k: bytes per delivery, k*k (0: everything at once)
#include <mbedtls/ssl.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

#include "fuzz_check.hpp"
#include "fuzz_pki.hpp"
#include "tls/context.hpp"
#include "tls/engine.hpp"

using namespace tunnel;

namespace {

constexpr std::size_t context_kinds = 8;  // bits 0-2 of the control byte

std::array<std::shared_ptr<const tls::tls_context>, context_kinds> make_contexts() {
  const auto creds = fuzz::make_credentials();
  std::array<std::shared_ptr<const tls::tls_context>, context_kinds> out;
  for (std::size_t kind = 0; kind < context_kinds; ++kind) {
    tls::tls_options o;
    const bool client_side = kind & 1;
    o.side = client_side ? tls::role::client : tls::role::server;
    o.min_version = (kind & 2) ? tls::version::tls1_2 : tls::version::tls1_3;
    o.mux_alpn = kind & 4;
    if (client_side) o.server_name = "tunnel-out.fuzz";
    else o.routes.front().allow.cn = {"fuzz-client"};  // an allow-list, so the policy check runs too
    out[kind] = std::make_shared<tls::tls_context>(o, client_side ? creds.client : creds.server);
  }
  return out;
}

const std::shared_ptr<const tls::tls_context>& context_for(std::uint8_t control) {
  static const auto contexts = make_contexts();
  return contexts[control % context_kinds];
}

// What the relays ask of an engine after a failed handshake, for the log line.
void describe(const tls::engine& e) {
  (void)e.verify_failure();
  (void)e.version();
  (void)e.ciphersuite();
  (void)e.alpn();
  (void)e.peer();
  (void)e.refused_by_policy();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const std::size_t k = control >> 3;
  const std::size_t chunk = k == 0 ? size : k * k;
  auto peer_bytes = fuzz::bytes(data + 1, size - 1);

  tls::engine e(context_for(control));
  int rc = e.handshake();  // a client sends its ClientHello now
  while (rc == MBEDTLS_ERR_SSL_WANT_READ && !peer_bytes.empty()) {
    e.output().clear();  // sent to the peer, who ignores it
    const auto space = e.input_space();
    fuzz::check(!space.empty(), "an engine waiting for input has room for it");
    const std::size_t n = std::min({chunk, space.size(), peer_bytes.size()});
    std::memcpy(space.data(), peer_bytes.data(), n);
    e.commit_input(n);
    peer_bytes = peer_bytes.subspan(n);
    rc = e.handshake();
  }
  fuzz::check(rc <= 0, "handshake() returns 0 or an mbedTLS error code");
  if (rc == 0) {
    // Only a peer holding our keys gets here; read what follows as the relay would.
    std::byte plain[1024];
    while (e.read(plain) > 0) {
    }
  }
  describe(e);
  return 0;
}
