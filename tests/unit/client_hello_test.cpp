#include <doctest/doctest.h>

#include <vector>

#include "test_pki.hpp"
#include "tls/client_hello.hpp"
#include "tls/engine.hpp"

using namespace tunnel;
using tls::alpn_offer;

namespace {

// The first flight of a real mbedTLS client offering `alpn` (mux when `mux`).
std::vector<std::byte> client_hello(bool mux, std::vector<std::string> alpn = {}) {
  test::temp_pki pki;
  tls::tls_options opts;
  opts.side = tls::role::client;
  opts.server_name = "tunnel-out.test";
  opts.mux_alpn = mux;
  opts.alpn = std::move(alpn);
  auto files = pki.files("client", {.common_name = "client-a", .purpose = tls::usage::client});
  auto ctx = std::make_shared<tls::tls_context>(opts, tls::credentials::load(files));
  tls::engine e(ctx);
  e.handshake();
  const auto& out = e.output();
  return std::vector<std::byte>(reinterpret_cast<const std::byte*>(out.data()),
                                reinterpret_cast<const std::byte*>(out.data()) + out.size());
}

constexpr std::string_view mux = "tunnel-mux/1";

}  // namespace

TEST_CASE("a ClientHello offering mux, another protocol or none is told apart") {
  CHECK(tls::offered_alpn(client_hello(true), mux) == alpn_offer::includes);
  CHECK(tls::offered_alpn(client_hello(false, {"postgresql", "h2"}), mux) == alpn_offer::excludes);
  CHECK(tls::offered_alpn(client_hello(false), mux) == alpn_offer::none);
}

TEST_CASE("a ClientHello cut short needs more, and every prefix is handled") {
  const auto hello = client_hello(true);
  for (std::size_t n = 0; n < hello.size(); ++n)
    CHECK(tls::offered_alpn(std::span(hello).first(n), mux) == alpn_offer::need_more);
}

TEST_CASE("what is not a readable ClientHello is left to mbedTLS") {
  const auto as_bytes = [](std::string_view s) {
    return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                  reinterpret_cast<const std::byte*>(s.data()) + s.size());
  };
  CHECK(tls::offered_alpn(as_bytes("GET / HTTP/1.1\r\n\r\n"), mux) == alpn_offer::none);
  // A handshake record whose inner lengths overrun it, byte by byte corrupted.
  auto hello = client_hello(true);
  for (std::size_t i = 5; i < hello.size(); ++i) {
    auto bad = hello;
    bad[i] = std::byte{0xff};
    const auto offer = tls::offered_alpn(bad, mux);  // never reads out of bounds (ASan)
    CHECK((offer == alpn_offer::none || offer == alpn_offer::includes || offer == alpn_offer::excludes));
  }
}
