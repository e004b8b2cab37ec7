// libFuzzer target for the DTLS engine as tunnel-in's UDP relay drives it, facing a hostile
// tunnel-out: after our ClientHello every input datagram is fed and the handshake run, as
// the relay does per received datagram. In DTLS 1.2 the server's certificate travels in
// clear, so this reaches certificate parsing, our verify callback and the allow-list.
// The engine must fail or keep waiting: never crash, leak or loop.
//
// Input: the datagrams the "server" sends, each as a 2-byte big-endian length and that
// many bytes (a short last one takes what is left).
#include <mbedtls/ssl.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "fuzz_check.hpp"
#include "fuzz_pki.hpp"
#include "tls/context.hpp"
#include "tls/dtls_engine.hpp"

using namespace tunnel;

namespace {

constexpr std::uint16_t mtu = 1400;  // tunnel-in's default --udp-mtu

std::shared_ptr<const tls::tls_context> make_context() {
  tls::tls_options o;
  o.side = tls::role::client;
  o.carrier = tls::transport::datagram;
  o.server_name = "tunnel-out.fuzz";
  return std::make_shared<tls::tls_context>(o, fuzz::make_credentials().client);
}

// The next length-prefixed datagram of `in`, which it consumes.
std::span<const unsigned char> next_datagram(std::span<const unsigned char>& in) {
  if (in.size() < 2) {
    in = {};
    return {};
  }
  const std::size_t n = std::min<std::size_t>((in[0] << 8) | in[1], in.size() - 2);
  const auto d = in.subspan(2, n);
  in = in.subspan(2 + n);
  return d;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto context = make_context();
  tls::dtls_engine e(context, mtu);
  fuzz::check(e.enable_cid({}) == 0, "a client offers connection IDs");
  int rc = e.handshake();  // our ClientHello
  std::span<const unsigned char> in(data, size);
  while (rc == MBEDTLS_ERR_SSL_WANT_READ && !in.empty()) {
    e.output().clear();  // sent to the peer, who ignores it
    e.feed(next_datagram(in));
    rc = e.handshake();
  }
  fuzz::check(rc <= 0 && rc != MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED, "a client fails or waits");
  (void)e.verify_failure();  // what the relay logs of a failed handshake
  (void)e.ciphersuite();
  (void)e.version();
  return 0;
}
