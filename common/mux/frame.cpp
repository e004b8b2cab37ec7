#include "mux/frame.hpp"

#include <algorithm>
#include <string>

#include "codec/bytes.hpp"

namespace tunnel::mux {
namespace {

// Appends a frame header; returns a writer for the payload.
codec::writer header(std::vector<std::byte>& out, frame_type t, std::size_t length, std::uint32_t stream) {
  codec::writer w(out);
  w.u8(static_cast<std::uint8_t>(t));
  w.u8(0);  // flags: none defined in version 1
  w.u16(static_cast<std::uint16_t>(length));
  w.u32(stream);
  return w;
}

// Texts cross into log lines: printable ASCII only (the logger escapes anyway). The decoder
// refuses any other byte and the encoders replace it (sendable_text), by this one rule.
bool printable_char(char c) { return c >= 0x20 && c <= 0x7e; }

bool printable(std::string_view s) { return std::all_of(s.begin(), s.end(), printable_char); }

bool service_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

std::string_view clamp_text(std::string_view s, std::size_t limit = max_text) {
  return s.substr(0, std::min(s.size(), limit));
}

// A text as the receiver takes it: clamped, and every byte outside printable ASCII a '?'.
// (An origin can be a Unix peer's path, which holds any byte but NUL; a frame the peer
// refuses would end the whole connection.)
std::string sendable_text(std::string_view s) {
  std::string out(clamp_text(s));
  std::replace_if(out.begin(), out.end(), [](char c) { return !printable_char(c); }, '?');
  return out;
}

static_assert(max_text <= 0xFF && max_service_name <= 0xFF, "texts carry a one-byte length");

// OPEN and FLOW_OPEN share a payload: the service name and the legacy client's address.
void put_open(std::vector<std::byte>& out, frame_type t, std::uint32_t id, std::string_view service,
              std::string_view origin) {
  service = clamp_text(service, max_service_name);
  const std::string origin_text = sendable_text(origin);
  origin = origin_text;
  auto w = header(out, t, 2 + service.size() + origin.size(), id);
  // Clamped above to lengths that fit their one-byte prefix.
  w.u8(static_cast<std::uint8_t>(service.size()));
  w.raw(service);
  w.u8(static_cast<std::uint8_t>(origin.size()));
  w.raw(origin);
}

// RESET and FLOW_CLOSE share a payload: a code and a reason.
void put_reason(std::vector<std::byte>& out, frame_type t, std::uint32_t id, reset_code code, std::string_view reason) {
  const std::string reason_text = sendable_text(reason);
  reason = reason_text;
  auto w = header(out, t, 1 + reason.size(), id);
  w.u8(static_cast<std::uint8_t>(code));
  w.raw(reason);
}

decode_status parse_open(std::span<const std::byte> p, frame& f) {
  if (p.size() < 2) return decode_status::bad_length;
  codec::reader r(p);
  const std::size_t service_len = r.u8();
  if (service_len == 0 || service_len > max_service_name) return decode_status::bad_field;
  const auto service = codec::as_text(r.take(service_len));
  const auto origin = codec::as_text(r.prefixed<1>());
  if (r.failed() || !r.empty()) return decode_status::bad_length;  // the payload is exactly the two texts
  if (!std::all_of(service.begin(), service.end(), service_char)) return decode_status::bad_field;
  if (!printable(origin)) return decode_status::bad_field;
  f.service = service;
  f.origin = origin;
  return decode_status::ok;
}

decode_status parse_reason(std::span<const std::byte> p, frame& f) {
  const auto code = std::to_integer<std::uint8_t>(p[0]);
  if (code > static_cast<std::uint8_t>(reset_code::last_)) return decode_status::bad_field;
  f.code = static_cast<reset_code>(code);
  f.reason = codec::as_text(p.subspan(1));
  if (f.reason.size() > max_text || !printable(f.reason)) return decode_status::bad_field;
  return decode_status::ok;
}

decode_status parse_payload(std::span<const std::byte> p, frame& f) {
  const bool has_stream = f.stream != 0;
  switch (f.type) {
    case frame_type::open:
      if (!has_stream) return decode_status::bad_stream;
      return parse_open(p, f);
    case frame_type::data:
      if (!has_stream) return decode_status::bad_stream;
      if (p.empty()) return decode_status::bad_length;
      f.payload = p;
      return decode_status::ok;
    case frame_type::fin:
      if (!has_stream) return decode_status::bad_stream;
      return p.empty() ? decode_status::ok : decode_status::bad_length;
    case frame_type::reset:
      if (!has_stream) return decode_status::bad_stream;
      if (p.empty()) return decode_status::bad_length;
      return parse_reason(p, f);
    case frame_type::window:
      if (p.size() != 4) return decode_status::bad_length;
      f.increment = codec::load_be<std::uint32_t>(p.data());
      if (f.increment == 0 || f.increment > max_window) return decode_status::bad_field;
      return decode_status::ok;
    case frame_type::datagram:
      if (!has_stream) return decode_status::bad_stream;
      f.payload = p;  // an empty datagram is a valid UDP datagram
      return decode_status::ok;
    case frame_type::flow_open:
      if (!has_stream) return decode_status::bad_stream;
      return parse_open(p, f);
    case frame_type::flow_close:
      if (!has_stream) return decode_status::bad_stream;
      if (p.empty()) return decode_status::bad_length;
      return parse_reason(p, f);
    case frame_type::ping:
    case frame_type::pong:
      if (has_stream) return decode_status::bad_stream;
      if (p.size() != 8) return decode_status::bad_length;
      f.opaque = codec::load_be<std::uint64_t>(p.data());
      return decode_status::ok;
    case frame_type::goaway:
      if (has_stream) return decode_status::bad_stream;
      if (p.size() < 5) return decode_status::bad_length;
      f.last_stream = codec::load_be<std::uint32_t>(p.data());
      return parse_reason(p.subspan(4), f);
  }
  return decode_status::bad_type;
}

}  // namespace

decode_result decode(std::span<const std::byte> in) {
  decode_result r;
  if (in.size() < header_size) return r;  // need_more
  const auto type = std::to_integer<std::uint8_t>(in[0]);
  const auto flags = std::to_integer<std::uint8_t>(in[1]);
  const std::size_t length = codec::load_be<std::uint16_t>(in.data() + 2);
  // Judge the header before waiting for the payload: a bad length must not make the
  // reader wait for bytes that will never form a frame.
  if (type < static_cast<std::uint8_t>(frame_type::open) || type > static_cast<std::uint8_t>(frame_type::last_)) {
    r.status = decode_status::bad_type;
    return r;
  }
  if (flags != 0) {
    r.status = decode_status::bad_flags;
    return r;
  }
  if (length > max_payload) {
    r.status = decode_status::bad_length;
    return r;
  }
  if (in.size() < header_size + length) return r;  // need_more
  r.f.type = static_cast<frame_type>(type);
  r.f.stream = codec::load_be<std::uint32_t>(in.data() + 4);
  r.status = parse_payload(in.subspan(header_size, length), r.f);
  if (r.status == decode_status::ok) r.consumed = header_size + length;
  else r.f = frame{};
  return r;
}

const char* describe(decode_status s) {
  switch (s) {
    case decode_status::ok: return "ok";
    case decode_status::need_more: return "incomplete frame";
    case decode_status::bad_type: return "unknown frame type";
    case decode_status::bad_flags: return "reserved flags set";
    case decode_status::bad_length: return "bad frame length";
    case decode_status::bad_stream: return "bad stream id";
    case decode_status::bad_field: return "bad frame field";
  }
  return "?";
}

const char* describe(reset_code c) {
  switch (c) {
    case reset_code::cancel: return "cancelled";
    case reset_code::refused: return "refused";
    case reset_code::unreachable: return "target unreachable";
    case reset_code::limit: return "limit reached";
    case reset_code::timeout: return "timeout";
    case reset_code::protocol: return "protocol error";
    case reset_code::shutdown: return "shutting down";
    case reset_code::internal: return "internal error";
  }
  return "?";
}

void encode_open(std::vector<std::byte>& out, std::uint32_t stream, std::string_view service,
                 std::string_view origin) {
  put_open(out, frame_type::open, stream, service, origin);
}

void encode_data(std::vector<std::byte>& out, std::uint32_t stream, std::span<const std::byte> data) {
  data = data.first(std::min(data.size(), max_payload));
  header(out, frame_type::data, data.size(), stream).raw(data);
}

void encode_fin(std::vector<std::byte>& out, std::uint32_t stream) { header(out, frame_type::fin, 0, stream); }

void encode_reset(std::vector<std::byte>& out, std::uint32_t stream, reset_code code, std::string_view reason) {
  put_reason(out, frame_type::reset, stream, code, reason);
}

void encode_window(std::vector<std::byte>& out, std::uint32_t stream, std::uint32_t increment) {
  header(out, frame_type::window, 4, stream).u32(increment);
}

void encode_datagram(std::vector<std::byte>& out, std::uint32_t flow, std::span<const std::byte> data) {
  data = data.first(std::min(data.size(), max_payload));
  header(out, frame_type::datagram, data.size(), flow).raw(data);
}

void encode_flow_open(std::vector<std::byte>& out, std::uint32_t flow, std::string_view service,
                      std::string_view origin) {
  put_open(out, frame_type::flow_open, flow, service, origin);
}

void encode_flow_close(std::vector<std::byte>& out, std::uint32_t flow, reset_code code, std::string_view reason) {
  put_reason(out, frame_type::flow_close, flow, code, reason);
}

void encode_ping(std::vector<std::byte>& out, std::uint64_t opaque, bool pong) {
  header(out, pong ? frame_type::pong : frame_type::ping, 8, 0).u64(opaque);
}

void encode_goaway(std::vector<std::byte>& out, std::uint32_t last_stream, reset_code code,
                   std::string_view reason) {
  const std::string reason_text = sendable_text(reason);
  reason = reason_text;
  auto w = header(out, frame_type::goaway, 5 + reason.size(), 0);
  w.u32(last_stream);
  w.u8(static_cast<std::uint8_t>(code));
  w.raw(reason);
}

}  // namespace tunnel::mux
