#include "mux/frame.hpp"

#include <algorithm>

namespace tunnel::mux {
namespace {

std::uint32_t load32(const std::byte* p) {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) | (std::uint32_t(p[2]) << 8) |
         std::uint32_t(p[3]);
}

void put8(std::vector<std::byte>& out, std::uint8_t v) { out.push_back(std::byte{v}); }
void put16(std::vector<std::byte>& out, std::uint16_t v) {
  put8(out, static_cast<std::uint8_t>(v >> 8));
  put8(out, static_cast<std::uint8_t>(v));
}
void put32(std::vector<std::byte>& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v >> 16));
  put16(out, static_cast<std::uint16_t>(v));
}
void put_text(std::vector<std::byte>& out, std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  out.insert(out.end(), p, p + s.size());
}
void header(std::vector<std::byte>& out, frame_type t, std::size_t length, std::uint32_t stream) {
  put8(out, static_cast<std::uint8_t>(t));
  put8(out, 0);  // flags: none defined in version 1
  put16(out, static_cast<std::uint16_t>(length));
  put32(out, stream);
}

std::string_view text(std::span<const std::byte> s) {
  return {reinterpret_cast<const char*>(s.data()), s.size()};
}

// Texts cross into log lines: printable ASCII only (the logger escapes anyway).
bool printable(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c <= 0x7e; });
}

bool service_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

std::string_view clamp_text(std::string_view s, std::size_t limit = max_text) {
  return s.substr(0, std::min(s.size(), limit));
}

// OPEN and FLOW_OPEN share a payload: the service name and the legacy client's address.
void put_open(std::vector<std::byte>& out, frame_type t, std::uint32_t id, std::string_view service,
              std::string_view origin) {
  service = clamp_text(service, max_service_name);
  origin = clamp_text(origin);
  header(out, t, 2 + service.size() + origin.size(), id);
  put8(out, static_cast<std::uint8_t>(service.size()));
  put_text(out, service);
  put8(out, static_cast<std::uint8_t>(origin.size()));
  put_text(out, origin);
}

// RESET and FLOW_CLOSE share a payload: a code and a reason.
void put_reason(std::vector<std::byte>& out, frame_type t, std::uint32_t id, reset_code code, std::string_view reason) {
  reason = clamp_text(reason);
  header(out, t, 1 + reason.size(), id);
  put8(out, static_cast<std::uint8_t>(code));
  put_text(out, reason);
}

decode_status parse_open(std::span<const std::byte> p, frame& f) {
  if (p.size() < 2) return decode_status::bad_length;
  const std::size_t service_len = std::to_integer<std::size_t>(p[0]);
  if (service_len == 0 || service_len > max_service_name) return decode_status::bad_field;
  if (p.size() < 1 + service_len + 1) return decode_status::bad_length;
  const std::size_t origin_len = std::to_integer<std::size_t>(p[1 + service_len]);
  if (p.size() != 2 + service_len + origin_len) return decode_status::bad_length;
  f.service = text(p.subspan(1, service_len));
  f.origin = text(p.subspan(2 + service_len, origin_len));
  if (!std::all_of(f.service.begin(), f.service.end(), service_char)) return decode_status::bad_field;
  if (!printable(f.origin)) return decode_status::bad_field;
  return decode_status::ok;
}

decode_status parse_reason(std::span<const std::byte> p, frame& f) {
  const auto code = std::to_integer<std::uint8_t>(p[0]);
  if (code > static_cast<std::uint8_t>(reset_code::last_)) return decode_status::bad_field;
  f.code = static_cast<reset_code>(code);
  f.reason = text(p.subspan(1));
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
      f.increment = load32(p.data());
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
      f.opaque = (std::uint64_t(load32(p.data())) << 32) | load32(p.data() + 4);
      return decode_status::ok;
    case frame_type::goaway:
      if (has_stream) return decode_status::bad_stream;
      if (p.size() < 5) return decode_status::bad_length;
      f.last_stream = load32(p.data());
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
  const std::size_t length = (std::to_integer<std::size_t>(in[2]) << 8) | std::to_integer<std::size_t>(in[3]);
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
  r.f.stream = load32(in.data() + 4);
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
  header(out, frame_type::data, data.size(), stream);
  out.insert(out.end(), data.begin(), data.end());
}

void encode_fin(std::vector<std::byte>& out, std::uint32_t stream) { header(out, frame_type::fin, 0, stream); }

void encode_reset(std::vector<std::byte>& out, std::uint32_t stream, reset_code code, std::string_view reason) {
  put_reason(out, frame_type::reset, stream, code, reason);
}

void encode_window(std::vector<std::byte>& out, std::uint32_t stream, std::uint32_t increment) {
  header(out, frame_type::window, 4, stream);
  put32(out, increment);
}

void encode_datagram(std::vector<std::byte>& out, std::uint32_t flow, std::span<const std::byte> data) {
  data = data.first(std::min(data.size(), max_payload));
  header(out, frame_type::datagram, data.size(), flow);
  out.insert(out.end(), data.begin(), data.end());
}

void encode_flow_open(std::vector<std::byte>& out, std::uint32_t flow, std::string_view service,
                      std::string_view origin) {
  put_open(out, frame_type::flow_open, flow, service, origin);
}

void encode_flow_close(std::vector<std::byte>& out, std::uint32_t flow, reset_code code, std::string_view reason) {
  put_reason(out, frame_type::flow_close, flow, code, reason);
}

void encode_ping(std::vector<std::byte>& out, std::uint64_t opaque, bool pong) {
  header(out, pong ? frame_type::pong : frame_type::ping, 8, 0);
  put32(out, static_cast<std::uint32_t>(opaque >> 32));
  put32(out, static_cast<std::uint32_t>(opaque));
}

void encode_goaway(std::vector<std::byte>& out, std::uint32_t last_stream, reset_code code,
                   std::string_view reason) {
  reason = clamp_text(reason);
  header(out, frame_type::goaway, 5 + reason.size(), 0);
  put32(out, last_stream);
  put8(out, static_cast<std::uint8_t>(code));
  put_text(out, reason);
}

}  // namespace tunnel::mux
