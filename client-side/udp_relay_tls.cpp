// tunnel-in's UDP flows over TLS: each flow is a mux flow (PROTOCOL.md, "Datagrams") in a
// pooled TLS connection to tunnel-out's TLS port. Used for every flow with --udp-over-tls,
// and after a fallback: when a flow's DTLS handshake hears nothing at all from tunnel-out's
// UDP port (no HelloVerifyRequest, no alert: UDP is blocked on the way) and a TLS
// connection to the fallback address works, the service carries new flows over TLS (logged
// once) and tries DTLS again every --dtls-retry, returning to it once a handshake completes.
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include "config/duration.hpp"
#include "net/udp_receive.hpp"
#include "ops/log.hpp"
#include "udp_relay.hpp"

namespace tunnel::client {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using clock = std::chrono::steady_clock;

// What a flow asks tunnel-out for when the service has no name: tunnel-out routes it to
// the only service on its port (and refuses it where the port has several).
constexpr std::string_view unnamed_service = "default";

bool is_refusal(mux::reset_code code) {
  return code == mux::reset_code::refused || code == mux::reset_code::limit || code == mux::reset_code::unreachable;
}

}  // namespace

std::size_t udp_relay::live_tls_connections() const { return pool_ ? pool_->live_sessions() : 0; }

void udp_relay::tls_failed(udp_flow& f, const std::string& reason, const std::string& identity) {
  // After a silent DTLS handshake say both, so the operator sees that UDP was tried first.
  const std::string both =
      f.silence.empty() ? reason : f.silence + "; TLS to " + tls_leg_->target.to_string() + ": " + reason;
  ops::warn("handshake with tunnel-out failed")
      .kv("peer", f.rec.peer)
      .kv("connect", tls_leg_->target.to_string())
      .kv("identity", identity)
      .kv("reason", both)
      .kv("queued_dropped", static_cast<std::uint64_t>(f.queued.size()));
  end(f, "handshake failed", false);
}

asio::awaitable<mux::session*> udp_relay::fall_back(udp_flow& f) {
  co_await asio::this_coro::throw_if_cancelled(false);
  ops::debug("no answer over UDP: trying TLS")
      .kv("peer", f.rec.peer)
      .kv("connect", f.rec.target)
      .kv("tls", tls_leg_->target.to_string())
      .kv("reason", f.silence);
  auto got = co_await shared_session(f);
  if (f.ended) {
    if (got.attempt.secure) got.attempt.secure->close();
    co_return nullptr;
  }
  if (!got.session) {
    std::string tls_reason;
    if (!got.attempt.secure) {
      tls_reason = (got.attempt.unreachable ? "unreachable: " : "") + got.attempt.reason;
    } else {
      tls_reason = "it does not offer mux mode (ALPN tunnel-mux/1)";
      got.attempt.secure->close();
    }
    tls_failed(f, tls_reason, got.attempt.identity);
    co_return nullptr;
  }
  // The service switches once this flow is authorized over TLS (run_tls_flow).
  co_return got.session;
}

asio::awaitable<acquired_session> udp_relay::shared_session(udp_flow& f) {
  co_await asio::this_coro::throw_if_cancelled(false);
  using namespace asio::experimental::awaitable_operators;
  // A new flow costs its sender one datagram, from any address it cares to forge: a burst
  // of them must not become a burst of TLS handshakes (nor of connections kept afterwards).
  if (tls_attempt_under_way_) {
    const std::uint64_t ended_before = tls_attempts_ended_;
    f.wake.expires_at(asio::steady_timer::time_point::max());  // (the handshake left a deadline on it)
    while (tls_attempts_ended_ == ended_before && !f.ended)
      co_await (tls_attempt_done_.async_wait(as_result) || f.wake.async_wait(as_result));
    acquired_session shared;
    if (f.ended) co_return shared;
    // The attempt's session (its flows wait for its first answer themselves), else any.
    const auto ex = co_await asio::this_coro::executor;
    shared.session = pool_->still_usable(ex, last_tls_session_);
    if (!shared.session) shared.session = pool_->pick(ex);
    if (!shared.session) {
      shared.attempt.unreachable = last_tls_failure_.unreachable;
      shared.attempt.reason = last_tls_failure_.reason;
      shared.attempt.identity = last_tls_failure_.identity;
      if (shared.attempt.reason.empty()) shared.attempt.reason = "no mux connection available";
    }
    co_return shared;
  }
  tls_attempt_under_way_ = true;
  // What waiters find if the attempt ends without an answer (it threw).
  last_tls_session_ = nullptr;
  last_tls_failure_ = {};
  last_tls_failure_.reason = "no mux connection available";
  struct settle {  // however the attempt ends: the next flow may try, the waiters look
    udp_relay& r;
    std::weak_ptr<const bool> alive;
    ~settle() {
      if (alive.expired()) return;  // destroyed at shutdown, after the relay
      r.tls_attempt_under_way_ = false;
      ++r.tls_attempts_ended_;
      r.tls_attempt_done_.cancel();
    }
  } settled{*this, alive_};
  const auto context = tls_source_->current();  // named: see acquire_session
  auto got = co_await acquire_session(*pool_, *tls_leg_, context);
  last_tls_failure_ = {};
  last_tls_session_ = got.session;
  if (!got.session) {
    last_tls_failure_.unreachable = got.attempt.unreachable;
    last_tls_failure_.identity = got.attempt.identity;
    last_tls_failure_.reason =
        got.attempt.secure ? "tunnel-out does not offer mux mode (ALPN tunnel-mux/1)" : got.attempt.reason;
  }
  co_return got;
}

void udp_relay::switch_to_tls(const std::string& why) {
  on_tls_ = true;
  ops::warn("UDP to tunnel-out gets no answer: carrying flows over TLS")
      .kv("connect", svc_.target.to_string())
      .kv("tls", tls_leg_->target.to_string())
      .kv("reason", why)
      .kv("dtls_retry", svc_.udp.dtls_retry.count() ? config::format_duration(svc_.udp.dtls_retry) : "never");
  // Flows whose DTLS handshake has heard nothing yet follow at once (handshake() looks).
  for (auto& [key, f] : flows_)
    if (!f->ready && !f->heard && !f->over_tls) f->wake.cancel();
  if (svc_.udp.dtls_retry.count() > 0) asio::co_spawn(io_, probe_dtls(), asio::detached);
}

asio::awaitable<void> udp_relay::probe_dtls() {
  co_await asio::this_coro::throw_if_cancelled(false);
  asio::steady_timer pause(io_);
  while (on_tls_ && !stopping_) {
    pause.expires_after(svc_.udp.dtls_retry);
    co_await pause.async_wait(as_result);
    if (!on_tls_ || stopping_) co_return;
    // A handshake of its own, with no legacy client behind it: no flow pays for the test.
    udp_flow probe(io_, net::udp::endpoint{}, held_bytes_);
    probe.probe = true;
    probe.rec.peer = "(DTLS probe)";
    probe.rec.target = svc_.target.to_string();
    if (!co_await open_session(probe)) continue;
    const auto hs = co_await handshake(probe);
    if (hs == handshake_end::done) {
      end(probe, "probe done", true);  // close_notify: tunnel-out frees it at once
      if (stopping_) co_return;  // (shutting down: still said goodbye)
      on_tls_ = false;
      ops::info("tunnel-out answers over UDP again: new flows use DTLS")
          .kv("connect", svc_.target.to_string())
          .kv("identity", probe.tls->peer() ? probe.tls->peer()->describe() : std::string("unknown"));
      co_return;
    }
    end(probe, "probe failed", false);
    ops::debug("DTLS probe failed").kv("connect", svc_.target.to_string()).kv("reason", probe.silence);
  }
}

asio::awaitable<void> udp_relay::run_tls_flow(udp_flow& f, mux::session* session) {
  co_await asio::this_coro::throw_if_cancelled(false);
  f.rec.target = tls_leg_->target.to_string();
  f.rec.over_tls = true;
  if (!session) {
    auto got = co_await shared_session(f);
    if (got.attempt.secure && !got.session) got.attempt.secure->close();
    if (f.ended) co_return;
    if (!got.session) {
      if (got.attempt.unreachable) {
        log_attempt_failure(got.attempt, f.rec.peer, f.rec.target);
        end(f, "tunnel-out unreachable", false);
      } else {
        tls_failed(f, got.attempt.secure ? "tunnel-out does not offer mux mode (ALPN tunnel-mux/1)" : got.attempt.reason,
                   got.attempt.identity);
      }
      co_return;
    }
    session = got.session;
  }
  const std::string_view service = svc_.name.empty() ? unnamed_service : std::string_view(svc_.name);
  f.mux = session->open_flow(service, f.rec.peer);
  if (!f.mux) {
    if (session->ready() && !session->peer_carries_flows())
      co_return tls_failed(f, "tunnel-out does not carry UDP flows over TLS (it is older than tunnel-in)",
                           identity_of(session->tls()));
    ops::warn("tunnel-out unreachable").kv("peer", f.rec.peer).kv("connect", f.rec.target).kv("error", "no mux connection available");
    co_return end(f, "tunnel-out unreachable", false);
  }
  f.over_tls = true;
  f.rec.identity = identity_of(session->tls());
  const std::string version = session->tls().tls().version(), cipher = session->tls().tls().ciphersuite();
  session = nullptr;  // it may end while the flow runs; the mux flow then says so
  udp_flow* raw = &f;  // the handlers live in f.mux, which f owns
  f.mux->on_receive([this, raw](std::span<const std::byte> d) { from_tunnel(*raw, d); });
  f.mux->on_event([raw] { raw->wake.cancel(); });
  // Authorized once tunnel-out has answered on this connection (at once on a pool
  // connection; a new one waits for its first pong: in TLS 1.3 a refusal of our
  // certificate arrives only after the handshake).
  const auto deadline = clock::now() + svc_.limits.handshake;
  while (!f.ended && !f.mux->ready() && !f.mux->ended() && clock::now() < deadline) {
    f.wake.expires_at(deadline);
    co_await f.wake.async_wait(as_result);
  }
  if (f.ended) co_return;
  if (!f.mux->ready())
    co_return tls_failed(f, f.mux->ended() ? f.mux->reason() : "no answer from tunnel-out within --handshake-timeout",
                         f.rec.identity);
  // A fallback is decided here: TLS carried a flow, not just a handshake.
  if (!on_tls_ && !f.silence.empty()) switch_to_tls(f.silence);
  ops::log_flow_authorized(f.rec, version, cipher, false);
  f.ready = true;
  f.last_activity = clock::now();
  while (!f.queued.empty() && !f.ended) send_over_tls(f, f.queued.pop());
  co_await watch_tls(f);
}

asio::awaitable<void> udp_relay::watch_tls(udp_flow& f) {
  for (;;) {
    if (f.ended) co_return;
    if (f.mux->ended()) {
      if (!f.mux->closed_by_peer()) co_return end(f, "mux connection ended: " + f.mux->reason(), false);
      if (!is_refusal(f.mux->peer_code())) co_return end(f, "closed by tunnel-out", false);
      ops::warn("flow refused by tunnel-out")
          .kv("peer", f.rec.peer)
          .kv("connect", f.rec.target)
          .kv("identity", f.rec.identity)
          .kv("reason", f.mux->reason());
      co_return end(f, "refused by tunnel-out: " + f.mux->reason(), false);
    }
    const auto idle_deadline = f.last_activity + svc_.udp.flow_idle;
    if (clock::now() >= idle_deadline) co_return end(f, "idle timeout", true, mux::reset_code::timeout);
    f.wake.expires_at(idle_deadline);
    co_await f.wake.async_wait(as_result);
  }
}

void udp_relay::send_over_tls(udp_flow& f, std::span<const unsigned char> d) {
  switch (f.mux->send(std::as_bytes(d))) {
    case mux::flow::send_result::sent:
      f.last_activity = clock::now();
      f.rec.datagrams_up++;
      f.rec.bytes_up += d.size();
      return;
    case mux::flow::send_result::oversized:
      // Never split or truncate: a datagram is one frame or lost whole, and counted.
      return net::log_oversize(oversize_, "datagram dropped: larger than a mux datagram frame", f.rec.peer, d.size(),
                               mux::max_payload);
    case mux::flow::send_result::queue_full:
      return net::log_drop(mux_queue_full_, "datagram dropped: the mux connection's datagram queue is full", f.legacy,
                           d.size());
    case mux::flow::send_result::ended:
      return;  // watch_tls ends the flow and says why
  }
}

void udp_relay::from_tunnel(udp_flow& f, std::span<const std::byte> d) {
  if (f.ended) return;
  f.last_activity = clock::now();
  f.rec.datagrams_down++;
  f.rec.bytes_down += d.size();
  const std::span<const unsigned char> payload(reinterpret_cast<const unsigned char*>(d.data()), d.size());
  if (net::send_datagram(socket_, payload, f.legacy))
    net::log_drop(send_failed_, "datagram dropped: sending to the legacy client failed", f.legacy, d.size());
}

}  // namespace tunnel::client
