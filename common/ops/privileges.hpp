#pragma once
// Dropping root after the listeners are bound (--user).
#include <string>

namespace tunnel::ops {

// Switches the process to `user` (its uid, primary gid and supplementary groups). Must be
// called before worker threads start (setuid applies per thread otherwise on some libcs).
// Throws std::runtime_error naming the problem: unknown user, not root, or a failed call.
void drop_privileges(const std::string& user);

}  // namespace tunnel::ops
