#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "proxy/header.hpp"

using namespace tunnel::proxy;

namespace {

std::span<const std::byte> as_span(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

std::string as_string(const std::vector<std::byte>& b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

const std::string v2_signature("\r\n\r\n\0\r\nQUIT\n", 12);

std::string v2_header(unsigned ver_cmd, unsigned fam, const std::string& body) {
  std::string h = v2_signature;
  h += static_cast<char>(ver_cmd);
  h += static_cast<char>(fam);
  h += static_cast<char>(body.size() >> 8);
  h += static_cast<char>(body.size() & 0xff);
  return h + body;
}

decoded decode_text(const std::string& s) { return decode(as_span(s)); }

ip_endpoint ep(const std::string& text) {
  auto e = parse_ip_endpoint(text);
  REQUIRE(e);
  return *e;
}

// Every strict prefix of a valid header asks for more; the whole decodes.
void check_prefixes_need_more(const std::string& header) {
  for (std::size_t n = 0; n < header.size(); ++n) {
    INFO("prefix of " << n << " bytes");
    CHECK(decode_text(header.substr(0, n)).status == decode_status::need_more);
  }
}

}  // namespace

TEST_CASE("v1: the specification's longest lines decode") {
  const std::string tcp4 = "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
  CHECK(tcp4.size() == 56);
  auto d = decode_text(tcp4);
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.ver == version::v1);
  CHECK(d.length == 56);
  REQUIRE(d.addr);
  CHECK(d.addr->source.to_string() == "255.255.255.255:65535");

  const std::string f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
  const std::string tcp6 = "PROXY TCP6 " + f + " " + f + " 65535 65535\r\n";
  CHECK(tcp6.size() == 104);
  d = decode_text(tcp6);
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.length == 104);
  REQUIRE(d.addr);
  CHECK(d.addr->destination.to_string() == "[" + f + "]:65535");

  d = decode_text("PROXY UNKNOWN\r\n");
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.length == 15);
  CHECK_FALSE(d.addr);

  const std::string worst = "PROXY UNKNOWN " + f + " " + f + " 65535 65535\r\n";
  CHECK(worst.size() == 107);
  d = decode_text(worst);
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.length == 107);
  CHECK_FALSE(d.addr);
}

TEST_CASE("v1: the specification's example, with the payload that follows it") {
  const std::string header = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
  const auto d = decode_text(header + "GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.length == header.size());
  REQUIRE(d.addr);
  CHECK(d.addr->source.to_string() == "192.168.0.1:56324");
  CHECK(d.addr->destination.to_string() == "192.168.0.11:443");
  CHECK_FALSE(d.addr->source.v6);
  check_prefixes_need_more(header);
}

TEST_CASE("v1: malformed lines are invalid, with a reason") {
  const char* bad[] = {
      "PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",   // leading zero
      "PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",    // port out of range
      "PROXY TCP4 192.168.0.1  192.168.0.11 1 443\r\n",       // two spaces
      "PROXY TCP4 192.168.0.1 192.168.0.11 1 443 \r\n",       // trailing space
      "PROXY TCP4 192.168.0.1 192.168.0.11 1 443 9\r\n",      // a sixth field
      "PROXY TCP4 192.168.0.1 192.168.0.11 1\r\n",            // a missing field
      "PROXY TCP4 ::1 ::1 1 2\r\n",                           // family mismatch
      "PROXY TCP6 10.0.0.1 10.0.0.2 1 2\r\n",                 // family mismatch
      "PROXY TCP4 10.0.0.1 10.0.0.2 1 2\n",                   // LF without CR
      "PROXY TCP4 010.0.0.1 10.0.0.2 1 2\r\n",                // octal-looking octet
      "PROXY UDP4 10.0.0.1 10.0.0.2 1 2\r\n",                 // not TCP
      "PROXY tcp4 10.0.0.1 10.0.0.2 1 2\r\n",                 // case matters
      "PROXY TCP4 example.com 10.0.0.2 1 2\r\n",              // names are not addresses
      "PROXY \r\n",
  };
  for (const char* line : bad) {
    INFO(line);
    const auto d = decode_text(line);
    CHECK(d.status == decode_status::invalid);
    CHECK(d.ver == version::v1);
    CHECK_FALSE(d.reason.empty());
  }
  const std::string with_nul("PROXY TCP4 10.0.0.1\0x 10.0.0.2 1 2\r\n", 36);
  CHECK(decode_text(with_nul).status == decode_status::invalid);
}

TEST_CASE("v1: a line without CRLF within 107 bytes is invalid, not need-more") {
  const std::string long_line = "PROXY UNKNOWN " + std::string(93, 'x');
  CHECK(long_line.size() == 107);
  CHECK(decode_text(long_line.substr(0, 106)).status == decode_status::need_more);
  const auto d = decode_text(long_line);
  CHECK(d.status == decode_status::invalid);
  CHECK(d.reason.find("107") != std::string::npos);
  CHECK(decode_text(long_line + "\r\n").status == decode_status::invalid);
}

TEST_CASE("anything else is refused at its first byte that cannot start a header") {
  CHECK(decode_text("").status == decode_status::need_more);
  CHECK(decode_text("GET / HTTP/1.1\r\n").status == decode_status::invalid);
  CHECK(decode_text("PROXZ").status == decode_status::invalid);
  CHECK(decode_text("PRO").status == decode_status::need_more);
  CHECK(decode_text(std::string("\r\n\r\n\0\r\nQUIT", 11)).status == decode_status::need_more);
  CHECK(decode_text(std::string("\r\n\r\n\0\r\nQUIX", 12)).status == decode_status::invalid);
  CHECK(decode_text("\x16\x03\x01").reason.find("does not start with a PROXY") != std::string::npos);
}

TEST_CASE("v2: TCP over IPv4, as a load balancer sends it, then payload") {
  // 172.19.0.1:42578 -> 172.19.0.3:80
  const std::string header = v2_header(0x21, 0x11, std::string("\xac\x13\x00\x01\xac\x13\x00\x03\xa6\x52\x00\x50", 12));
  CHECK(header.size() == 28);
  const auto d = decode_text(header + "GET / HTTP/1.1\r\n");
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.ver == version::v2);
  CHECK(d.length == 28);
  REQUIRE(d.addr);
  CHECK(d.addr->source.to_string() == "172.19.0.1:42578");
  CHECK(d.addr->destination.to_string() == "172.19.0.3:80");
  check_prefixes_need_more(header);
}

TEST_CASE("v2: TCP over IPv6, with TLVs that are skipped") {
  std::string body(16, '\0');
  body[15] = 1;  // ::1
  body += std::string("\x20\x01\x0d\xb8", 4) + std::string(11, '\0') + "\x02";  // 2001:db8::2
  body += std::string("\x30\x39\x01\xbb", 4);                                  // 12345 -> 443
  body += std::string("\x01\x00\x02h2", 5);                                     // ALPN TLV
  body += std::string("\x04\x00\x00", 3);                                       // empty NOOP TLV
  const auto d = decode_text(v2_header(0x21, 0x21, body));
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.length == 16 + body.size());
  REQUIRE(d.addr);
  CHECK(d.addr->source.to_string() == "[::1]:12345");
  CHECK(d.addr->destination.to_string() == "[2001:db8::2]:443");
}

TEST_CASE("v2: LOCAL, unspecified family and AF_UNIX carry no IP client") {
  auto d = decode_text(v2_header(0x20, 0x00, ""));
  REQUIRE(d.status == decode_status::complete);
  CHECK(d.length == 16);
  CHECK_FALSE(d.addr);
  // LOCAL ignores whatever address block it carries.
  d = decode_text(v2_header(0x20, 0x11, std::string(12, '\x01')));
  REQUIRE(d.status == decode_status::complete);
  CHECK_FALSE(d.addr);
  d = decode_text(v2_header(0x21, 0x00, "abc"));
  REQUIRE(d.status == decode_status::complete);
  CHECK_FALSE(d.addr);
  d = decode_text(v2_header(0x21, 0x31, std::string(216, '\0')));
  REQUIRE(d.status == decode_status::complete);
  CHECK_FALSE(d.addr);
}

TEST_CASE("v2: malformed headers are invalid, with a reason") {
  const std::string inet(12, '\x01');
  const std::pair<std::string, const char*> bad[] = {
      {v2_header(0x11, 0x11, inet), "version"},
      {v2_header(0x22, 0x11, inet), "command"},
      {v2_header(0x21, 0x41, inet), "family"},
      {v2_header(0x21, 0x13, inet), "family"},
      {v2_header(0x21, 0x12, inet), "TCP"},
      {v2_header(0x21, 0x10, inet), "TCP"},
      {v2_header(0x21, 0x11, inet.substr(0, 11)), "shorter"},
      {v2_header(0x21, 0x21, std::string(35, '\0')), "shorter"},
      {v2_header(0x21, 0x11, inet + std::string("\x01\x00\x05xy", 5)), "TLV"},
      {v2_header(0x21, 0x11, inet + std::string("\x01\x00", 2)), "TLV"},
  };
  for (const auto& [header, bad_word] : bad) {
    const char* word = bad_word;  // INFO captures it: clang 14 cannot capture a structured binding
    const auto d = decode_text(header);
    INFO(word);
    CHECK(d.status == decode_status::invalid);
    CHECK(d.ver == version::v2);
    CHECK(d.reason.find(word) != std::string::npos);
  }
}

TEST_CASE("v2: a header longer than the bound is refused before its body arrives") {
  std::string fixed = v2_header(0x21, 0x11, "");
  fixed[14] = static_cast<char>(0x08);  // 2049 bytes announced
  fixed[15] = static_cast<char>(0x01);
  const auto d = decode_text(fixed);
  CHECK(d.status == decode_status::invalid);
  CHECK(d.reason.find("longer") != std::string::npos);
  // Exactly at the bound is fine.
  const std::string body = std::string(12, '\x01') + std::string("\x04\x07\xf1", 3) + std::string(2033, '\0');
  CHECK(body.size() == max_v2_length - 16);
  CHECK(decode_text(v2_header(0x21, 0x11, body)).status == decode_status::complete);
}

TEST_CASE("encode: v1 and v2 headers decode back to the same addresses") {
  const addresses v4{ep("192.0.2.1:40000"), ep("198.51.100.7:443")};
  const addresses v6{ep("[2001:db8::1]:40000"), ep("[2001:db8::7]:443")};
  CHECK(as_string(encode(version::v1, v4)) == "PROXY TCP4 192.0.2.1 198.51.100.7 40000 443\r\n");
  CHECK(as_string(encode(version::v1, v6)) == "PROXY TCP6 2001:db8::1 2001:db8::7 40000 443\r\n");
  for (auto v : {version::v1, version::v2}) {
    for (const auto& a : {v4, v6}) {
      const auto wire = encode(v, a);
      const auto d = decode(wire);
      REQUIRE(d.status == decode_status::complete);
      CHECK(d.ver == v);
      CHECK(d.length == wire.size());
      REQUIRE(d.addr);
      CHECK(d.addr->source == a.source);
      CHECK(d.addr->destination == a.destination);
    }
  }
  CHECK(encode(version::v2, v4).size() == 28);
  CHECK(encode(version::v2, v6).size() == 52);
}

TEST_CASE("encode: no client address gives UNKNOWN (v1) and LOCAL (v2)") {
  CHECK(as_string(encode(version::v1, std::nullopt)) == "PROXY UNKNOWN\r\n");
  const auto local = encode(version::v2, std::nullopt);
  CHECK(as_string(local) == v2_signature + std::string("\x20\x00\x00\x00", 4));
  const auto d = decode(local);
  CHECK(d.status == decode_status::complete);
  CHECK_FALSE(d.addr);
}

TEST_CASE("encode: one family per header") {
  // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d: written as IPv4.
  const addresses mapped{ep("[::ffff:192.0.2.1]:1000"), ep("[::ffff:192.0.2.2]:2000")};
  CHECK(as_string(encode(version::v1, mapped)) == "PROXY TCP4 192.0.2.1 192.0.2.2 1000 2000\r\n");
  // Really different families: both as IPv6.
  const addresses mixed{ep("192.0.2.1:1000"), ep("[2001:db8::7]:443")};
  CHECK(as_string(encode(version::v1, mixed)) == "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::7 1000 443\r\n");
  const auto d = decode(encode(version::v2, mixed));
  REQUIRE(d.addr);
  CHECK(d.addr->source.v6);
  CHECK(unmapped(d.addr->source).to_string() == "192.0.2.1:1000");
}

TEST_CASE("ip endpoints parse only literal addresses with a port") {
  CHECK(ep("10.1.2.3:0").port == 0);
  CHECK(ep("[::1]:65535").to_string() == "[::1]:65535");
  for (const char* bad : {"10.1.2.3", "10.1.2.3:", "10.1.2.3:65536", "10.1.2.3:01", "::1:5", "[::1]5",
                          "[10.1.2.3]:5", "localhost:5", "unix:/tmp/x", "unix", "unknown", ""}) {
    INFO(bad);
    CHECK_FALSE(parse_ip_endpoint(bad));
  }
}

TEST_CASE("addresses a connection can leave from (--transparent)") {
  for (const char* usable : {"192.0.2.1:0", "[2001:db8::1]:0", "[::1]:0"}) CHECK(usable_as_source(ep(usable)));
  for (const char* refused : {"0.0.0.0:0", "0.1.2.3:0", "224.0.0.1:0", "239.255.255.250:0", "255.255.255.255:0",
                              "[::]:0", "[ff02::1]:0", "[::ffff:0.0.0.0]:0", "[::ffff:224.0.0.1]:0"})
    CHECK_MESSAGE(!usable_as_source(ep(refused)), refused);
}

TEST_CASE("addresses that name the same host from another one (a mux stream's origin)") {
  for (const char* elsewhere : {"192.0.2.1:1", "10.0.0.5:1", "[2001:db8::1]:1", "[::ffff:198.51.100.7]:1", "[fec0::1]:1"})
    CHECK_MESSAGE(meaningful_elsewhere(ep(elsewhere)), elsewhere);
  for (const char* local : {"127.0.0.1:1", "127.9.8.7:1", "169.254.1.2:1", "[::1]:1", "[fe80::1]:1", "[febf::2]:1",
                            "[::ffff:127.0.0.1]:1"})
    CHECK_MESSAGE(!meaningful_elsewhere(ep(local)), local);
}

TEST_CASE("address ranges: parsed strictly, matched by their prefix") {
  const auto range = [](const char* text) {
    auto r = parse_ip_prefix(text);
    REQUIRE_MESSAGE(r, text);
    return *r;
  };
  CHECK(contains(range("10.0.0.0/8"), ep("10.200.3.4:1")));
  CHECK_FALSE(contains(range("10.0.0.0/8"), ep("11.0.0.1:1")));
  CHECK(contains(range("192.0.2.7"), ep("192.0.2.7:9")));
  CHECK_FALSE(contains(range("192.0.2.7"), ep("192.0.2.8:9")));
  CHECK(contains(range("0.0.0.0/0"), ep("198.51.100.1:1")));
  CHECK(contains(range("10.0.0.0/8"), ep("[::ffff:10.1.2.3]:1")));  // IPv4-mapped counts as IPv4
  CHECK_FALSE(contains(range("10.0.0.0/8"), ep("[2001:db8::1]:1")));
  CHECK(contains(range("2001:db8::/32"), ep("[2001:db8:ffff::1]:1")));
  CHECK_FALSE(contains(range("2001:db8::/32"), ep("[2001:db9::1]:1")));
  CHECK(contains(range("10.1.2.0/23"), ep("10.1.3.255:1")));
  CHECK_FALSE(contains(range("10.1.2.0/23"), ep("10.1.4.0:1")));
  CHECK(range("2001:db8::/32").to_string() == "2001:db8::/32");
  CHECK(contains(range("::/0"), ep("10.1.2.3:1")));  // every address, IPv4 clients too
  CHECK(contains(range("::ffff:10.0.0.0/104"), ep("10.1.2.3:1")));
  CHECK_FALSE(contains(range("::ffff:10.0.0.0/104"), ep("11.1.2.3:1")));
  for (const char* bad : {"10.0.0.1/8", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/08", "::/129", "host/8", "10.0.0/8",
                          "10.0.0.0/-1", "", "/8"})
    CHECK_MESSAGE(!parse_ip_prefix(bad), bad);
}
