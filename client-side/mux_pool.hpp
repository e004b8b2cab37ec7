#pragma once
// tunnel-in's pool of mux connections (mux mode). Connection i lives on worker i % threads
// for its whole life, and a legacy connection only uses sessions on its own worker, so the
// data path stays lock-free. Each pool slot keeps one session up: it dials, handshakes,
// and when the session retires (rotation, GOAWAY) or dies, replaces it — at once after a
// session that worked, with jittered exponential backoff after failures.
#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <atomic>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config/service.hpp"
#include "mux/session.hpp"
#include "ops/runtime.hpp"
#include "tls/context_source.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::client {

// One dial and handshake towards tunnel-out, failures described for the log.
struct tunnel_attempt {
  std::unique_ptr<tls::tls_stream> secure;  // set on success
  bool unreachable = false;                 // the dial failed (else the handshake did)
  std::string reason;                       // why it failed
  std::string identity = "unknown";         // the server's identity, when it was seen
};

// Never throws (out of memory for the TLS session is a failed attempt too).
asio::awaitable<tunnel_attempt> connect_tunnel(const config::service& svc,
                                               std::shared_ptr<const tls::tls_context> context);

// The warning for a failed attempt ("tunnel-out unreachable" or "handshake with tunnel-out
// failed"), naming the legacy client `peer` and tunnel-out's address `connect`.
void log_attempt_failure(const tunnel_attempt& a, const std::string& peer, const std::string& connect);

// The server's identity as the log lines show it.
std::string identity_of(const tls::tls_stream& secure);

class mux_pool {
 public:
  // Sets up per-worker state; starts nothing. `rt`, `svc` and `source` must outlive the
  // workers' event loops.
  // `main_worker_only`: every connection on the main worker (UDP flows all live there).
  mux_pool(ops::runtime& rt, const config::service& svc, std::shared_ptr<tls::context_source> source,
           bool main_worker_only = false);
  ~mux_pool();

  // Starts the slots on every worker (idempotent, any thread).
  void start();
  // No more reconnects; GOAWAY on every session, which then ends with its last stream
  // (any thread, e.g. the shutdown hook).
  void stop();
  // GOAWAY on every session, which then ends with its last stream, while new streams go to
  // fresh connections made with the current credentials (any thread, e.g. a reload hook).
  void retire_all(std::string_view reason);

  // On the calling worker's thread: a ready session with room (pool slots before
  // adopted ones, then fewest streams and flows), or nullptr.
  mux::session* pick(const asio::any_io_executor& ex);
  // On the calling worker's thread: `s` if it is still one of this worker's sessions and
  // takes new streams (answered or not), else nullptr. For a session found before a wait.
  mux::session* still_usable(const asio::any_io_executor& ex, const mux::session* s);
  // Like pick, but while a pool connection on this worker is being set up (start-up,
  // reconnect), waits for it up to `limit` rather than paying for a connection of its own.
  asio::awaitable<mux::session*> pick_or_wait(std::chrono::milliseconds limit);
  // On the calling worker's thread: runs a connection that negotiated mux as a session on
  // this worker. It is kept while it has streams, and after that only while the worker has
  // no pool session of its own. Returns the session (valid until its streams are done).
  mux::session* adopt(const asio::any_io_executor& ex, std::unique_ptr<tls::tls_stream> secure);
  // Sessions still running, on every worker (any thread): at shutdown, their goodbyes
  // (GOAWAY, FLOW_CLOSE, close_notify) are still on the way while this is above zero.
  std::size_t live_sessions() const;

  struct worker_state;

 private:
  worker_state* local(const asio::any_io_executor& ex);

  const config::service& svc_;
  // Sessions launched and not yet ended, on all workers.
  std::shared_ptr<std::atomic<std::size_t>> live_ = std::make_shared<std::atomic<std::size_t>>(0);
  std::shared_ptr<tls::context_source> source_;
  std::vector<std::shared_ptr<worker_state>> workers_;
  std::atomic<bool> started_{false};
};

// What acquire_session found.
struct acquired_session {
  mux::session* session = nullptr;  // on this worker; valid until the caller next suspends
  // Without a session: the attempt that failed (secure unset), or a connection of our own
  // that did not negotiate mux (secure set; the caller uses it or closes it).
  tunnel_attempt attempt;
};

// A session to open streams or flows on: a ready pool session on this worker; else the pool
// connection being set up, waited for up to svc's connect and handshake timeouts; else a
// connection of our own, adopted into the pool when it negotiated mux (the pool is then
// started). Never throws for network or TLS errors; logs nothing but "mux connection up".
asio::awaitable<acquired_session> acquire_session(mux_pool& pool, const config::service& svc,
                                                  std::shared_ptr<const tls::tls_context> context);

}  // namespace tunnel::client
