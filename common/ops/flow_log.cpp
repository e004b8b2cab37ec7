#include "ops/flow_log.hpp"

#include "ops/log.hpp"

namespace tunnel::ops {

void log_flow_authorized(const flow_record& rec, const std::string& version, const std::string& ciphersuite,
                         bool connection_id) {
  info("flow authorized")
      .kv("peer", rec.peer)
      .kv("identity", rec.identity)
      .kv("tls", version)
      .kv("cipher", ciphersuite)
      .kv("connection_id", connection_id ? "yes" : "no");
}

void log_flow_closed(const flow_record& rec, const std::string& reason) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - rec.started).count();
  info("flow closed")
      .kv("peer", rec.peer)
      .kv("identity", rec.identity)
      .kv("target", rec.target)
      .kv("datagrams_up", rec.datagrams_up)
      .kv("datagrams_down", rec.datagrams_down)
      .kv("bytes_up", rec.bytes_up)
      .kv("bytes_down", rec.bytes_down)
      .kv("duration_s", seconds)
      .kv("reason", reason);
}

}  // namespace tunnel::ops
