#pragma once
// Who may connect to a listening Unix socket: its file's mode and owner, applied between
// bind() and listen() so no client can connect before they are in place.
#include <optional>
#include <sys/types.h>

namespace tunnel::net {

struct unix_socket_access {
  std::optional<mode_t> mode;  // the file's mode at bind(); nullopt: as the umask leaves it
  std::optional<uid_t> owner;  // lchown; nullopt: unchanged (the process's user)
  std::optional<gid_t> group;  // nullopt: unchanged

  bool empty() const { return !mode && !owner && !group; }
};

}  // namespace tunnel::net
