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
  if (static_cast<unsigned long long>(out.info.st_size) > max_bytes) {
    out.error = "larger than " + std::to_string(max_bytes) + " bytes";
    return out;
  }
  // Blocking reads from here on (some filesystems answer EAGAIN to non-blocking ones).
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  // One allocation, never grown: the content may be a private key, and a reallocation
  // would leave a copy behind that nobody wipes. One spare byte tells a file that grew.
  const auto size = static_cast<std::size_t>(out.info.st_size);
  out.bytes.resize(size + 1);
  std::size_t used = 0;
  while (used < out.bytes.size()) {
    const ssize_t n = ::read(fd, out.bytes.data() + used, out.bytes.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      out.error = std::string("cannot read file (") + std::strerror(errno) + ")";
      break;
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  if (out.error.empty() && used > size) out.error = "changed while being read: try again";
  if (!out.error.empty()) {
    explicit_bzero(out.bytes.data(), out.bytes.size());
    out.bytes.clear();
    return out;
  }
  out.bytes.resize(used);  // shrinking keeps the one allocation
  return out;
}

}  // namespace tunnel::config
