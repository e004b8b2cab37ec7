#pragma once
// The mux frame codec (format: common/mux/PROTOCOL.md). Pure: no I/O, no allocation in the
// decoder, strict bounds, so it can be fuzzed on its own. A decoded frame's views point
// into the caller's buffer and live as long as it does.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace tunnel::mux {

// ALPN protocol name: offered by tunnel-in, accepted by tunnel-out.
inline constexpr std::string_view alpn_name = "tunnel-mux/1";

inline constexpr std::size_t header_size = 8;
// A frame fits one TLS record (16384 bytes of plaintext), so the writer can pack frames
// into records without ever splitting one.
inline constexpr std::size_t max_frame_size = 16384;
inline constexpr std::size_t max_payload = max_frame_size - header_size;
inline constexpr std::size_t max_text = 255;           // reason texts, client addresses
inline constexpr std::size_t max_service_name = 64;
// Windows every stream and connection start with (protocol constants of version 1).
inline constexpr std::uint32_t initial_stream_window = 256 * 1024;
inline constexpr std::uint32_t initial_connection_window = 4 * 1024 * 1024;
inline constexpr std::uint32_t max_window = 0x7fffffff;
// Flow ids, like stream ids, stay below 2^31.
inline constexpr std::uint32_t max_id = 0x7fffffff;
// The flows hello (PROTOCOL.md, "Datagrams"): an empty DATAGRAM on this id, never a real
// flow's, says "I understand FLOW_OPEN and FLOW_CLOSE". Version-1 receivers drop it.
inline constexpr std::uint32_t flows_hello_id = 0xffffffff;

enum class frame_type : std::uint8_t {
  open = 1,
  data = 2,
  fin = 3,
  reset = 4,
  window = 5,
  datagram = 6,
  ping = 7,
  pong = 8,
  goaway = 9,
  flow_open = 10,   // a UDP flow (PROTOCOL.md "Datagrams"): an extension of version 1
  flow_close = 11,
  last_ = flow_close,
};

// Why a stream or connection ends; carried by RESET and GOAWAY.
enum class reset_code : std::uint8_t {
  cancel = 0,       // the sender's side of the stream went away
  refused = 1,      // authorization refused the stream at open
  unreachable = 2,  // tunnel-out could not dial the target
  limit = 3,        // too many streams
  timeout = 4,      // idle or close timeout
  protocol = 5,     // the peer broke the protocol
  shutdown = 6,     // the process is stopping
  internal = 7,
  last_ = internal,
};

struct frame {
  frame_type type = frame_type::data;
  std::uint32_t stream = 0;               // stream id; flow id for flow frames; 0 for the connection
  std::span<const std::byte> payload;     // data / datagram bytes
  std::string_view service, origin;       // open, flow_open
  reset_code code = reset_code::cancel;   // reset, goaway, flow_close
  std::string_view reason;                // reset, goaway, flow_close
  std::uint32_t increment = 0;            // window
  std::uint32_t last_stream = 0;          // goaway: the highest stream id the sender processed
  std::uint64_t opaque = 0;               // ping, pong
};

enum class decode_status {
  ok,
  need_more,     // not a whole frame yet: read more bytes and call again
  bad_type,      // unknown frame type
  bad_flags,     // reserved flag bits set
  bad_length,    // length over the maximum, or wrong for the type
  bad_stream,    // stream id 0 where one is required, or non-zero where none is allowed
  bad_field,     // a field's value is out of range (empty name, zero increment, ...)
};

struct decode_result {
  decode_status status = decode_status::need_more;
  frame f;                   // valid when status == ok
  std::size_t consumed = 0;  // bytes of input the frame took (status == ok)
};

// Decodes the first frame in `in`. Never reads outside `in`; never throws.
decode_result decode(std::span<const std::byte> in);

const char* describe(decode_status s);
const char* describe(reset_code c);

// Encoders append one frame to `out`. Precondition (checked with a clamp, never UB):
// data/datagram payloads at most max_payload, texts at most max_text (longer texts are cut).
void encode_open(std::vector<std::byte>& out, std::uint32_t stream, std::string_view service,
                 std::string_view origin);
void encode_data(std::vector<std::byte>& out, std::uint32_t stream, std::span<const std::byte> data);
void encode_fin(std::vector<std::byte>& out, std::uint32_t stream);
void encode_reset(std::vector<std::byte>& out, std::uint32_t stream, reset_code code, std::string_view reason);
void encode_window(std::vector<std::byte>& out, std::uint32_t stream, std::uint32_t increment);
void encode_datagram(std::vector<std::byte>& out, std::uint32_t flow, std::span<const std::byte> data);
void encode_flow_open(std::vector<std::byte>& out, std::uint32_t flow, std::string_view service,
                      std::string_view origin);
void encode_flow_close(std::vector<std::byte>& out, std::uint32_t flow, reset_code code, std::string_view reason);
void encode_ping(std::vector<std::byte>& out, std::uint64_t opaque, bool pong);
void encode_goaway(std::vector<std::byte>& out, std::uint32_t last_stream, reset_code code,
                   std::string_view reason);

}  // namespace tunnel::mux
