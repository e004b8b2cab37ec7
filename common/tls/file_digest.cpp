#include "tls/file_digest.hpp"

#include <mbedtls/sha256.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace tunnel::tls {
namespace {

constexpr long long max_file_bytes = 64LL << 20;

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
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    feed_field(h, std::string("unreadable: ") + std::strerror(errno));
    return;
  }
  unsigned char buf[16384];
  long long total = 0;
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) {
    total += static_cast<long long>(n);
    if (total > max_file_bytes) break;
    feed(h, buf, n);
  }
  const bool failed = std::ferror(f) != 0 || total > max_file_bytes;
  std::fclose(f);
  // The length after the content marks where this file ended.
  const std::int64_t marker = failed ? -1 : total;
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
