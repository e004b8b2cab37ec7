// libFuzzer target for the mux frame decoder: decodes frames back to back from arbitrary
// bytes, as the session's reader does, and checks the decoder's promises (progress, bounds,
// re-encoding a decoded frame gives a frame that decodes the same).
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "fuzz_check.hpp"
#include "mux/frame.hpp"

using namespace tunnel::mux;

namespace {

std::vector<std::byte> reencode(const frame& f) {
  std::vector<std::byte> out;
  switch (f.type) {
    case frame_type::open: encode_open(out, f.stream, f.service, f.origin); break;
    case frame_type::data: encode_data(out, f.stream, f.payload); break;
    case frame_type::fin: encode_fin(out, f.stream); break;
    case frame_type::reset: encode_reset(out, f.stream, f.code, f.reason); break;
    case frame_type::window: encode_window(out, f.stream, f.increment); break;
    case frame_type::datagram: encode_datagram(out, f.stream, f.payload); break;
    case frame_type::ping: encode_ping(out, f.opaque, false); break;
    case frame_type::pong: encode_ping(out, f.opaque, true); break;
    case frame_type::goaway: encode_goaway(out, f.last_stream, f.code, f.reason); break;
    case frame_type::flow_open: encode_flow_open(out, f.stream, f.service, f.origin); break;
    case frame_type::flow_close: encode_flow_close(out, f.stream, f.code, f.reason); break;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto in = fuzz::bytes(data, size);
  while (!in.empty()) {
    const auto r = decode(in);
    if (r.status != decode_status::ok) break;
    fuzz::check(r.consumed >= header_size && r.consumed <= max_frame_size && r.consumed <= in.size(),
                "a decoded frame lies within the input and the frame size limit");
    const auto again = reencode(r.f);
    fuzz::check(again.size() == r.consumed, "re-encoding a frame gives as many bytes as were decoded");
    const auto r2 = decode(again);
    fuzz::check(r2.status == decode_status::ok && r2.consumed == again.size() && r2.f.type == r.f.type &&
                    r2.f.stream == r.f.stream,
                "a re-encoded frame decodes to the same frame");
    in = in.subspan(r.consumed);
  }
  return 0;
}
