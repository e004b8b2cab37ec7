// The session's UDP flows (PROTOCOL.md, "Datagrams"): FLOW_OPEN, DATAGRAM, FLOW_CLOSE.
// Datagrams take no credit and have a queue bound of their own: when it is reached they
// are dropped, never delayed, so they cannot hold up streams or each other.
#include <algorithm>

#include "mux/error.hpp"
#include "mux/session.hpp"
#include "ops/metrics.hpp"

namespace tunnel::mux {

std::unique_ptr<flow> session::open_flow(std::string_view service, std::string_view origin) {
  if (!accepting() || flows_.size() >= settings_.max_flows || next_flow_id_ == 0 || next_flow_id_ > max_id)
    return nullptr;
  // A peer of version 1 would take FLOW_OPEN for a protocol error and end the connection,
  // with every stream on it: never send it one.
  if (ready_ && !peer_carries_flows_) return nullptr;
  auto f = std::make_unique<flow>(*this, next_flow_id_++);
  f->service_ = std::string(service);
  f->origin_ = std::string(origin);
  flows_.emplace(f->id(), f.get());
  ++stats_.flows_opened;
  if (!ready_) {
    f->open_pending_ = true;  // send_pending_opens() decides once the peer has answered
    return f;
  }
  encode_flow_open(out_, f->id(), service, origin);
  frame_ends_.push_back(out_.size());
  wake_writer();
  return f;
}

void session::send_pending_opens() {
  std::vector<flow*> pending;
  for (const auto& [id, f] : flows_)
    if (f->open_pending_) pending.push_back(f);
  // In the order they were opened: FLOW_OPEN ids must increase.
  std::sort(pending.begin(), pending.end(), [](const flow* a, const flow* b) { return a->id() < b->id(); });
  for (flow* f : pending) {
    f->open_pending_ = false;
    if (peer_carries_flows_) {
      encode_flow_open(out_, f->id(), f->service(), f->origin());
      frame_ends_.push_back(out_.size());
      wake_writer();
      continue;
    }
    flows_.erase(f->id());
    f->fail(errc::protocol, "tunnel-out does not carry UDP flows over TLS (it is older than tunnel-in)");
  }
}

bool session::queue_datagram(flow& f, std::span<const std::byte> data) {
  if (ended_ || close_sent_ || f.open_pending_) return false;
  const std::size_t frame_size = header_size + data.size();
  if (datagram_bytes_queued_ + frame_size > settings_.datagram_queue_limit) {
    ++stats_.datagrams_queue_full;
    return false;
  }
  encode_datagram(out_, f.id(), data);
  frame_ends_.push_back(out_.size());
  datagram_bytes_queued_ += frame_size;
  wake_writer();
  return true;
}

void session::leave(flow& f, reset_code code, std::string_view reason) {
  flows_.erase(f.id());
  if (!f.open_pending_) queue_flow_close(f.id(), code, reason);  // the peer never heard of it otherwise
  changed();
}

void session::queue_flow_close(std::uint32_t id, reset_code code, std::string_view reason) {
  if (ended_ || close_sent_) return;
  encode_flow_close(out_, id, code, reason);
  frame_ends_.push_back(out_.size());
  wake_writer();
}

void session::on_flow_open(const frame& f) {
  last_peer_flow_ = f.stream;
  peer_carries_flows_ = true;  // it sent one
  mark_ready();  // the peer's first flow proves it accepted us, like a pong does
  if (retiring()) return queue_flow_close(f.stream, reset_code::shutdown, "tunnel-out is shutting down");
  if (!on_accept_flow_ || !settings_.carries_flows) return queue_flow_close(f.stream, reset_code::refused, "UDP flows are not accepted here");
  if (flows_.size() >= settings_.max_flows)
    return queue_flow_close(f.stream, reset_code::limit, "too many flows on this connection");
  auto fl = std::make_unique<flow>(*this, f.stream);
  fl->service_ = std::string(f.service);
  fl->origin_ = std::string(f.origin);
  flows_.emplace(f.stream, fl.get());
  ++stats_.flows_opened;
  on_accept_flow_(std::move(fl));
}

void session::on_datagram(const frame& f) {
  if (f.stream == flows_hello_id) {
    peer_carries_flows_ = true;
    return;
  }
  const auto it = flows_.find(f.stream);
  if (it == flows_.end()) {
    // Refused, closed by either side with frames still in flight, or never opened: not an
    // error (the FLOW_CLOSE that explains it is on its way or already sent).
    ++stats_.datagrams_unknown_flow;
    ops::metrics::get().count(ops::udp_drop::unknown_session);
    return;
  }
  it->second->deliver(f.payload);
}

void session::on_flow_close(const frame& f) {
  const auto it = flows_.find(f.stream);
  if (it == flows_.end()) return;
  flow* fl = it->second;
  flows_.erase(it);
  fl->peer_closed(f.code, f.reason);
  changed();
}

void session::end_flows(std::error_code ec, std::string_view reason) {
  auto flows = std::move(flows_);
  flows_.clear();
  for (auto& [id, fl] : flows) fl->fail(ec, reason);
}

void session::notify_flows() {
  // A handler may close its own flow (which leaves the table): walk a copy, and skip flows
  // that left meanwhile.
  std::vector<std::uint32_t> ids;
  ids.reserve(flows_.size());
  for (const auto& [id, fl] : flows_) ids.push_back(id);
  for (const auto id : ids)
    if (const auto it = flows_.find(id); it != flows_.end()) it->second->notify();
}

}  // namespace tunnel::mux
