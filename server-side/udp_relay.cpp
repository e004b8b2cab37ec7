#include "udp_relay.hpp"

#include "tls/handshake_flight.hpp"

#include <algorithm>

#include <psa/crypto.h>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <asio/experimental/awaitable_operators.hpp>
#include <asio/use_awaitable.hpp>
#include <cstring>
#include <map>
#include <vector>

#include "config/duration.hpp"
#include "net/udp_receive.hpp"
#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "tls/dtls_record.hpp"
#include "tls/error.hpp"
#include "tls/penalty.hpp"

namespace tunnel::server {
namespace {

void warn_handshake_failed(const udp_flow& f, std::string_view reason) {
  ops::warn("handshake failed")
      .kv("peer", f.rec.peer)
      .kv("identity", f.tls->peer() ? f.tls->peer()->describe() : std::string("unknown"))
      .kv("reason", reason);
}

constexpr auto as_result = asio::experimental::as_tuple(asio::use_awaitable);
using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

// Datagrams handled per wake-up of one socket before yielding, so one busy flow cannot
// starve the others on the thread.
constexpr int batch = 64;
constexpr auto timer_recheck = 10ms;

std::string mbedtls_reason(int rc) { return tls::make_mbedtls_error(rc).message(); }

}  // namespace

udp_relay::udp_relay(asio::io_context& io, const config::service& svc, net::udp::socket socket,
                     std::shared_ptr<const tls::context_source> source, std::shared_ptr<flow_budget> budget)
    : io_(io),
      svc_(svc),
      source_(std::move(source)),
      socket_(std::move(socket)),
      budget_(std::move(budget)),
      half_open_limit_(std::clamp<std::size_t>(svc.udp.max_flows, 16, 1024)) {}

udp_relay::~udp_relay() = default;

std::string udp_relay::bound_address() const {
  std::error_code ec;
  const auto ep = socket_.local_endpoint(ec);
  return ec ? std::string("unknown") : net::describe(ep);
}

void udp_relay::start() { asio::co_spawn(io_, receive_loop(), asio::detached); }

void udp_relay::stop() {
  stopping_ = true;
  std::vector<udp_flow*> live;
  for (auto& [cid, f] : by_cid_) live.push_back(f);
  for (auto* f : live) end(*f, "shutdown", true);
  std::error_code ignored;
  socket_.close(ignored);
  ops::info("udp service stopped")
      .kv("dropped_garbage", garbage_.total())
      .kv("dropped_unknown_cid", unknown_cid_.total())
      .kv("dropped_unverified_move", unverified_move_.total())
      .kv("dropped_flow_limit", flow_limit_.total())
      .kv("dropped_oversize", oversize_.total())
      .kv("dropped_send_failed", send_failed_.total())
      .kv("dropped_penalised", penalised_.total())
      .kv("dropped_awaiting_target", early_full_.total() + early_lost_.total())
      .kv("hello_verify_requests", hello_verify_sent_);
}

asio::awaitable<void> udp_relay::receive_loop() {
  co_await net::receive_datagrams(socket_, datagram_, stopping_, batch,
                                  [this](std::span<const unsigned char> d, const net::udp::endpoint& from) {
                                    route(d, from);
                                  });
}

void udp_relay::route(std::span<const unsigned char> d, const net::udp::endpoint& from) {
  const auto view = tls::classify_record(d, tls::server_cid_length);
  if (view.kind == tls::record_kind::invalid) return net::log_drop(garbage_, "datagram dropped: not DTLS", from, d.size());
  if (view.kind == tls::record_kind::cid) {
    std::uint64_t cid = 0;
    std::memcpy(&cid, view.cid.data(), sizeof cid);
    const auto it = by_cid_.find(cid);
    if (it == by_cid_.end())
      return net::log_drop(unknown_cid_, "datagram dropped: unknown connection ID", from, d.size());
    udp_flow& f = *it->second;
    if (from != f.peer) {
      // A new source address is believed only for a record that authenticates under this
      // session's keys, is no replay, and is newer than every record seen (RFC 9146 6):
      // anyone can copy a CID off the wire, and a reordered one must not move it back.
      if (!f.tls->handshake_done() || !f.tls->newer_than_seen(d) || f.tls->check_record(d) != 0)
        return net::log_drop(unverified_move_, "datagram dropped: unauthenticated record from a new address", from,
                    d.size());
      // Never onto an address another flow (or handshake) holds: that one's records would
      // go into this session.
      std::string key = net::endpoint_key(from);
      if (const auto other = by_addr_.find(key); other != by_addr_.end() && other->second != &f)
        return net::log_drop(unverified_move_, "datagram dropped: a flow already uses the new address", from,
                             d.size());
      if (moves_.count())  // one line per interval: a peer can move at every datagram
        ops::info("flow moved to a new address")
            .kv("identity", f.rec.identity)
            .kv("from", net::describe(f.peer))
            .kv("to", net::describe(from))
            .kv("moves_since_last_log", moves_.since_last_log());
      if (const auto own = by_addr_.find(f.peer_key); own != by_addr_.end() && own->second == &f) by_addr_.erase(own);
      f.peer = from;
      f.peer_key = std::move(key);
      f.rec.peer = net::describe(from);
      by_addr_[f.peer_key] = &f;
    }
    return deliver(f, d);
  }
  if (const auto it = by_addr_.find(net::endpoint_key(from)); it != by_addr_.end()) return deliver(*it->second, d);
  if (view.kind == tls::record_kind::client_hello) return admit(d, from);
  net::log_drop(garbage_, "datagram dropped: no flow for this address", from, d.size());
}

std::uint64_t udp_relay::fresh_cid() {
  for (;;) {
    std::uint64_t cid = 0;
    if (psa_generate_random(reinterpret_cast<std::uint8_t*>(&cid), sizeof cid) != PSA_SUCCESS)
      throw std::runtime_error("random generator failed");
    if (!by_cid_.contains(cid)) return cid;
  }
}

void udp_relay::admit(std::span<const unsigned char> d, const net::udp::endpoint& from) {
  // After a reload the gate is rebuilt from the new context, so new flows get the new
  // credentials. A cookie issued under the old context then fails once and the client is
  // asked again (one more HelloVerifyRequest round trip).
  if (tls::penalty::penalised(tls::penalty::source_of(from)))
    return net::log_drop(penalised_, "datagram dropped: source penalised", from, d.size());
  if (auto current = source_->current(); !gate_ || gate_context_ != current) {
    gate_ = std::make_unique<tls::dtls_engine>(current, svc_.udp.mtu);
    gate_context_ = std::move(current);
  }
  tls::dtls_engine& g = *gate_;
  g.reset();
  const std::string key = net::endpoint_key(from);
  const std::uint64_t cid = fresh_cid();
  if (g.set_client_id(key) != 0 ||
      g.enable_cid(std::span<const unsigned char>(reinterpret_cast<const unsigned char*>(&cid), sizeof cid)) != 0)
    return net::log_drop(garbage_, "datagram dropped: cannot prepare a DTLS context", from, d.size());
  g.feed(d);
  const int rc = g.handshake();
  if (rc == MBEDTLS_ERR_SSL_HELLO_VERIFY_REQUIRED) {
    // The amplification bound: an unverified address never gets more bytes than it sent.
    std::size_t reply = 0;
    for (const auto& out : g.output()) reply += out.size();
    if (reply <= d.size()) {
      for (const auto& out : g.output()) (void)net::send_datagram(socket_, out, from);
      ++hello_verify_sent_;
    }
    g.output().clear();
    return;
  }
  // A valid cookie makes mbedTLS answer with its whole first flight and wait for the next.
  // Anything else was malformed; its alert (if any) is not sent to an unverified address.
  if (rc != MBEDTLS_ERR_SSL_WANT_READ || g.output().empty()) {
    g.output().clear();
    return net::log_drop(garbage_, "datagram dropped: invalid ClientHello", from, d.size());
  }
  // With every --max-flows slot taken, refuse here: cheaper for both sides than a whole
  // handshake refused at its end (a slot is still only taken once the peer is verified).
  if (budget_->full()) {
    // Said at once, rather than left to the client's handshake timeout: its address passed
    // the cookie, and the alert is smaller than its ClientHello.
    g.output().clear();
    if (g.send_fatal_alert(MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR) == 0)
      for (const auto& out : g.output()) (void)net::send_datagram(socket_, out, from);
    g.output().clear();
    return refuse_for_limit(net::describe(from), "");
  }
  if (half_open_.size() >= half_open_limit_) {
    udp_flow& pushed = busiest_source_oldest_handshake();
    if (pushed_out_.count())  // a flood of handshakes pushes at every ClientHello
      ops::warn("handshake pushed out by newer ones")
          .kv("peer", pushed.rec.peer)
          .kv("half_open", std::uint64_t{half_open_limit_})
          .kv("pushed_since_last_log", pushed_out_.since_last_log());
    end(pushed, "handshake pushed out", false);
  }
  auto flow = std::make_unique<udp_flow>(io_, std::move(gate_), from, cid, held_bytes_);
  udp_flow& f = *flow;
  f.half_open = half_open_.insert(half_open_.end(), &f);
  f.rec.peer = net::describe(from);
  f.rec.target = svc_.target.to_string();
  f.tls->on_timer_change([&f] { f.wake.cancel(); });
  by_cid_[cid] = &f;
  by_addr_[f.peer_key] = &f;
  send_to_peer(f);
  asio::co_spawn(io_, run_flow(std::move(flow)), asio::detached);
}

udp_flow& udp_relay::busiest_source_oldest_handshake() {
  // Not simply the oldest handshake: one host cycling through many source ports would then
  // push out everyone else's. The host holding the most handshakes loses its oldest.
  std::map<tls::penalty::source, std::size_t> held;
  std::size_t most = 0;
  for (const udp_flow* f : half_open_) most = std::max(most, ++held[tls::penalty::source_of(f->peer)]);
  for (udp_flow* f : half_open_)  // oldest first
    if (held[tls::penalty::source_of(f->peer)] == most) return *f;
  return *half_open_.front();  // (not reached: the list is full)
}

void udp_relay::deliver(udp_flow& f, std::span<const unsigned char> d) {
  f.tls->feed(d);
  drive(f);
}

void udp_relay::drive(udp_flow& f) {
  if (f.ended) return;
  if (!f.tls->handshake_done()) {
    // Checked before every step: flows the source began together all passed the cookie
    // before its first costly failure was known.
    const auto source = tls::penalty::source_of(f.peer);
    if (tls::penalty::penalised(source)) {
      // This datagram is dropped: counted, though not against the rate-limited log of
      // dropped ClientHellos (this warning says why).
      ops::metrics::get().count(ops::udp_drop::penalised);
      warn_handshake_failed(f, tls::penalty::refusal);
      return end(f, "handshake failed", false);
    }
    const int rc = f.tls->handshake();
    send_to_peer(f);  // including a fatal alert that tells the client why
    if (rc == MBEDTLS_ERR_SSL_WANT_READ) return;
    if (rc != 0) {
      const std::string verify = f.tls->verify_failure();
      warn_handshake_failed(f, verify.empty() ? mbedtls_reason(rc) : verify);
      tls::penalty::handshake_failed(source, f.tls->handshake_cpu(), f.rec.peer);
      return end(f, "handshake failed", false);
    }
    if (f.tls->overtaken_by_reload()) {
      warn_handshake_failed(f, tls::tls_context::overtaken_refusal);
      return end(f, "handshake failed", true);  // close_notify: tunnel-in's flow ends too
    }
    authorize(f);
    if (f.ended) return;
  }
  read_records(f);
}

void udp_relay::refuse_for_limit(const std::string& peer, const std::string& identity) {
  if (!flow_limit_.count()) return;
  auto line = ops::warn("flow refused: limit reached");
  line.kv("peer", peer);
  if (!identity.empty()) line.kv("identity", identity);
  line.kv("max_flows", static_cast<std::uint64_t>(svc_.udp.max_flows))
      .kv("refused_since_last_log", flow_limit_.since_last_log())
      .kv("refused_total", flow_limit_.total());
}

void udp_relay::leave_half_open(udp_flow& f) {
  if (!f.half_open) return;
  half_open_.erase(*f.half_open);
  f.half_open.reset();
}

void udp_relay::authorize(udp_flow& f) {
  // The certificate chained to --ca and passed the allow-list inside the handshake: only
  // now does the flow take a --max-flows slot, and anything reach the target.
  leave_half_open(f);
  f.rec.identity = f.tls->peer() ? f.tls->peer()->describe() : std::string("unknown");
  if (!budget_->take()) {
    refuse_for_limit(f.rec.peer, f.rec.identity);
    return end(f, "flow limit reached", true);
  }
  f.holds_slot = true;
  ops::log_flow_authorized(f.rec, f.tls->version(), f.tls->ciphersuite(), f.tls->cid_in_use());
  f.authorized = true;
  // An IP literal is connected to now; a name is looked up by the flow's coroutine
  // (open_target), which holds what comes meanwhile.
  if (const auto at = net::literal_endpoint(svc_.target)) {
    f.target_at = *at;
    if (const auto ec = net::connect_udp(f.target, *at)) return target_unreachable(f, ec);
  }
  f.last_activity = clock::now();
  f.wake.cancel();
}

void udp_relay::read_records(udp_flow& f) {
  for (;;) {
    const int rc = f.tls->read(plaintext_);
    send_to_peer(f);  // a read may retransmit our last flight or send an alert
    if (rc > 0) {
      // One record is one datagram, forwarded as it is.
      const auto n = static_cast<std::size_t>(rc);
      f.last_activity = clock::now();
      send_to_target(f, std::span<const unsigned char>(plaintext_.data(), n));
      continue;
    }
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_WANT_READ) {
      if (f.tls->pending()) continue;  // another record waits in the same datagram
      return;
    }
    if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) return end(f, "closed by tunnel-in", false);
    // The client restarted on the same address and proved it with a fresh cookie: drop
    // this session; its next ClientHello starts a new one through the cookie gate.
    if (rc == MBEDTLS_ERR_SSL_CLIENT_RECONNECT) return end(f, "tunnel-in reconnected", false);
    return end(f, mbedtls_reason(rc), false);
  }
}

void udp_relay::send_to_target(udp_flow& f, std::span<const unsigned char> d) {
  if (!f.target.is_open()) {
    if (!f.early.push(d))
      net::log_drop(early_full_, "datagram dropped: queue full while the target's name is looked up", f.rec.peer,
                    d.size());
    return;
  }
  f.rec.datagrams_up++;
  f.rec.bytes_up += d.size();
  if (net::send_datagram(f.target, d))
    net::log_drop(send_failed_, "datagram dropped: sending to the target failed", f.target_at, d.size());
}

void udp_relay::send_to_peer(udp_flow& f) {
  // (The peer's address passed the cookie, so copied records can aim resends at it only.)
  if (!f.tls->handshake_done() && !f.tls->output().empty() && !f.flights.allow(f.tls->output())) {
    f.tls->output().clear();
    return;
  }
  for (const auto& out : f.tls->output())
    if (net::send_datagram(socket_, out, f.peer)) net::log_drop(send_failed_, "datagram dropped: send failed", f.peer, out.size());
  f.tls->output().clear();
}

void udp_relay::forward_to_peer(udp_flow& f, std::span<const unsigned char> payload) {
  // Never split or truncate: a reply that does not fit one record for the MTU is lost
  // whole, as the network would lose it, and counted.
  if (payload.empty() || payload.size() > f.tls->max_payload()) {
    return net::log_oversize(oversize_, "datagram dropped: larger than the DTLS payload for --mtu", f.rec.target,
                             payload.size(), f.tls->max_payload());
  }
  const int rc = f.tls->write(payload);
  send_to_peer(f);
  if (rc < 0) return end(f, mbedtls_reason(rc), false);
  f.last_activity = clock::now();
  f.rec.datagrams_down++;
  f.rec.bytes_down += payload.size();
}

void udp_relay::end(udp_flow& f, const std::string& reason, bool notify_peer) {
  if (f.ended) return;
  f.ended = true;
  if (f.holds_slot) budget_->give_back();
  leave_half_open(f);
  by_cid_.erase(f.cid);
  if (auto it = by_addr_.find(f.peer_key); it != by_addr_.end() && it->second == &f) by_addr_.erase(it);
  // Tell tunnel-in the session is gone, so its flow does not wait for replies that will
  // not come; a failed handshake has already sent its alert.
  if (notify_peer && f.tls->handshake_done() && f.tls->close_notify() == 0) send_to_peer(f);
  if (f.authorized) ops::log_flow_closed(f.rec, reason);
  std::error_code ignored;
  f.target.close(ignored);
  while (!f.early.empty())
    net::log_drop(early_lost_, "datagram dropped: the flow ended while its target's name was looked up", f.rec.peer,
                  f.early.pop().size());
  f.wake.cancel();
}

asio::awaitable<void> udp_relay::run_flow(std::unique_ptr<udp_flow> owned) {
  using namespace asio::experimental::awaitable_operators;
  udp_flow& f = *owned;
  co_await watch(f, true);
  // `||`: the flow ends when either side does: the target's lookup failing or its socket
  // failing, or the watch returning on idle expiry, a fatal record or shutdown (end()
  // wakes it). The watch is cancelled when the target is up.
  if (!f.ended && !f.target.is_open()) co_await (open_target(f) || watch(f, false));
  if (!f.ended) co_await (target_to_peer(f) || watch(f, false));
  if (!f.ended) end(f, "target socket failed", true);
}

asio::awaitable<void> udp_relay::watch(udp_flow& f, bool handshake_phase) {
  for (;;) {
    if (f.ended || (handshake_phase && f.authorized)) co_return;
    auto now = clock::now();
    if (now >= f.tls->timer_deadline()) {
      drive(f);  // mbedTLS retransmits its flight, or gives up with a timeout
      if (f.ended || (handshake_phase && f.authorized)) co_return;
      now = clock::now();
    }
    const auto phase_deadline =
        handshake_phase ? f.started + svc_.limits.handshake : f.last_activity + svc_.udp.flow_idle;
    if (now >= phase_deadline) {
      if (handshake_phase) {
        ops::warn("handshake failed").kv("peer", f.rec.peer).kv("identity", "unknown").kv("reason", "handshake timeout");
        end(f, "handshake timeout", false);
      } else {
        end(f, "idle timeout", true);
      }
      co_return;
    }
    // mbedTLS acts on an expired timer only when it next reads; if it left one expired,
    // look again shortly instead of spinning.
    const auto dtls_deadline = std::max(f.tls->timer_deadline(), now + timer_recheck);
    f.wake.expires_at(std::min(phase_deadline, dtls_deadline));
    co_await f.wake.async_wait(as_result);
  }
}

asio::awaitable<void> udp_relay::open_target(udp_flow& f) {
  const auto ec = co_await net::connect_udp(f.target, svc_.target, svc_.limits.connect, f.target_at);
  if (f.ended) co_return;
  if (ec) co_return target_unreachable(f, ec);
  while (!f.early.empty() && !f.ended) send_to_target(f, f.early.pop());
}

void udp_relay::target_unreachable(udp_flow& f, const std::error_code& ec) {
  ops::warn("target unreachable").kv("peer", f.rec.peer).kv("target", f.rec.target).kv("error", net::connect_udp_error(ec));
  end(f, "target unreachable", true);
}

asio::awaitable<void> udp_relay::target_to_peer(udp_flow& f) {
  const auto forward = [this, &f](std::span<const unsigned char> d) { forward_to_peer(f, d); };
  co_await net::receive_connected(f.target, datagram_, f.ended, batch, forward);
}

std::unique_ptr<udp_relay> serve_udp(ops::runtime& rt, const config::service& svc, net::udp::socket socket,
                                     std::shared_ptr<const tls::context_source> source,
                                     std::shared_ptr<flow_budget> budget) {
  auto relay = std::make_unique<udp_relay>(rt.main_context(), svc, std::move(socket), std::move(source), std::move(budget));
  ops::info("listening")
      .kv("listen", relay->bound_address())
      .kv("service", svc.name.empty() ? "(none)" : svc.name)
      .kv("target", svc.target.to_string())
      .kv("transport", "udp")
      .kv("tls", "DTLS 1.2")
      .kv("mtu", static_cast<std::uint64_t>(svc.udp.mtu))
      .kv("max_flows", static_cast<std::uint64_t>(svc.udp.max_flows))
      .kv("flow_idle_timeout", config::format_duration(svc.udp.flow_idle));
  if (svc.tls.routes.front().allow.empty() && svc.files.psk.empty())
    ops::warn("no allow-list given: every client certificate issued by --ca is admitted");
  relay->start();
  // All flows live on the main context, where the shutdown hook runs too.
  rt.on_shutdown([r = relay.get()] { r->stop(); });
  return relay;
}

}  // namespace tunnel::server
