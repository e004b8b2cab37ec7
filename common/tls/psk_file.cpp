#include "tls/psk_file.hpp"

#include <fcntl.h>
#include <mbedtls/platform_util.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "tls/credentials.hpp"

namespace tunnel::tls {
namespace {

constexpr std::size_t max_file_bytes = 4096;

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Wipes a buffer that held key text, whatever happens after.
struct wipe_on_exit {
  void* p;
  std::size_t n;
  ~wipe_on_exit() { mbedtls_platform_zeroize(p, n); }
};

}  // namespace

psk_entry::~psk_entry() {
  if (!key.empty()) mbedtls_platform_zeroize(key.data(), key.size());
}

std::optional<psk_entry> parse_psk(std::string_view text, std::string& why) {
  if (text.ends_with("\n")) text.remove_suffix(1);
  if (text.ends_with("\r")) text.remove_suffix(1);
  if (text.find('\n') != std::string_view::npos) {
    why = "must hold exactly one line identity:hexkey";
    return std::nullopt;
  }
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) {
    why = "expected identity:hexkey";
    return std::nullopt;
  }
  const std::string_view identity = text.substr(0, colon), hex = text.substr(colon + 1);
  if (identity.empty() || identity.size() > psk_identity_max) {
    why = "the identity must be 1.." + std::to_string(psk_identity_max) + " characters";
    return std::nullopt;
  }
  for (char c : identity) {
    // Printable ASCII only: the identity travels in clear and lands in log lines.
    if (c < 0x21 || c > 0x7e) {
      why = "the identity must be printable ASCII without spaces";
      return std::nullopt;
    }
  }
  if (hex.size() % 2 != 0 || hex.size() < 2 * psk_min_bytes || hex.size() > 2 * psk_max_bytes) {
    why = "the key must be " + std::to_string(psk_min_bytes) + ".." + std::to_string(psk_max_bytes) +
          " bytes written as " + std::to_string(2 * psk_min_bytes) + ".." + std::to_string(2 * psk_max_bytes) +
          " hex digits";
    return std::nullopt;
  }
  psk_entry out;
  out.identity = std::string(identity);
  out.key.resize(hex.size() / 2);
  for (std::size_t i = 0; i < out.key.size(); ++i) {
    const int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      why = "the key must be hex digits only";
      return std::nullopt;  // out's destructor wipes the partial key
    }
    out.key[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return out;
}

psk_entry load_psk_file(const std::string& path) {
  const std::string flag = "--psk-file " + path;
  // O_NONBLOCK: a FIFO must not block the open (it is refused just below).
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw credential_error(flag + ": cannot read file (" + std::strerror(errno) + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw credential_error(flag + ": not a regular file");
  }
  if (psk_mode_too_open(st.st_mode)) {
    ::close(fd);
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    throw credential_error(flag + ": group or others may access it (mode " + mode +
                           "); a pre-shared key must be private: chmod 600 " + path);
  }
  std::array<char, max_file_bytes + 1> buf{};
  wipe_on_exit wipe{buf.data(), buf.size()};
  std::size_t used = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data() + used, buf.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      ::close(fd);
      throw credential_error(flag + ": cannot read file (" + std::strerror(errno) + ")");
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
    if (used > max_file_bytes) {
      ::close(fd);
      throw credential_error(flag + ": larger than 4 KiB; expected one line identity:hexkey");
    }
  }
  ::close(fd);
  std::string why;
  auto entry = parse_psk(std::string_view(buf.data(), used), why);
  if (!entry) throw credential_error(flag + ": " + why);
  return std::move(*entry);
}

}  // namespace tunnel::tls
