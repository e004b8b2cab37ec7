#include "tls/file_digest.hpp"

#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "config/read_file.hpp"

namespace tunnel::tls {
namespace {

constexpr std::size_t max_file_bytes = 64u << 20;

void feed(mbedtls_sha256_context& h, const void* p, std::size_t n) {
  mbedtls_sha256_update(&h, static_cast<const unsigned char*>(p), n);
}

// Length-prefixed, so ("ab","c") and ("a","bc") hash differently.
void feed_field(mbedtls_sha256_context& h, const std::string& s) {
  const std::uint64_t n = s.size();
  feed(h, &n, sizeof n);
  feed(h, s.data(), s.size());
}

void feed_file(mbedtls_sha256_context& h, const std::string& path) {
  // A FIFO or a device would block the check (and the process with it): only a regular
  // file within the bound counts as content; anything else is its reason.
  auto r = config::read_regular_file(path, max_file_bytes);
  if (!r.error.empty()) {
    feed_field(h, "unreadable: " + r.error);
    const std::int64_t marker = -1;
    feed(h, &marker, sizeof marker);
    return;
  }
  feed(h, r.bytes.data(), r.bytes.size());
  mbedtls_platform_zeroize(r.bytes.data(), r.bytes.size());  // it may be a private key
  // The length after the content marks where this file ended.
  const std::int64_t marker = static_cast<std::int64_t>(r.bytes.size());
  feed(h, &marker, sizeof marker);
}

}  // namespace

file_digest digest_files(const std::vector<std::string>& paths) {
  mbedtls_sha256_context h;
  mbedtls_sha256_init(&h);
  mbedtls_sha256_starts(&h, 0);
  for (const auto& p : paths) {
    feed_field(h, p);
    feed_file(h, p);
  }
  file_digest out{};
  mbedtls_sha256_finish(&h, out.data());
  mbedtls_sha256_free(&h);
  return out;
}

bool change_detector::changed(const file_digest& d) {
  const bool differs = !last_ || *last_ != d;
  last_ = d;
  return differs;
}

}  // namespace tunnel::tls
