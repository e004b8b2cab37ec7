// libFuzzer target for tunnel-out's first look at a connection: the ALPN offer read from the
// raw ClientHello (tls/client_hello) before any TLS context exists. Whatever arrives, it
// answers with one of its four verdicts and reads nothing outside the bytes given.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_check.hpp"
#include "tls/client_hello.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  const auto offer = tunnel::tls::offered_alpn(bytes, "tunnel-mux/1");
  using tunnel::tls::alpn_offer;
  fuzz::check(offer == alpn_offer::need_more || offer == alpn_offer::none || offer == alpn_offer::includes ||
                  offer == alpn_offer::excludes,
              "a verdict");
  // More bytes never turn a decided first record back into an undecided one.
  if (offer != alpn_offer::need_more && size > 0)
    fuzz::check(tunnel::tls::offered_alpn(bytes.first(size), "tunnel-mux/1") == offer, "stable");
  return 0;
}
