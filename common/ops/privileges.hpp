#pragma once
// Dropping root after the listeners are bound (--user).
#include <string>

namespace tunnel::ops {

// Switches the process to `user` (its uid, primary gid and supplementary groups). Must be
// called before worker threads start (setuid applies per thread otherwise on some libcs).
// Throws std::runtime_error naming the problem: unknown user, not root, or a failed call.
void drop_privileges(const std::string& user);

// Marks the process non-dumpable: no core file and no ptrace by an unprivileged user of the
// same uid, since its memory holds private keys, PSKs and ticket keys. Called at start-up,
// before any credential is read (a --user switch would also set it, but not every
// deployment switches: DynamicUser=, containers).
void keep_out_of_core_dumps();

}  // namespace tunnel::ops
