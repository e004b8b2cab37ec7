#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "mux/frame.hpp"

using namespace tunnel::mux;

namespace {

std::vector<std::byte> bytes(std::initializer_list<int> v) {
  std::vector<std::byte> out;
  for (int b : v) out.push_back(static_cast<std::byte>(b));
  return out;
}

std::span<const std::byte> as_span(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// Decodes the frames of a buffer one by one, each required to be well-formed.
struct frame_reader {
  std::span<const std::byte> in;
  frame operator()() {
    auto r = decode(in);
    REQUIRE(r.status == decode_status::ok);
    in = in.subspan(r.consumed);
    return r.f;
  }
  bool done() const { return in.empty(); }
};

}  // namespace

TEST_CASE("mux frames round-trip through the codec") {
  std::vector<std::byte> buf;
  const std::string payload(1000, 'x');
  encode_open(buf, 7, "default", "127.0.0.1:5555");
  encode_data(buf, 7, as_span(payload));
  encode_fin(buf, 7);
  encode_reset(buf, 9, reset_code::unreachable, "Connection refused");
  encode_window(buf, 0, 65536);
  encode_datagram(buf, 3, {});
  encode_ping(buf, 0x0102030405060708ull, false);
  encode_ping(buf, 42, true);
  encode_goaway(buf, 11, reset_code::shutdown, "bye");

  frame_reader next{buf};
  auto f = next();
  CHECK(f.type == frame_type::open);
  CHECK(f.stream == 7);
  CHECK(f.service == "default");
  CHECK(f.origin == "127.0.0.1:5555");
  f = next();
  CHECK(f.type == frame_type::data);
  CHECK(f.payload.size() == 1000);
  CHECK(next().type == frame_type::fin);
  f = next();
  CHECK(f.type == frame_type::reset);
  CHECK(f.code == reset_code::unreachable);
  CHECK(f.reason == "Connection refused");
  f = next();
  CHECK(f.type == frame_type::window);
  CHECK(f.stream == 0);
  CHECK(f.increment == 65536);
  f = next();
  CHECK(f.type == frame_type::datagram);
  CHECK(f.payload.empty());
  f = next();
  CHECK(f.type == frame_type::ping);
  CHECK(f.opaque == 0x0102030405060708ull);
  f = next();
  CHECK(f.type == frame_type::pong);
  CHECK(f.opaque == 42);
  f = next();
  CHECK(f.type == frame_type::goaway);
  CHECK(f.last_stream == 11);
  CHECK(f.code == reset_code::shutdown);
  CHECK(f.reason == "bye");
  CHECK(next.done());
}

TEST_CASE("mux decoder asks for more bytes on every strict prefix") {
  std::vector<std::byte> buf;
  encode_open(buf, 1, "default", "[::1]:40000");
  for (std::size_t n = 0; n < buf.size(); ++n)
    CHECK(decode(std::span<const std::byte>(buf).first(n)).status == decode_status::need_more);
  CHECK(decode(buf).status == decode_status::ok);
}

TEST_CASE("mux data frames are capped at one TLS record") {
  std::vector<std::byte> buf;
  const std::string big(max_frame_size * 2, 'y');
  encode_data(buf, 1, as_span(big));
  CHECK(buf.size() == max_frame_size);
  CHECK(decode(buf).f.payload.size() == max_payload);
}

TEST_CASE("mux decoder rejects malformed headers at once") {
  // Unknown type, reserved flags, and a length over the maximum are judged on the header
  // alone: the reader must not wait for a payload that never makes a frame.
  CHECK(decode(bytes({0, 0, 0, 0, 0, 0, 0, 1})).status == decode_status::bad_type);
  CHECK(decode(bytes({12, 0, 0, 0, 0, 0, 0, 1})).status == decode_status::bad_type);
  CHECK(decode(bytes({2, 1, 0, 1, 0, 0, 0, 1})).status == decode_status::bad_flags);
  CHECK(decode(bytes({2, 0, 0x3f, 0xf9, 0, 0, 0, 1})).status == decode_status::bad_length);
  CHECK(decode(bytes({2, 0, 0xff, 0xff, 0, 0, 0, 1})).status == decode_status::bad_length);
}

TEST_CASE("mux decoder checks each frame type's fields") {
  // DATA on stream 0, empty DATA
  CHECK(decode(bytes({2, 0, 0, 1, 0, 0, 0, 0, 'x'})).status == decode_status::bad_stream);
  CHECK(decode(bytes({2, 0, 0, 0, 0, 0, 0, 1})).status == decode_status::bad_length);
  // FIN with a payload
  CHECK(decode(bytes({3, 0, 0, 1, 0, 0, 0, 1, 0})).status == decode_status::bad_length);
  // WINDOW: zero increment, increment over 2^31-1, wrong size
  CHECK(decode(bytes({5, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0})).status == decode_status::bad_field);
  CHECK(decode(bytes({5, 0, 0, 4, 0, 0, 0, 1, 0x80, 0, 0, 0})).status == decode_status::bad_field);
  CHECK(decode(bytes({5, 0, 0, 3, 0, 0, 0, 1, 0, 0, 1})).status == decode_status::bad_length);
  // PING on a stream, PING of the wrong size
  CHECK(decode(bytes({7, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0})).status == decode_status::bad_stream);
  CHECK(decode(bytes({7, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0})).status == decode_status::bad_length);
  // RESET with an unknown code, RESET with a control character in its reason
  CHECK(decode(bytes({4, 0, 0, 1, 0, 0, 0, 1, 99})).status == decode_status::bad_field);
  CHECK(decode(bytes({4, 0, 0, 2, 0, 0, 0, 1, 0, '\n'})).status == decode_status::bad_field);
  // OPEN: empty service, bad service character, lengths that do not add up
  CHECK(decode(bytes({1, 0, 0, 2, 0, 0, 0, 1, 0, 0})).status == decode_status::bad_field);
  CHECK(decode(bytes({1, 0, 0, 3, 0, 0, 0, 1, 1, '/', 0})).status == decode_status::bad_field);
  CHECK(decode(bytes({1, 0, 0, 4, 0, 0, 0, 1, 1, 'a', 5, 'b'})).status == decode_status::bad_length);
  CHECK(decode(bytes({1, 0, 0, 4, 0, 0, 0, 0, 1, 'a', 0, 0})).status == decode_status::bad_stream);
  // GOAWAY too short
  CHECK(decode(bytes({9, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1})).status == decode_status::bad_length);
}

TEST_CASE("mux encoders cut texts to the protocol's bounds") {
  std::vector<std::byte> buf;
  encode_reset(buf, 1, reset_code::cancel, std::string(1000, 'r'));
  auto r = decode(buf);
  REQUIRE(r.status == decode_status::ok);
  CHECK(r.f.reason.size() == max_text);
  buf.clear();
  encode_open(buf, 1, std::string(100, 's'), std::string(300, 'o'));
  r = decode(buf);
  REQUIRE(r.status == decode_status::ok);
  CHECK(r.f.service.size() == max_service_name);
  CHECK(r.f.origin.size() == max_text);
}

TEST_CASE("mux encoders send any text as printable ASCII, so the peer never refuses the frame") {
  // A Unix peer's path can hold any byte but NUL: as an OPEN's origin it must not make the
  // peer end the whole connection with a protocol error.
  std::vector<std::byte> buf;
  encode_open(buf, 1, "pg", std::string("unix:/tmp/\xc3\xa9\nx\x7f", 15));
  encode_flow_open(buf, 1, "dns", std::string("unix:\x01", 6));
  encode_reset(buf, 1, reset_code::unreachable, "bad \x80 target");
  encode_goaway(buf, 0, reset_code::cancel, "bye\tnow");
  frame_reader next{buf};
  CHECK(next().origin == "unix:/tmp/???x?");
  CHECK(next().origin == "unix:?");
  CHECK(next().reason == "bad ? target");
  CHECK(next().reason == "bye?now");
  CHECK(next.done());
}

TEST_CASE("mux flow frames round-trip through the codec") {
  std::vector<std::byte> buf;
  const std::string datagram(max_payload, 'd');
  encode_flow_open(buf, 5, "syslog", "10.0.0.7:514");
  encode_datagram(buf, 5, as_span(datagram));
  encode_datagram(buf, 5, {});
  encode_flow_close(buf, 5, reset_code::timeout, "idle timeout");

  frame_reader next{buf};
  auto f = next();
  CHECK(f.type == frame_type::flow_open);
  CHECK(f.stream == 5);
  CHECK(f.service == "syslog");
  CHECK(f.origin == "10.0.0.7:514");
  f = next();
  CHECK(f.type == frame_type::datagram);
  CHECK(f.payload.size() == max_payload);  // the largest datagram fills one TLS record
  f = next();
  CHECK(f.type == frame_type::datagram);
  CHECK(f.payload.empty());  // an empty UDP datagram is carried too
  f = next();
  CHECK(f.type == frame_type::flow_close);
  CHECK(f.code == reset_code::timeout);
  CHECK(f.reason == "idle timeout");
  CHECK(next.done());
}

TEST_CASE("mux flow frames need a flow id and well-formed fields") {
  // DATAGRAM, FLOW_OPEN and FLOW_CLOSE on id 0
  CHECK(decode(bytes({6, 0, 0, 1, 0, 0, 0, 0, 'x'})).status == decode_status::bad_stream);
  CHECK(decode(bytes({10, 0, 0, 3, 0, 0, 0, 0, 1, 'a', 0})).status == decode_status::bad_stream);
  CHECK(decode(bytes({11, 0, 0, 1, 0, 0, 0, 0, 0})).status == decode_status::bad_stream);
  // FLOW_OPEN: empty service, bad character, lengths that do not add up, control character in the origin
  CHECK(decode(bytes({10, 0, 0, 2, 0, 0, 0, 1, 0, 0})).status == decode_status::bad_field);
  CHECK(decode(bytes({10, 0, 0, 3, 0, 0, 0, 1, 1, ' ', 0})).status == decode_status::bad_field);
  CHECK(decode(bytes({10, 0, 0, 4, 0, 0, 0, 1, 1, 'a', 2, 'b'})).status == decode_status::bad_length);
  CHECK(decode(bytes({10, 0, 0, 4, 0, 0, 0, 1, 1, 'a', 1, 0x7f})).status == decode_status::bad_field);
  // FLOW_CLOSE: empty, unknown code, unprintable reason
  CHECK(decode(bytes({11, 0, 0, 0, 0, 0, 0, 1})).status == decode_status::bad_length);
  CHECK(decode(bytes({11, 0, 0, 1, 0, 0, 0, 1, 8})).status == decode_status::bad_field);
  CHECK(decode(bytes({11, 0, 0, 2, 0, 0, 0, 1, 1, '\r'})).status == decode_status::bad_field);
  // A datagram over the maximum is judged on the header alone
  CHECK(decode(bytes({6, 0, 0x3f, 0xf9, 0, 0, 0, 1})).status == decode_status::bad_length);
}

TEST_CASE("mux datagram encoder never writes a frame larger than a record") {
  std::vector<std::byte> buf;
  const std::string big(max_payload + 100, 'z');
  encode_datagram(buf, 1, as_span(big));
  CHECK(buf.size() == max_frame_size);
}
