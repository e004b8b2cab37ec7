#include "tls/penalty.hpp"

#include "net/proxy_endpoint.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"

namespace tunnel::tls::penalty {

namespace {
policy::penalty_box& box() { return policy::penalty_box::process(); }
}  // namespace

std::optional<source> source_of(const std::optional<proxy::ip_endpoint>& client) {
  if (!client) return std::nullopt;
  return proxy::mapped_v6(*client).ip;
}

source source_of(const net::udp::endpoint& from) {
  // A UDP endpoint is always an IP one.
  return *source_of(net::to_ip_endpoint(net::generic_endpoint(from.data(), from.size())));
}

bool penalised(const source& from) { return box().penalised(from, policy::penalty_box::clock::now()); }

void handshake_failed(const source& from, std::chrono::nanoseconds cpu, const std::string& peer) {
  if (const auto penalty = box().failed(from, cpu, policy::penalty_box::clock::now()))
    ops::warn("source penalised: a failed handshake cost much CPU")
        .kv("peer", peer)
        .kv("cpu_ms", std::chrono::duration<double, std::milli>(cpu).count())
        .kv("refused_for_s", std::chrono::duration<double>(*penalty).count());
}

bool refused_at_accept(const std::optional<source>& from, const std::string& peer) {
  if (!from || !penalised(*from)) return false;
  ops::warn("connection refused").kv("peer", peer).kv("reason", refusal);
  ops::metrics::get().count(ops::outcome::penalised);
  return true;
}

engine::step_watch watch(const source& from, const std::string& peer) {
  return {.open = [from] { return !penalised(from); },
          .why = refusal,
          .failed = [from, peer](std::chrono::nanoseconds cpu) { handshake_failed(from, cpu, peer); }};
}

}  // namespace tunnel::tls::penalty
