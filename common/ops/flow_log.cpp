#include "ops/flow_log.hpp"

#include "ops/log.hpp"
#include "ops/metrics.hpp"

namespace tunnel::ops {
namespace {

// Who the flow is: the fields both lines start with.
event& describe_flow(event& line, const flow_record& rec) {
  line.kv("peer", rec.peer);
  if (!rec.origin.empty()) line.kv("origin", rec.origin);
  if (!rec.service.empty()) line.kv("service", rec.service);
  return line.kv("identity", rec.identity).kv("transport", rec.over_tls ? "tls" : "dtls");
}

}  // namespace

void log_flow_authorized(const flow_record& rec, const std::string& version, const std::string& ciphersuite,
                         bool connection_id) {
  auto& m = metrics::get();
  m.udp_flows_active.fetch_add(1, std::memory_order_relaxed);
  m.udp_flows_total.fetch_add(1, std::memory_order_relaxed);
  auto line = info("flow authorized");
  describe_flow(line, rec)
      .kv("tls", version)
      .kv("cipher", ciphersuite)
      .kv("connection_id", connection_id ? "yes" : "no");
}

void log_flow_closed(const flow_record& rec, const std::string& reason) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - rec.started).count();
  // Counted when the flow ends (both relays log every authorized flow's end exactly once).
  auto& m = metrics::get();
  m.udp_flows_active.fetch_sub(1, std::memory_order_relaxed);
  m.udp_datagrams_up.fetch_add(rec.datagrams_up, std::memory_order_relaxed);
  m.udp_datagrams_down.fetch_add(rec.datagrams_down, std::memory_order_relaxed);
  m.bytes_up.fetch_add(rec.bytes_up, std::memory_order_relaxed);
  m.bytes_down.fetch_add(rec.bytes_down, std::memory_order_relaxed);
  auto line = info("flow closed");
  describe_flow(line, rec)
      .kv("target", rec.target)
      .kv("datagrams_up", rec.datagrams_up)
      .kv("datagrams_down", rec.datagrams_down)
      .kv("bytes_up", rec.bytes_up)
      .kv("bytes_down", rec.bytes_down)
      .kv("duration_s", seconds)
      .kv("reason", reason);
}

}  // namespace tunnel::ops
