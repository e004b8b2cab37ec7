#pragma once
// One UDP flow carried inside a mux session as DATAGRAM frames (PROTOCOL.md, "Datagrams").
// Owned (std::unique_ptr) by the relay that carries it; lives on its session's thread.
// Unlike a stream it has no buffer and no credit: a datagram from the peer is handed to
// the receive handler at once, and send() either queues one frame or drops the datagram.
//
// Handlers run on the session's thread from inside the session (its reader, or its end).
// They may call send() and close(), but must not destroy the flow: they record what
// happened and wake the owner, which destroys it later.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

#include "mux/frame.hpp"

namespace tunnel::mux {

class session;

class flow {
 public:
  using receive_handler = std::function<void(std::span<const std::byte>)>;
  // Called when ready() or ended() may have changed.
  using event_handler = std::function<void()>;

  enum class send_result {
    sent,        // one DATAGRAM frame queued
    oversized,   // larger than one frame may carry (max_payload): dropped
    queue_full,  // the session's datagram queue is at its bound: dropped
    ended,       // the flow or its session has ended: dropped
  };

  flow(session& owner, std::uint32_t id);
  ~flow();  // leaves the session, with FLOW_CLOSE(cancel) unless the flow already ended
  flow(const flow&) = delete;
  flow& operator=(const flow&) = delete;

  send_result send(std::span<const std::byte> datagram);
  // Ends the flow with a reason the peer sees; no-op once ended.
  void close(reset_code code, std::string_view reason);

  void on_receive(receive_handler h) { on_receive_ = std::move(h); }
  void on_event(event_handler h) { on_event_ = std::move(h); }

  // The carrying session's peer has answered (tunnel-in: tunnel-out accepted our
  // certificate) and FLOW_OPEN is out. False once ended.
  bool ready() const;
  bool ended() const { return session_ == nullptr; }
  // Why it ended: the peer's FLOW_CLOSE (code and reason), or the session's end
  // (error() then says connection_lost, keepalive_timeout, ...; reason() the session's).
  std::error_code error() const { return error_; }
  bool closed_by_peer() const { return closed_by_peer_; }
  reset_code peer_code() const { return peer_code_; }
  const std::string& reason() const { return reason_; }

  std::uint32_t id() const { return id_; }
  const std::string& service() const { return service_; }
  const std::string& origin() const { return origin_; }  // the legacy client, as tunnel-in saw it

 private:
  friend class session;
  // From the session (same thread).
  void deliver(std::span<const std::byte> datagram);
  void peer_closed(reset_code code, std::string_view reason);
  void fail(std::error_code ec, std::string_view reason);  // the session ended
  void notify();

  session* session_;
  std::uint32_t id_;
  std::string service_, origin_;
  bool open_pending_ = false;  // FLOW_OPEN waits for the peer's answer (session_flows.cpp)
  std::error_code error_;
  bool closed_by_peer_ = false;
  reset_code peer_code_ = reset_code::cancel;
  std::string reason_;
  receive_handler on_receive_;
  event_handler on_event_;
};

}  // namespace tunnel::mux
