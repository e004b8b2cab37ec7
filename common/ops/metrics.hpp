#pragma once
// Process metrics in the Prometheus text format. Counters are lock-free atomics that
// workers bump on the data path; rendering happens only when /metrics is scraped.
// Labels are bounded by construction: fixed enums and the configured service names,
// never a client address.
#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace tunnel::ops {

// How a relayed connection (or a refused attempt) ended.
enum class outcome : std::size_t {
  closed,             // both directions ended cleanly
  error,              // an I/O or TLS error mid-connection
  timeout,            // idle or close timeout
  handshake_failed,   // TLS handshake or peer verification failed
  probe,              // connected and left without a byte
  limit,              // refused by --max-conns
  unreachable,        // the next hop could not be dialled
  shutdown,           // closed by the shutdown deadline
  penalised,          // refused at once: its source's failed handshakes cost too much CPU
  count_
};

enum class handshake_failure : std::size_t {
  policy,      // not on the allow-list / pin mismatch
  verify,      // chain, expiry, name, usage
  timeout,
  protocol,    // anything else: version, garbage, alerts, resets
  count_
};

enum class udp_drop : std::size_t {
  oversized,
  queue_full,
  garbage,
  unknown_session,
  flow_limit,
  other,
  mux_queue_full,  // UDP over TLS: the mux connection's datagram queue was at its bound
  penalised,       // a source in the penalty box: its ClientHello, or its handshake's next datagram
  count_
};

struct histogram {
  static constexpr std::array<double, 10> bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0};
  std::array<std::atomic<std::uint64_t>, bounds.size() + 1> buckets{};  // last: +Inf
  std::atomic<std::uint64_t> count{0};
  std::atomic<std::uint64_t> sum_us{0};
  void observe(double seconds);
};

class metrics {
 public:
  static metrics& get();

  void set_identity(std::string_view program, std::string_view service);

  std::atomic<std::int64_t> connections_active{0};
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(outcome::count_)> connections{};
  std::atomic<std::uint64_t> bytes_up{0}, bytes_down{0};
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(handshake_failure::count_)> handshake_failures{};
  std::atomic<std::uint64_t> handshakes_resumed{0};  // successful handshakes that resumed a session
  histogram handshake_seconds;
  std::atomic<std::int64_t> udp_flows_active{0};
  std::atomic<std::uint64_t> udp_flows_total{0};
  std::atomic<std::uint64_t> udp_datagrams_up{0}, udp_datagrams_down{0};
  std::array<std::atomic<std::uint64_t>, static_cast<std::size_t>(udp_drop::count_)> udp_dropped{};
  std::atomic<std::uint64_t> reloads{0}, reload_failures{0};
  std::atomic<std::uint64_t> accept_failures{0};  // failed accept() calls (out of descriptors, ...)
  std::atomic<std::uint64_t> log_lines_suppressed{0};  // warnings and errors over the log budget
  std::atomic<std::int64_t> mux_sessions_active{0};  // mux connections alive
  std::atomic<std::int64_t> mux_sessions_ready{0};   // of which the peer has answered
  std::atomic<std::int64_t> mux_streams_active{0};
  std::atomic<std::int64_t> mux_window_growth_bytes{0};   // connection windows grown past 4 MiB, all sessions
  std::atomic<std::uint64_t> mux_window_growth_refused{0}; // sessions the growth budget held back
  std::atomic<std::int64_t> certificate_expiry_unix{0};  // the soonest notAfter of our own certificates

  void count(outcome o) { connections[static_cast<std::size_t>(o)].fetch_add(1, std::memory_order_relaxed); }
  void count(handshake_failure f) {
    handshake_failures[static_cast<std::size_t>(f)].fetch_add(1, std::memory_order_relaxed);
  }
  void count(udp_drop d) { udp_dropped[static_cast<std::size_t>(d)].fetch_add(1, std::memory_order_relaxed); }

  // The whole exposition, HELP and TYPE lines included.
  std::string render() const;

 private:
  std::string program_ = "tunnel";
  std::string service_ = "default";
};

// Prometheus label-value escaping: backslash, double quote and newline.
std::string escape_label(std::string_view value);

}  // namespace tunnel::ops
