#include "ops/metrics.hpp"

#include <mbedtls/version.h>

#include <chrono>
#include <cstdio>

namespace tunnel::ops {
namespace {

constexpr const char* outcome_names[] = {"closed", "error", "timeout", "handshake_failed",
                                         "probe", "limit", "unreachable", "shutdown", "penalised"};
constexpr const char* handshake_failure_names[] = {"policy", "verify", "timeout", "protocol"};
constexpr const char* udp_drop_names[] = {"oversized", "queue_full", "garbage", "unknown_session",
                                          "flow_limit", "other", "mux_queue_full", "penalised"};
static_assert(std::size(udp_drop_names) == static_cast<std::size_t>(udp_drop::count_));

// Microseconds as seconds with every digit kept (a running sum stays exact to 1 us at any size).
std::string seconds_of_us(std::uint64_t us) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llu.%06llu", static_cast<unsigned long long>(us / 1000000),
                static_cast<unsigned long long>(us % 1000000));
  return buf;
}

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

class writer {
 public:
  explicit writer(std::string service) : service_(std::move(service)) {}
  void header(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const char* name, const std::string& extra_labels, const std::string& value) {
    out_ += name;
    out_ += "{service=\"" + escape_label(service_) + "\"";
    if (!extra_labels.empty()) out_ += "," + extra_labels;
    out_ += "} " + value + "\n";
  }
  template <class T>
  void sample(const char* name, const std::string& extra_labels, T value) {
    sample(name, extra_labels, std::to_string(value));
  }
  // A metric with one sample and no labels of its own.
  template <class T>
  void single(const char* name, const char* type, const char* help, T value) {
    header(name, type, help);
    sample(name, "", value);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string service_;
  std::string out_;
};

}  // namespace

void histogram::observe(double seconds) {
  std::size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i]) ++i;
  buckets[i].fetch_add(1, std::memory_order_relaxed);
  count.fetch_add(1, std::memory_order_relaxed);
  sum_us.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
}

metrics& metrics::get() {
  static metrics instance;
  return instance;
}

void metrics::set_identity(std::string_view program, std::string_view service) {
  program_ = program;
  service_ = service;
}

std::string escape_label(std::string_view value) {
  std::string out;
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string metrics::render() const {
  writer w(service_);
  auto load = [](const auto& a) { return a.load(std::memory_order_relaxed); };

  w.header("tunnel_build_info", "gauge", "Version of this binary and of mbedTLS.");
  w.sample("tunnel_build_info",
           "program=\"" + escape_label(program_) + "\",version=\"" TUNNEL_VERSION "\",mbedtls=\"" MBEDTLS_VERSION_STRING "\"",
           1);

  w.single("tunnel_connections_active", "gauge", "Connections being relayed now.", load(connections_active));
  w.header("tunnel_connections_total", "counter", "Connections accepted, by how they ended.");
  for (std::size_t i = 0; i < connections.size(); ++i)
    w.sample("tunnel_connections_total", std::string("outcome=\"") + outcome_names[i] + "\"", load(connections[i]));

  w.header("tunnel_bytes_total", "counter",
           "Payload bytes relayed; up = legacy client to legacy server, down = the other way.");
  w.sample("tunnel_bytes_total", "direction=\"up\"", load(bytes_up));
  w.sample("tunnel_bytes_total", "direction=\"down\"", load(bytes_down));

  w.header("tunnel_handshake_failures_total", "counter", "TLS handshakes that failed, by reason.");
  for (std::size_t i = 0; i < handshake_failures.size(); ++i)
    w.sample("tunnel_handshake_failures_total", std::string("reason=\"") + handshake_failure_names[i] + "\"",
             load(handshake_failures[i]));

  w.single("tunnel_handshakes_resumed_total", "counter",
           "Successful TLS handshakes that resumed an earlier session (no certificates exchanged).", load(handshakes_resumed));
  w.header("tunnel_handshake_duration_seconds", "histogram", "Duration of successful TLS handshakes.");
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < histogram::bounds.size(); ++i) {
    cumulative += load(handshake_seconds.buckets[i]);
    w.sample("tunnel_handshake_duration_seconds_bucket", "le=\"" + number(histogram::bounds[i]) + "\"", cumulative);
  }
  cumulative += load(handshake_seconds.buckets.back());
  w.sample("tunnel_handshake_duration_seconds_bucket", "le=\"+Inf\"", cumulative);
  w.sample("tunnel_handshake_duration_seconds_sum", "", seconds_of_us(load(handshake_seconds.sum_us)));
  w.sample("tunnel_handshake_duration_seconds_count", "", load(handshake_seconds.count));

  w.single("tunnel_udp_flows_active", "gauge", "UDP flows open now.", load(udp_flows_active));
  w.single("tunnel_udp_flows_total", "counter", "UDP flows opened.", load(udp_flows_total));
  w.header("tunnel_udp_datagrams_total", "counter", "UDP datagrams relayed, by direction.");
  w.sample("tunnel_udp_datagrams_total", "direction=\"up\"", load(udp_datagrams_up));
  w.sample("tunnel_udp_datagrams_total", "direction=\"down\"", load(udp_datagrams_down));
  w.header("tunnel_udp_datagrams_dropped_total", "counter", "UDP datagrams dropped, by reason.");
  for (std::size_t i = 0; i < udp_dropped.size(); ++i)
    w.sample("tunnel_udp_datagrams_dropped_total", std::string("reason=\"") + udp_drop_names[i] + "\"",
             load(udp_dropped[i]));

  w.header("tunnel_mux_sessions", "gauge", "Mux connections, by state (ready: the peer has answered).");
  w.sample("tunnel_mux_sessions", "state=\"open\"", load(mux_sessions_active));
  w.sample("tunnel_mux_sessions", "state=\"ready\"", load(mux_sessions_ready));
  w.single("tunnel_mux_streams_active", "gauge", "Legacy connections carried as mux streams now.", load(mux_streams_active));
  w.single("tunnel_mux_window_growth_bytes", "gauge",
           "Receive windows grown for long paths: bytes of connection window past the initial 4 MiB, all mux connections (at most 256 MiB).", load(mux_window_growth_bytes));
  w.single("tunnel_mux_window_growth_refused_total", "counter",
           "Mux connections whose windows could not grow as far as their path asked: the 256 MiB was in use.", load(mux_window_growth_refused));

  w.single("tunnel_accept_failures_total", "counter",
           "Failed accept() calls (out of file descriptors or memory); accepting backs off meanwhile.", load(accept_failures));
  w.single("tunnel_log_lines_suppressed_total", "counter",
           "Warning and error lines left out of the log: over 20 at once or 5 a second of one message.", load(log_lines_suppressed));

  w.single("tunnel_reloads_total", "counter", "Credential reloads that succeeded.", load(reloads));
  w.single("tunnel_reload_failures_total", "counter", "Credential reloads that failed (old credentials kept).", load(reload_failures));

  const auto expiry = load(certificate_expiry_unix);
  if (expiry != 0) {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         std::chrono::system_clock::now().time_since_epoch()).count();
    w.single("tunnel_certificate_expiry_seconds", "gauge", "Seconds until the first of our own certificates expires.", expiry - now);
  }
  return w.take();
}

}  // namespace tunnel::ops
