#include "tls/handshake.hpp"

#include "net/timeout.hpp"
#include "tls/error.hpp"

namespace tunnel::tls {

asio::awaitable<handshake_outcome> run_handshake(tls_stream& stream, std::chrono::milliseconds limit) {
  handshake_outcome out;
  auto result = co_await net::with_timeout(stream.handshake(), limit);
  if (result && !*result) {
    out.ok = true;
    co_return out;
  }
  const bool silent = stream.raw_bytes_in() == 0;
  if (!result) {
    out.reason = silent ? "handshake timeout (peer sent nothing)" : "handshake timeout";
    co_return out;
  }
  const std::error_code ec = *result;
  if (silent && (ec == asio::error::eof || ec == asio::error::connection_reset)) {
    out.probe = true;
    out.reason = "closed before handshake";
    co_return out;
  }
  const std::string verify = stream.tls().verify_failure();
  out.reason = verify.empty() ? ec.message() : verify;
  if (ec == asio::error::eof) out.reason = "peer closed the connection during the handshake";
  co_return out;
}

}  // namespace tunnel::tls
