#include "ops/privileges.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace tunnel::ops {

void drop_privileges(const std::string& user) {
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || found == nullptr)
    throw std::runtime_error("--user " + user + ": no such user");
  if (::geteuid() != 0) {
    if (::geteuid() == pw.pw_uid) return;  // already that user
    throw std::runtime_error("--user " + user + ": only root can switch users");
  }
  if (::initgroups(pw.pw_name, pw.pw_gid) != 0 || ::setgid(pw.pw_gid) != 0 || ::setuid(pw.pw_uid) != 0)
    throw std::runtime_error("--user " + user + ": cannot switch: " + std::strerror(errno));
  // Make sure there is no way back to root.
  if (::setuid(0) == 0) throw std::runtime_error("--user " + user + ": still able to regain root");
  ::prctl(PR_SET_DUMPABLE, 0);
}

void keep_out_of_core_dumps() { ::prctl(PR_SET_DUMPABLE, 0); }

}  // namespace tunnel::ops
