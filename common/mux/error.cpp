#include "mux/error.hpp"

#include <string>

namespace tunnel::mux {
namespace {

class category : public std::error_category {
 public:
  const char* name() const noexcept override { return "mux"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::reset_by_peer: return "stream reset by the peer";
      case errc::refused: return "stream refused by tunnel-out";
      case errc::target_unreachable: return "target unreachable";
      case errc::limit: return "stream refused: limit reached";
      case errc::peer_timeout: return "stream timed out at the peer";
      case errc::protocol: return "mux protocol error";
      case errc::peer_shutdown: return "the peer is shutting down";
      case errc::peer_internal: return "internal error at the peer";
      case errc::connection_lost: return "mux connection lost";
      case errc::keepalive_timeout: return "mux connection lost: keepalive timeout";
      case errc::cut_at_shutdown: return "cut at shutdown";
      case errc::stream_closed: return "stream already closed";
    }
    return "mux error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& mux_category() {
  static const category instance;
  return instance;
}

bool ended_with_connection(const std::error_code& ec) {
  return ec == errc::connection_lost || ec == errc::keepalive_timeout || ec == errc::protocol ||
         ec == errc::cut_at_shutdown;
}

std::error_code error_for(reset_code code) {
  switch (code) {
    case reset_code::cancel: return errc::reset_by_peer;
    case reset_code::refused: return errc::refused;
    case reset_code::unreachable: return errc::target_unreachable;
    case reset_code::limit: return errc::limit;
    case reset_code::timeout: return errc::peer_timeout;
    case reset_code::protocol: return errc::protocol;
    case reset_code::shutdown: return errc::peer_shutdown;
    case reset_code::internal: return errc::peer_internal;
  }
  return errc::protocol;
}

}  // namespace tunnel::mux
