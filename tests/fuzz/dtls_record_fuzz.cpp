// libFuzzer target for the DTLS record classifier, which tunnel-out's UDP relay runs on
// every datagram reaching its shared socket before any session sees it: it routes by
// connection ID (copying exactly server_cid_length bytes from the view) or by address.
// The view must stay inside the datagram and agree with the bytes it was read from.
#include <cstddef>
#include <cstdint>
#include <span>

#include "fuzz_check.hpp"
#include "tls/dtls_record.hpp"

using namespace tunnel::tls;

namespace {

void check_view(std::span<const std::uint8_t> d, std::size_t cid_length) {
  const record_view v = classify_record(d, cid_length);
  if (v.kind == record_kind::invalid) return;
  fuzz::check(d.size() >= record_header_size, "only a whole record header is classified");
  fuzz::check(d[1] == 254 && (d[2] == 253 || d[2] == 255), "only DTLS 1.2 (or 1.0) records are classified");
  fuzz::check(v.epoch == ((d[3] << 8) | d[4]), "the epoch is the header's");
  switch (v.kind) {
    case record_kind::cid:
      fuzz::check(d[0] == 25 && cid_length > 0, "a CID view comes from a tls12_cid record when we use IDs");
      fuzz::check(v.cid.size() == cid_length, "the connection ID has the length we hand out");
      fuzz::check(v.cid.data() == d.data() + cid_offset && cid_offset + cid_length + 2 <= d.size(),
                  "the connection ID and the length after it lie inside the datagram");
      break;
    case record_kind::client_hello:
      fuzz::check(d[0] == 22 && v.epoch == 0, "a ClientHello is an epoch-0 handshake record");
      fuzz::check(d.size() > record_header_size && d[record_header_size] == 1, "it holds a ClientHello");
      fuzz::check(v.cid.empty(), "no connection ID outside tls12_cid records");
      break;
    default:
      fuzz::check(d[0] >= 20 && d[0] <= 23, "other records have a known content type");
      fuzz::check(v.cid.empty(), "no connection ID outside tls12_cid records");
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> datagram(data, size);
  check_view(datagram, server_cid_length);  // tunnel-out's relay
  check_view(datagram, 0);                  // a side that hands out no IDs
  return 0;
}
