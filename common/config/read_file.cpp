#include "config/read_file.hpp"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace tunnel::config {
namespace {

std::string kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode) || S_ISBLK(mode)) return "a device";
  return "not a plain file";
}

struct fd_closer {
  int fd;
  ~fd_closer() { ::close(fd); }
};

}  // namespace

file_read read_regular_file(const std::string& path, std::size_t max_bytes) {
  file_read out;
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    out.error = std::string("cannot read file (") + std::strerror(errno) + ")";
    return out;
  }
  fd_closer closer{fd};
  if (::fstat(fd, &out.info) != 0) {
    out.error = std::string("cannot read file (") + std::strerror(errno) + ")";
    return out;
  }
  if (!S_ISREG(out.info.st_mode)) {
    out.error = "not a regular file (" + kind_of(out.info.st_mode) + ")";
    return out;
  }
  const auto too_large = [&] {
    return "larger than " + std::to_string(max_bytes) + " bytes";
  };
  if (static_cast<unsigned long long>(out.info.st_size) > max_bytes) {
    out.error = too_large();
    return out;
  }
  out.bytes.resize(static_cast<std::size_t>(out.info.st_size));
  std::size_t used = 0;
  for (;;) {
    if (used == out.bytes.size()) {  // the file grew while read: look for more, within the bound
      if (used >= max_bytes + 1) break;
      out.bytes.resize(std::min(max_bytes + 1, used + 4096));
    }
    const ssize_t n = ::read(fd, out.bytes.data() + used, out.bytes.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      out.error = std::string("cannot read file (") + std::strerror(errno) + ")";
      out.bytes.clear();
      return out;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  out.bytes.resize(used);
  if (used > max_bytes) {
    out.error = too_large();
    out.bytes.clear();
  }
  return out;
}

}  // namespace tunnel::config
