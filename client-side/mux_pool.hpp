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

// Never throws for network or TLS errors.
asio::awaitable<tunnel_attempt> connect_tunnel(const config::service& svc,
                                               std::shared_ptr<const tls::tls_context> context);

class mux_pool {
 public:
  // Sets up per-worker state; starts nothing. `rt`, `svc` and `source` must outlive the
  // workers' event loops.
  mux_pool(ops::runtime& rt, const config::service& svc, std::shared_ptr<tls::context_source> source);
  ~mux_pool();

  // Starts the slots on every worker (idempotent, any thread).
  void start();
  // No more reconnects; GOAWAY on every session, which then ends with its last stream
  // (any thread, e.g. the shutdown hook).
  void stop();

  // On the calling worker's thread: a ready session with room (pool slots before
  // adopted ones, then fewest streams), or nullptr.
  mux::session* pick(const asio::any_io_executor& ex);
  // Like pick, but while a pool connection on this worker is being set up (start-up,
  // reconnect), waits for it up to `limit` rather than paying for a connection of its own.
  asio::awaitable<mux::session*> pick_or_wait(std::chrono::milliseconds limit);
  // On the calling worker's thread: runs a connection that negotiated mux as a session on
  // this worker. It is kept while it has streams, and after that only while the worker has
  // no pool session of its own. Returns the session (valid until its streams are done).
  mux::session* adopt(const asio::any_io_executor& ex, std::unique_ptr<tls::tls_stream> secure);

  struct worker_state;

 private:
  worker_state* local(const asio::any_io_executor& ex);

  const config::service& svc_;
  std::shared_ptr<tls::context_source> source_;
  std::vector<std::shared_ptr<worker_state>> workers_;
  std::atomic<bool> started_{false};
};

}  // namespace tunnel::client
