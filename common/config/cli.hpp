#pragma once
// The command line of tunnel-in and tunnel-out: one parser for both, so shared flags mean
// exactly the same on each side.
#include <optional>

#include "config/service.hpp"

namespace tunnel::config {

struct cli_outcome {
  std::optional<settings> run;  // set when the program should run
  int exit_code = 0;            // when run is empty: 0 after --help/--version, 2 on error
  bool check_only = false;      // --check-config: validate, print, exit
};

// The effective settings as `key = value` lines, for --check-config.
std::string describe(const service& svc);
std::string describe(const settings& all);

// Parses and validates argv for the given role: the flags of one service, or --config FILE
// (with at most --check-config beside it). Prints --help / --version output to stdout and
// a one-line "<program>: error: ..." to stderr on mistakes. Certificate files are not
// opened here (credentials::load does that); the config file is.
cli_outcome parse_command_line(tls::role side, int argc, char** argv);

// Default for --max-conns: half the open-file limit (two sockets per connection) once a
// reserve is set aside for what else the process holds: each worker's event loop (3
// descriptors), the status endpoint's connections (64), listeners, logs, and the files a
// reload opens. Without it the limit would be reached below --max-conns, and /healthz and
// reloads would fail first.
std::size_t default_max_conns(unsigned threads);

}  // namespace tunnel::config
