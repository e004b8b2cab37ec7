#pragma once
// tunnel-out's side of mux mode: one session per TLS connection that negotiated ALPN
// tunnel-mux/1, one coroutine per stream relaying to the target. Authorization runs twice:
// the connection's peer identity in the handshake, and again at every stream open against
// the current credentials and allow-list (a reload that removes a client stops its new
// streams). A refused stream never reaches the target.
#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <atomic>
#include <memory>
#include <mutex>
#include <vector>

#include "port.hpp"
#include "mux/session.hpp"
#include "ops/connection_log.hpp"
#include "ops/runtime.hpp"
#include "tls/context_source.hpp"
#include "tls/tls_stream.hpp"

namespace tunnel::server {

// The mux state of one port: live sessions (for GOAWAY at shutdown and reload) and the
// stream count that --max-conns bounds. Outlives the workers' event loops.
class mux_host {
 public:
  // `p` must outlive the host. `budget`: the process's connection limit, which each stream
  // (holding its target's descriptor) counts against as an accepted connection does.
  mux_host(const port& p, std::shared_ptr<tls::context_source> source, std::shared_ptr<ops::connection_budget> budget)
      : port_(p), source_(std::move(source)), budget_(std::move(budget)) {}

  // Any thread (the shutdown hook): GOAWAY on every session; later sessions get it at once.
  void drain();
  // Any thread (after a successful credential reload): GOAWAY on every live session, so new
  // streams need a fresh handshake checked against the new CA, CRL and key. Open streams
  // finish; sessions opened later are unaffected.
  void retire_all(std::string_view reason);

  const port& services() const { return port_; }
  std::shared_ptr<const tls::tls_context> current() const { return source_->current(); }
  std::atomic<std::size_t> streams{0};
  const std::shared_ptr<ops::connection_budget>& budget() const { return budget_; }

  // On the session's thread.
  void add(mux::session* s, asio::any_io_executor ex);
  void remove(mux::session* s);

 private:
  const port& port_;
  std::shared_ptr<tls::context_source> source_;
  std::shared_ptr<ops::connection_budget> budget_;
  std::mutex mutex_;  // guards sessions_ and draining_
  std::vector<std::pair<mux::session*, asio::any_io_executor>> sessions_;
  bool draining_ = false;
};

// Runs the mux session over an authenticated connection until it ends. `rec` describes the
// connection (peer, identity). Never throws for network or TLS errors.
asio::awaitable<void> serve_mux(mux_host& host, tls::tls_stream& secure, ops::connection_record rec);

}  // namespace tunnel::server
