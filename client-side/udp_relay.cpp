#include "udp_relay.hpp"

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <utility>
#include <vector>

#include "config/duration.hpp"
#include "net/udp_receive.hpp"
#include "ops/log.hpp"
#include "tls/error.hpp"

namespace tunnel::client {
namespace {

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// Datagrams handled per wake-up of one socket before yielding to the other flows.
constexpr int batch = 64;
// mbedTLS acts on an expired timer only when it next reads; look again after this long
// instead of spinning if it left one expired.
constexpr auto timer_recheck = 10ms;

std::string mbedtls_reason(int rc) { return tls::make_mbedtls_error(rc).message(); }

}  // namespace

udp_relay::udp_relay(asio::io_context& io, const config::service& svc, std::shared_ptr<const tls::context_source> source,
                     tls_leg_parts tls)
    : io_(io),
      svc_(svc),
      source_(std::move(source)),
      socket_(net::bind_udp(io_, svc.listen)),
      tls_leg_(tls.leg),
      tls_source_(std::move(tls.source)),
      pool_(tls.pool),
      on_tls_(svc.udp.over_tls),
      tls_attempt_done_(io_, asio::steady_timer::time_point::max()) {}

udp_relay::~udp_relay() = default;

std::string udp_relay::bound_address() const {
  std::error_code ec;
  const auto ep = socket_.local_endpoint(ec);
  return ec ? std::string("unknown") : net::describe(ep);
}

void udp_relay::start() {
  asio::co_spawn(io_, receive_loop(), asio::detached);
  if (svc_.udp.over_tls) pool_->start();  // connections ready before the first datagram
}

void udp_relay::stop() {
  stopping_ = true;
  std::vector<udp_flow*> live;
  for (auto& [key, f] : flows_) live.push_back(f);
  for (auto* f : live) end(*f, "shutdown", true, mux::reset_code::shutdown);
  std::error_code ignored;
  socket_.close(ignored);
  if (pool_) pool_->stop();  // after the flows' FLOW_CLOSE frames, which go out first
  ops::info("udp service stopped")
      .kv("dropped_oversize", oversize_.total())
      .kv("dropped_queue_full", queue_full_.total())
      .kv("dropped_flow_limit", flow_limit_.total())
      .kv("dropped_empty", empty_.total())
      .kv("dropped_mux_queue_full", mux_queue_full_.total())
      .kv("dropped_send_failed", send_failed_.total());
}

asio::awaitable<void> udp_relay::receive_loop() {
  co_await net::receive_datagrams(socket_, datagram_, stopping_, batch,
                                  [this](std::span<const unsigned char> d, const net::udp::endpoint& from) {
                                    on_legacy_datagram(d, from);
                                  });
}

void udp_relay::on_legacy_datagram(std::span<const unsigned char> d, const net::udp::endpoint& from) {
  udp_flow* f = nullptr;
  const std::string key = net::endpoint_key(from);
  if (auto it = flows_.find(key); it != flows_.end()) {
    f = it->second;
  } else {
    // DTLS cannot carry it, so it opens no flow: no handshake for a datagram to be dropped.
    if (d.empty() && !on_tls_) return net::log_drop(empty_, "datagram dropped: empty", from, 0);
    if (flows_.size() >= svc_.udp.max_flows) {
      if (flow_limit_.count())
        ops::warn("flow refused: limit reached")
            .kv("peer", net::describe(from))
            .kv("max_flows", static_cast<std::uint64_t>(svc_.udp.max_flows))
            .kv("refused_since_last_log", flow_limit_.since_last_log())
            .kv("refused_total", flow_limit_.total());
      return;
    }
    auto flow = std::make_unique<udp_flow>(io_, from, held_bytes_);
    udp_flow& fresh = *flow;
    fresh.rec.peer = net::describe(from);
    fresh.rec.target = svc_.target.to_string();
    if (!fresh.queued.push(d))
      net::log_drop(queue_full_, "datagram dropped: queue full while the DTLS handshake runs", from, d.size());
    flows_[key] = &fresh;
    // The flow is not touched after this: co_spawn starts it at once, and it may have
    // ended (and been freed) before co_spawn returns, e.g. when no connection can carry it.
    try {
      asio::co_spawn(io_, run_flow(std::move(flow)), asio::detached);
    } catch (...) {
      if (auto it = flows_.find(key); it != flows_.end() && it->second == &fresh) flows_.erase(it);
      throw;  // (out of memory: the receive loop logs it and loses this datagram)
    }
    return;
  }
  if (!f->ready) {
    if (!f->queued.push(d))
      return net::log_drop(queue_full_, "datagram dropped: queue full while the DTLS handshake runs", from, d.size());
    return;
  }
  send_secure(*f, d);
}

void udp_relay::send_secure(udp_flow& f, std::span<const unsigned char> d) {
  if (f.over_tls) return send_over_tls(f, d);
  // DTLS cannot carry an empty datagram (mbedTLS skips empty records).
  if (d.empty()) return net::log_drop(empty_, "datagram dropped: empty", f.legacy, 0);
  // Never split or truncate: a datagram that does not fit one record for the MTU is lost
  // whole and counted.
  if (d.size() > f.tls->max_payload()) {
    return net::log_oversize(oversize_, "datagram dropped: larger than the DTLS payload for --mtu", f.rec.peer,
                             d.size(), f.tls->max_payload());
  }
  const int rc = f.tls->write(d);
  flush(f);
  if (rc < 0) return end(f, mbedtls_reason(rc), false);
  f.last_activity = clock::now();
  f.rec.datagrams_up++;
  f.rec.bytes_up += d.size();
}

void udp_relay::flush(udp_flow& f) {
  if (!f.tls) return;
  for (const auto& out : f.tls->output()) {
    const auto ec = net::send_datagram(f.secure, out);
    // connection_refused reports an ICMP error for an earlier datagram; this one went.
    if (ec && ec != asio::error::connection_refused)
      net::log_drop(send_failed_, "datagram dropped: sending to tunnel-out failed", f.legacy, out.size());
  }
  f.tls->output().clear();
}

void udp_relay::read_records(udp_flow& f) {
  for (;;) {
    const int rc = f.tls->read(plaintext_);
    flush(f);
    if (rc > 0) {
      const auto n = static_cast<std::size_t>(rc);
      f.last_activity = clock::now();
      f.rec.datagrams_down++;
      f.rec.bytes_down += n;
      if (net::send_datagram(socket_, std::span<const unsigned char>(plaintext_.data(), n), f.legacy))
        net::log_drop(send_failed_, "datagram dropped: sending to the legacy client failed", f.legacy, n);
      continue;
    }
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_WANT_READ) {
      if (f.tls->pending()) continue;  // another record waits in the same datagram
      return;
    }
    if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) return end(f, "closed by tunnel-out", false);
    return end(f, mbedtls_reason(rc), false);
  }
}

void udp_relay::end(udp_flow& f, const std::string& reason, bool notify_peer, mux::reset_code code) {
  if (f.ended) return;
  f.ended = true;
  if (auto it = flows_.find(f.key); it != flows_.end() && it->second == &f) flows_.erase(it);
  // Tell tunnel-out the session is over so it frees the flow now, not at its idle expiry.
  if (notify_peer && f.tls && f.tls->handshake_done() && f.tls->close_notify() == 0) flush(f);
  if (notify_peer && f.mux) f.mux->close(code, reason);
  if (f.ready) ops::log_flow_closed(f.rec, reason);
  f.queued.clear();
  std::error_code ignored;
  f.secure.close(ignored);
  f.wake.cancel();
}

asio::awaitable<void> udp_relay::run_flow(std::unique_ptr<udp_flow> owned) {
  using namespace asio::experimental::awaitable_operators;
  udp_flow& f = *owned;
  if (on_tls_) {
    co_await run_tls_flow(f, nullptr);
    co_return;
  }
  if (!co_await open_session(f)) co_return;
  const auto hs = co_await handshake(f);
  if (hs == handshake_end::failed) co_return;
  if (hs == handshake_end::silent) {  // UDP seems blocked: over TLS, if that works
    std::error_code ignored;
    f.secure.close(ignored);
    f.tls.reset();
    if (mux::session* s = co_await fall_back(f)) co_await run_tls_flow(f, s);
    co_return;
  }
  f.rec.identity = f.tls->peer() ? f.tls->peer()->describe() : std::string("unknown");
  ops::log_flow_authorized(f.rec, f.tls->version(), f.tls->ciphersuite(), f.tls->cid_in_use());
  f.ready = true;
  f.last_activity = clock::now();
  while (!f.queued.empty() && !f.ended) send_secure(f, f.queued.pop());
  // `||`: the flow ends when either does: tunnel-out's socket failing or closing, or the
  // watch returning on idle expiry or shutdown (end() wakes it).
  if (!f.ended) co_await (secure_to_legacy(f) || watch(f));
  if (!f.ended) end(f, "tunnel-out socket failed", true);
}

asio::awaitable<bool> udp_relay::open_session(udp_flow& f) {
  net::udp::endpoint reached;
  const std::error_code ec = co_await net::connect_udp(f.secure, svc_.target, svc_.limits.connect, reached);
  if (!ec) {
    try {
      // A snapshot per session: a reload applies to new flows, never to live ones.
      f.tls = std::make_unique<tls::dtls_engine>(source_->current(), svc_.udp.mtu);
    } catch (const std::exception& e) {
      ops::error("cannot create a DTLS session").kv("peer", f.rec.peer).kv("error", e.what());
      end(f, "no memory for a DTLS session", false);
      co_return false;
    }
    // An empty ID of our own: tunnel-out may give us one, we need none (our socket is
    // connected, so every datagram on it is from tunnel-out).
    f.tls->enable_cid({});
    f.tls->on_timer_change([&f] { f.wake.cancel(); });
    co_return !f.ended;
  }
  if (!f.ended && !f.probe) {
    ops::warn("tunnel-out unreachable")
        .kv("peer", f.rec.peer)
        .kv("connect", f.rec.target)
        .kv("error", net::connect_udp_error(ec));
    end(f, "tunnel-out unreachable", false);
  }
  co_return false;
}

namespace {

// "... within 10s", the way a silent handshake is described.
std::string no_answer(std::chrono::milliseconds limit) {
  return "no answer from tunnel-out's UDP port within " + config::format_duration(limit);
}

}  // namespace

asio::awaitable<udp_relay::handshake_end> udp_relay::handshake(udp_flow& f) {
  using namespace asio::experimental::awaitable_operators;
  const auto limit = f.started + svc_.limits.handshake;
  std::string failure;
  std::string icmp;  // an ICMP error reported meanwhile (no proof of anything on its own)
  bool fed = false;  // a datagram from tunnel-out went to mbedTLS since its last step
  int taken = 0;  // receive attempts: every batch-th waits instead
  while (!f.ended) {
    // Another flow found UDP blocked and the service moved to TLS: a flow that has heard
    // nothing yet follows it rather than waiting out its own timeout.
    if (on_tls_ && !f.heard && !f.probe) {
      failure = "the service moved to TLS";
      break;
    }
    const int rc = f.tls->handshake();
    // Heard from tunnel-out: its first handshake message was taken, or what it sent ended
    // the handshake (an alert, a certificate refused). Junk from its address is no answer:
    // it must not keep a flow whose UDP path is blocked from falling back to TLS.
    if (f.tls->server_answered() || (fed && rc != MBEDTLS_ERR_SSL_WANT_READ && rc != MBEDTLS_ERR_SSL_TIMEOUT))
      f.heard = true;
    fed = false;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ && !f.tls->output().empty() && !f.flights.allow(f.tls->output()))
      f.tls->output().clear();
    flush(f);
    if (rc == 0 && f.tls->overtaken_by_reload()) {
      failure = tls::tls_context::overtaken_refusal;
      break;
    }
    if (rc == 0) co_return handshake_end::done;
    if (rc != MBEDTLS_ERR_SSL_WANT_READ) {
      const std::string verify = f.tls->verify_failure();
      failure = verify.empty() ? mbedtls_reason(rc) : verify;
      break;
    }
    const auto now = clock::now();
    if (now >= limit) {
      failure = f.heard ? std::string("handshake timeout") : no_answer(svc_.limits.handshake);
      if (!f.heard && !icmp.empty()) failure += " (" + icmp + ")";
      break;
    }
    // Take what has already arrived before waiting, a batch at a time: datagrams that keep
    // coming (a flood sent from tunnel-out's address) must not hold the thread the other
    // flows share; the wait below returns at once then, through the event loop.
    std::error_code rec = asio::error::would_block;
    std::size_t n = 0;
    if (++taken % batch != 0) n = f.secure.receive(asio::buffer(datagram_), 0, rec);
    if (!rec) {
      f.tls->feed(std::span<const unsigned char>(datagram_.data(), n));
      fed = true;
      continue;
    }
    if (net::is_icmp_report(rec)) {
      icmp = rec == asio::error::connection_refused ? "ICMP: port closed" : "ICMP: " + rec.message();
      // With a TLS leg, at once over TLS: still tunnel-out, still authenticated, so a forged
      // ICMP error can move the flow but not expose it. Without one, anyone could end every
      // handshake by spraying ICMP errors over the port range: carry on to the deadline.
      if (tls_leg_ && !f.heard) {
        failure = rec == asio::error::connection_refused ? std::string("tunnel-out refused (port closed)") : icmp;
        break;
      }
      continue;
    }
    if (rec != asio::error::would_block) {
      failure = rec.message();
      break;
    }
    f.wake.expires_at(std::min(limit, std::max(f.tls->timer_deadline(), now + timer_recheck)));
    // `||`: a datagram from tunnel-out, mbedTLS's retransmission timer, the handshake
    // deadline or end() (which cancels the timer), whichever comes first.
    co_await (f.secure.async_wait(net::udp::socket::wait_read, as_result) || f.wake.async_wait(as_result));
  }
  if (f.ended) co_return handshake_end::failed;
  // Nothing at all came back (no HelloVerifyRequest, no alert): UDP may be blocked on the
  // way. With a TLS leg the caller tries that; the flow stays up meanwhile.
  if (!f.heard && tls_leg_) {
    f.silence = failure;
    co_return handshake_end::silent;
  }
  const auto& server = f.tls->peer();
  ops::event(f.probe ? spdlog::level::debug : spdlog::level::warn, "handshake with tunnel-out failed")
      .kv("peer", f.rec.peer)
      .kv("connect", f.rec.target)
      .kv("identity", server ? server->describe() : std::string("unknown"))
      .kv("reason", failure)
      .kv("queued_dropped", static_cast<std::uint64_t>(f.queued.size()));
  end(f, "handshake failed", true);  // close_notify only after a finished handshake (one a reload overtook)
  co_return handshake_end::failed;
}

asio::awaitable<void> udp_relay::secure_to_legacy(udp_flow& f) {
  while (!f.ended) {
    auto [ec] = co_await f.secure.async_wait(net::udp::socket::wait_read, as_result);
    if (ec || f.ended) co_return;
    for (int i = 0; i < batch && !f.ended; ++i) {
      std::error_code rec;
      const std::size_t n = f.secure.receive(asio::buffer(datagram_), 0, rec);
      if (rec == asio::error::would_block) break;
      // An ICMP error (port or host unreachable, prohibited, ...) is no proof that the
      // session is gone: anyone can send one (spraying the port range would end every
      // flow), so an established flow carries on and ends, if tunnel-out is really gone,
      // at its idle timeout.
      if (net::is_icmp_report(rec)) continue;
      if (rec) {
        end(f, rec.message(), false);
        co_return;
      }
      f.tls->feed(std::span<const unsigned char>(datagram_.data(), n));
      read_records(f);
    }
  }
}

asio::awaitable<void> udp_relay::watch(udp_flow& f) {
  for (;;) {
    if (f.ended) co_return;
    auto now = clock::now();
    if (now >= f.tls->timer_deadline()) {
      read_records(f);  // lets mbedTLS retransmit or give up
      if (f.ended) co_return;
      now = clock::now();
    }
    const auto idle_deadline = f.last_activity + svc_.udp.flow_idle;
    if (now >= idle_deadline) {
      end(f, "idle timeout", true);
      co_return;
    }
    f.wake.expires_at(std::min(idle_deadline, std::max(f.tls->timer_deadline(), now + timer_recheck)));
    co_await f.wake.async_wait(as_result);
  }
}

std::unique_ptr<udp_relay> serve_udp(ops::runtime& rt, const config::service& svc,
                                     std::shared_ptr<const tls::context_source> source, udp_relay::tls_leg_parts tls) {
  const config::service* tls_leg = tls.leg;
  auto relay = std::make_unique<udp_relay>(rt.main_context(), svc, std::move(source), std::move(tls));
  const bool over_tls = svc.udp.over_tls;
  ops::info("listening")
      .kv("listen", relay->bound_address())
      .kv("service", svc.name.empty() ? "(none)" : svc.name)
      .kv("connect", svc.target.to_string())
      .kv("server_name", svc.tls.server_name.value_or(svc.files.psk.empty() ? "(pinned key only)" : "(pre-shared key)"))
      .kv("transport", "udp")
      .kv("tls", over_tls ? "TLS (mux datagram frames)" : "DTLS 1.2")
      .kv("tls_fallback", over_tls || !tls_leg ? std::string("off") : tls_leg->target.to_string())
      .kv("mtu", static_cast<std::uint64_t>(svc.udp.mtu))
      .kv("max_flows", static_cast<std::uint64_t>(svc.udp.max_flows))
      .kv("flow_idle_timeout", config::format_duration(svc.udp.flow_idle));
  relay->start();
  // All flows live on the main context, where the shutdown hook runs too.
  rt.on_shutdown([r = relay.get()] { r->stop(); });
  // Their goodbyes over TLS must still reach tunnel-out after the hook.
  if (tls_leg) rt.hold_shutdown_while([r = relay.get()] { return r->live_tls_connections() > 0; });
  return relay;
}

}  // namespace tunnel::client
