#pragma once
// Reading a file the operator named (certificate, key, CA, CRL, PSK, configuration): only a
// regular file, opened so that a FIFO or a device cannot block the process, and only up to
// a size bound. Everything else is refused with a reason fit for a one-line error.
#include <cstddef>
#include <string>
#include <sys/stat.h>

namespace tunnel::config {

struct file_read {
  std::string error;  // "" on success, else why (e.g. "not a regular file (a FIFO)")
  std::string bytes;  // the whole content on success
  struct stat info {};  // the opened file's status (mode, size) on success
};

// Reads all of `path` when it is a regular file of at most `max_bytes`, into one
// allocation (the caller may wipe it: it is the only copy). A file that grows while read
// is refused ("changed while being read"), as a reload would be retried.
file_read read_regular_file(const std::string& path, std::size_t max_bytes);

}  // namespace tunnel::config
