// libFuzzer target for the --config loader: any file content either loads into at least
// one service or is refused with a usage_error that names the file; nothing else escapes
// (no other exception, no crash), for both roles.
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstdint>
#include <fstream>
#include <string>

#include "config/file.hpp"
#include "config/flags.hpp"
#include "fuzz_check.hpp"

using namespace tunnel;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // The loader reads a path: one scratch file per fuzzing process.
  static const std::string path = "/tmp/tunnel-config-fuzz-" + std::to_string(::getpid()) + ".toml";
  static const bool cleaned_at_exit = std::atexit([] { ::unlink(path.c_str()); }) == 0;
  (void)cleaned_at_exit;
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  for (const auto side : {tls::role::server, tls::role::client}) {
    try {
      const auto cfg = config::load_file(side, path);
      fuzz::check(!cfg.services.empty(), "a loaded file has a service");
      for (const auto& s : cfg.services) fuzz::check(s.side == side, "services take the file's role");
    } catch (const config::usage_error& e) {
      fuzz::check(std::string(e.what()).rfind(path, 0) == 0, "a refusal names the file first");
    }
  }
  return 0;
}
