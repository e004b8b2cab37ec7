#include "mux/flow.hpp"

#include "mux/error.hpp"
#include "mux/session.hpp"

namespace tunnel::mux {

flow::flow(session& owner, std::uint32_t id) : session_(&owner), id_(id) {}

flow::~flow() { close(reset_code::cancel, "flow closed"); }

flow::send_result flow::send(std::span<const std::byte> datagram) {
  if (!session_) return send_result::ended;
  // Never split or truncate: a datagram is one frame or nothing.
  if (datagram.size() > max_payload) return send_result::oversized;
  return session_->queue_datagram(*this, datagram) ? send_result::sent : send_result::queue_full;
}

void flow::close(reset_code code, std::string_view reason) {
  if (!session_) return;
  session* s = session_;
  session_ = nullptr;
  if (!error_) error_ = errc::stream_closed;
  s->leave(*this, code, reason);
}

bool flow::ready() const { return session_ && session_->ready() && !open_pending_; }

void flow::deliver(std::span<const std::byte> datagram) {
  if (on_receive_) on_receive_(datagram);
}

void flow::peer_closed(reset_code code, std::string_view reason) {
  session_ = nullptr;
  closed_by_peer_ = true;
  peer_code_ = code;
  reason_ = std::string(reason);
  error_ = error_for(code);
  notify();
}

void flow::fail(std::error_code ec, std::string_view reason) {
  session_ = nullptr;
  if (!error_) error_ = ec;
  reason_ = std::string(reason);
  notify();
}

void flow::notify() {
  if (on_event_) on_event_();
}

}  // namespace tunnel::mux
