#include "ops/connection_log.hpp"

#include "ops/log.hpp"
#include "ops/metrics.hpp"

namespace tunnel::ops {

void log_authorized(const connection_record& rec, const std::string& tls_version,
                    const std::string& ciphersuite, bool resumed) {
  event e(spdlog::level::info, "connection authorized");
  if (!rec.service.empty()) e.kv("service", rec.service);
  e.kv("peer", rec.peer);
  if (!rec.via.empty()) e.kv("via", rec.via);
  e.kv("identity", rec.identity).kv("tls", tls_version).kv("cipher", ciphersuite);
  if (resumed) e.kv("resumed", "true");
}

void log_closed(const connection_record& rec, std::uint64_t bytes_up, std::uint64_t bytes_down,
                const std::string& reason, bool clean) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - rec.started).count();
  auto& m = metrics::get();
  m.bytes_up.fetch_add(bytes_up, std::memory_order_relaxed);
  m.bytes_down.fetch_add(bytes_down, std::memory_order_relaxed);
  if (clean) m.count(outcome::closed);
  else if (reason == "target unreachable") m.count(outcome::unreachable);
  else if (reason == "cancelled") m.count(outcome::shutdown);
  else if (reason.find("timeout") != std::string::npos) m.count(outcome::timeout);
  else m.count(outcome::error);
  event e(spdlog::level::info, "connection closed");
  if (!rec.service.empty()) e.kv("service", rec.service);
  e.kv("peer", rec.peer);
  if (!rec.via.empty()) e.kv("via", rec.via);
  e.kv("identity", rec.identity)
      .kv("target", rec.target)
      .kv("bytes_up", bytes_up)
      .kv("bytes_down", bytes_down)
      .kv("duration_s", seconds)
      .kv("reason", reason);
}

}  // namespace tunnel::ops
