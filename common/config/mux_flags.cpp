#include "config/mux_flags.hpp"

#include <cctype>

#include "config/duration.hpp"
#include "config/number_flag.hpp"

namespace tunnel::config {

void add_mux_flags(CLI::App& app, mux_flags& f, tls::role side) {
  if (side == tls::role::client) {
    app.add_option("--mode", f.mode,
                   "auto|mux|raw: streams over pooled connections (mux), one TLS connection per "
                   "legacy connection (raw), or mux when tunnel-out offers it (auto, the default)");
    app.add_option("--pool", f.pool, "N mux connections kept up to tunnel-out (default: --threads)")->check(decimal_number());
    app.add_option("--rotate-after", f.rotate_after,
                   "SIZE or DUR: replace a mux connection after this many bytes or this long "
                   "(repeatable; default 16GiB and 24h; 0 disables that limit)");
  }
  app.add_option("--keepalive", f.keepalive,
                 "DUR of silence on a mux connection before it is declared dead; pings go out "
                 "after half of it (default 15s, 0: never)");
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
  std::size_t i = 0;
  std::uint64_t n = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    if (n > (1ull << 50)) return std::nullopt;
    n = n * 10 + static_cast<std::uint64_t>(text[i] - '0');
    ++i;
  }
  if (i == 0) return std::nullopt;
  const std::string unit = text.substr(i);
  std::uint64_t scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "KiB") scale = 1ull << 10;
  else if (unit == "MiB") scale = 1ull << 20;
  else if (unit == "GiB") scale = 1ull << 30;
  else if (unit == "TiB") scale = 1ull << 40;
  else if (unit == "kB") scale = 1000;
  else if (unit == "MB") scale = 1000 * 1000;
  else if (unit == "GB") scale = 1000ull * 1000 * 1000;
  else return std::nullopt;
  if (n > (1ull << 50) / scale) return std::nullopt;
  return n * scale;
}

std::optional<std::string> apply_mux_flags(const mux_flags& f, service& s) {
  auto& m = s.mux;
  if (f.mode == "auto" || f.mode.empty()) m.mode = carry_mode::automatic;
  else if (f.mode == "mux") m.mode = carry_mode::mux;
  else if (f.mode == "raw") m.mode = carry_mode::raw;
  else return "--mode " + f.mode + ": must be auto, mux or raw";
  if (s.udp.enabled && !f.mode.empty() && m.mode == carry_mode::mux)
    return "--mode mux: not for UDP; --udp-over-tls carries UDP flows over mux connections";
  if (f.pool == 0 || f.pool < -1 || f.pool > 256) return "--pool " + std::to_string(f.pool) + ": must be 1..256";
  // UDP flows all live on one thread: one connection serves them unless --pool says more.
  m.pool = f.pool > 0 ? static_cast<std::size_t>(f.pool) : s.udp.enabled ? 1 : s.threads;
  if (!f.keepalive.empty()) {
    auto d = parse_duration(f.keepalive);
    if (!d) return "--keepalive " + f.keepalive + ": not a duration (use e.g. 250ms, 10s, 5m, 1h)";
    m.keepalive = *d;
  }
  for (const auto& limit : f.rotate_after) {
    if (auto d = parse_duration(limit)) m.rotate_age = *d;  // "0" lands here: no age limit
    else if (auto n = parse_size(limit)) m.rotate_bytes = *n;
    else return "--rotate-after " + limit + ": neither a size (e.g. 16GiB) nor a duration (e.g. 24h)";
  }
  // Mux is negotiated by ALPN on TCP: tunnel-out always accepts it, tunnel-in offers it
  // unless told to stay raw.
  s.tls.mux_alpn = !s.udp.enabled && (s.side == tls::role::server || m.mode != carry_mode::raw);
  return std::nullopt;
}

}  // namespace tunnel::config
