#include <doctest/doctest.h>

#include <vector>

#include "net/udp_drops.hpp"
#include "net/udp_socket.hpp"
#include "tls/dtls_record.hpp"
#include "tls/handshake_flight.hpp"

using namespace tunnel;
using tls::record_kind;

namespace {

std::vector<std::uint8_t> header(std::uint8_t type, std::uint16_t epoch, std::uint8_t minor = 253) {
  return {type, 254, minor, static_cast<std::uint8_t>(epoch >> 8), static_cast<std::uint8_t>(epoch), 0, 0, 0, 0, 0, 1};
}

}  // namespace

TEST_CASE("a tls12_cid record yields the connection ID right after the sequence number") {
  auto d = header(25, 1);
  const std::vector<std::uint8_t> cid{1, 2, 3, 4, 5, 6, 7, 8};
  d.insert(d.end(), cid.begin(), cid.end());
  d.insert(d.end(), {0, 20});             // length
  d.insert(d.end(), 20, std::uint8_t{0xaa});
  const auto v = tls::classify_record(d, 8);
  CHECK(v.kind == record_kind::cid);
  CHECK(v.epoch == 1);
  REQUIRE(v.cid.size() == 8);
  CHECK(std::vector<std::uint8_t>(v.cid.begin(), v.cid.end()) == cid);
}

TEST_CASE("a tls12_cid record too short for its ID and length is invalid") {
  auto d = header(25, 1);
  d.insert(d.end(), {1, 2, 3, 4, 5, 6, 7, 8, 0});  // one length byte missing
  CHECK(tls::classify_record(d, 8).kind == record_kind::invalid);
  CHECK(tls::classify_record(d, 0).kind == record_kind::invalid);  // we hand out no IDs
}

TEST_CASE("an epoch-0 handshake record starting with a ClientHello is recognised") {
  auto d = header(22, 0);
  d.insert(d.end(), {0, 50});        // record length
  d.insert(d.end(), {1, 0, 0, 38});  // ClientHello, length
  d.insert(d.end(), 8, std::uint8_t{0});
  CHECK(tls::classify_record(d, 8).kind == record_kind::client_hello);
  d[2] = 255;  // DTLS 1.0 in the record version, as OpenSSL writes its first ClientHello
  CHECK(tls::classify_record(d, 8).kind == record_kind::client_hello);
}

TEST_CASE("other DTLS records are routed by address") {
  auto hs = header(22, 1);
  hs.insert(hs.end(), {0, 50, 1, 0, 0, 38, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(tls::classify_record(hs, 8).kind == record_kind::other);  // epoch 1: encrypted
  auto finished_epoch0 = header(22, 0);
  finished_epoch0.insert(finished_epoch0.end(), {0, 50, 16, 0, 0, 38, 0, 0, 0, 0, 0, 0, 0, 0});
  CHECK(tls::classify_record(finished_epoch0, 8).kind == record_kind::other);
  auto app = header(23, 1);
  app.insert(app.end(), {0, 0});
  CHECK(tls::classify_record(app, 8).kind == record_kind::other);
}

TEST_CASE("garbage is invalid: short, wrong version, unknown type") {
  CHECK(tls::classify_record({}, 8).kind == record_kind::invalid);
  auto d = header(23, 1);
  CHECK(tls::classify_record(d, 8).kind == record_kind::invalid);  // 11 bytes < header
  d.insert(d.end(), {0, 0});
  d[1] = 3;  // TLS, not DTLS
  CHECK(tls::classify_record(d, 8).kind == record_kind::invalid);
  auto unknown = header(99, 0);
  unknown.insert(unknown.end(), {0, 0});
  CHECK(tls::classify_record(unknown, 8).kind == record_kind::invalid);
}

TEST_CASE("endpoint keys tell addresses, ports and families apart") {
  using net::udp;
  const udp::endpoint a(asio::ip::make_address("127.0.0.1"), 5000);
  const udp::endpoint b(asio::ip::make_address("127.0.0.1"), 5001);
  const udp::endpoint c(asio::ip::make_address("127.0.0.2"), 5000);
  const udp::endpoint v6(asio::ip::make_address("::ffff:127.0.0.1"), 5000);
  CHECK(net::endpoint_key(a) == net::endpoint_key(udp::endpoint(asio::ip::make_address("127.0.0.1"), 5000)));
  CHECK(net::endpoint_key(a) != net::endpoint_key(b));
  CHECK(net::endpoint_key(a) != net::endpoint_key(c));
  CHECK(net::endpoint_key(a) != net::endpoint_key(v6));
  CHECK(net::describe(a) == "127.0.0.1:5000");
  CHECK(net::describe(udp::endpoint(asio::ip::make_address("::1"), 53)) == "[::1]:53");
}

TEST_CASE("a drop counter logs the first drop, then at most once per interval") {
  using namespace std::chrono_literals;
  net::drop_counter c(ops::udp_drop::other, 1s);
  const auto t0 = net::drop_counter::clock::time_point{} + 100s;
  CHECK(c.count(t0));
  CHECK(c.since_last_log() == 1);
  CHECK_FALSE(c.count(t0 + 100ms));
  CHECK_FALSE(c.count(t0 + 900ms));
  CHECK(c.count(t0 + 1s));
  CHECK(c.since_last_log() == 3);
  CHECK(c.total() == 4);
}

TEST_CASE("a resent handshake flight has the fingerprint of the first; another flight does not") {
  // Two records in one datagram: type, version, epoch, sequence number, length, body.
  const auto record = [](unsigned char seq, std::vector<unsigned char> body) {
    std::vector<unsigned char> r = {22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, seq, 0, static_cast<unsigned char>(body.size())};
    r.insert(r.end(), body.begin(), body.end());
    return r;
  };
  const auto datagram = [&](unsigned char first_seq, unsigned char last_byte) {
    auto d = record(first_seq, {1, 2, 3});
    const auto second = record(static_cast<unsigned char>(first_seq + 1), {4, 5, last_byte});
    d.insert(d.end(), second.begin(), second.end());
    return d;
  };
  const std::vector<std::vector<unsigned char>> first = {datagram(1, 6)}, resent = {datagram(7, 6)},
                                                other = {datagram(1, 9)};
  CHECK(tunnel::tls::flight_fingerprint(first) == tunnel::tls::flight_fingerprint(resent));
  CHECK(tunnel::tls::flight_fingerprint(first) != tunnel::tls::flight_fingerprint(other));
  CHECK(tunnel::tls::flight_fingerprint({}) == 0);
}

TEST_CASE("a resent flight's encrypted Finished counts by its length, and the guard lets one resend through per interval") {
  const auto record = [](unsigned char epoch, unsigned char seq, std::vector<unsigned char> body) {
    std::vector<unsigned char> r = {22, 0xfe, 0xfd, 0, epoch, 0, 0, 0, 0, 0, seq, 0, static_cast<unsigned char>(body.size())};
    r.insert(r.end(), body.begin(), body.end());
    return r;
  };
  const auto flight = [&](unsigned char seq, std::vector<unsigned char> finished) {
    auto d = record(0, seq, {11, 0, 1});  // a Certificate, in clear
    const auto fin = record(1, 0, std::move(finished));  // encrypted afresh in every resend
    d.insert(d.end(), fin.begin(), fin.end());
    return std::vector<std::vector<unsigned char>>{d};
  };
  using tunnel::tls::flight_fingerprint;
  CHECK(flight_fingerprint(flight(1, {0xaa, 0xbb})) == flight_fingerprint(flight(5, {0x17, 0x42})));
  CHECK(flight_fingerprint(flight(1, {0xaa, 0xbb})) != flight_fingerprint(flight(1, {0xaa, 0xbb, 0xcc})));

  tunnel::tls::flight_guard guard;
  const auto t0 = tunnel::tls::flight_guard::clock::now();
  CHECK(guard.allow(flight(1, {1, 2}), t0));
  CHECK_FALSE(guard.allow(flight(2, {3, 4}), t0 + std::chrono::milliseconds(100)));  // a copy asked again
  CHECK(guard.allow(flight(3, {5, 6}), t0 + std::chrono::milliseconds(600)));        // after the interval
  CHECK(guard.allow(flight(4, {7, 8, 9}), t0 + std::chrono::milliseconds(650)));     // another flight
}
