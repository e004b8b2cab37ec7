#pragma once
// The command line of tunnel-in and tunnel-out: one parser for both, so shared flags mean
// exactly the same on each side.
#include <optional>

#include "config/service.hpp"

namespace tunnel::config {

struct cli_outcome {
  std::optional<service> svc;  // set when the program should run
  int exit_code = 0;           // when svc is empty: 0 after --help/--version, 2 on error
  bool check_only = false;     // --check-config: validate, print, exit
};

// The effective settings as `key = value` lines, for --check-config.
std::string describe(const service& svc);

// Parses and validates argv for the given role. Prints --help / --version output to
// stdout and a one-line "<program>: error: ..." to stderr on mistakes.
// Files are not opened here (credentials::load does that).
cli_outcome parse_command_line(tls::role side, int argc, char** argv);

// Default for --max-conns: half the open-file limit (two sockets per connection) less a
// reserve for listeners and logs.
std::size_t default_max_conns();

}  // namespace tunnel::config
