#pragma once
// Change detection by content: a SHA-256 over the bytes of a set of files. Compared with
// mtimes this sees Kubernetes' secret updates, which swap a symlink to a new directory and
// may leave every timestamp the same, and ignores a `touch` that changed nothing.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tunnel::tls {

using file_digest = std::array<std::uint8_t, 32>;

// Hashes each path's name and content, in order; a file that cannot be read (missing, too
// large, permission) contributes its name and the error instead, so the digest still
// changes when it comes back. Files larger than 64 MiB count as unreadable.
// Follows symlinks. Never throws (std::bad_alloc aside).
file_digest digest_files(const std::vector<std::string>& paths);

// Remembers the last digest seen; pure.
class change_detector {
 public:
  // True when `d` differs from the digest given on the previous call (or at reset()).
  // Records `d` either way, so a change is reported once, whether or not acting on it
  // succeeded: a broken file is retried when its content changes again, not every tick.
  bool changed(const file_digest& d);
  void reset(const file_digest& d) { last_ = d; }

 private:
  std::optional<file_digest> last_;
};

}  // namespace tunnel::tls
