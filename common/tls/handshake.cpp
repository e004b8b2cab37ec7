#include "tls/handshake.hpp"

#include "net/timeout.hpp"
#include "tls/error.hpp"

namespace tunnel::tls {

namespace {

handshake_outcome classify(tls_stream& stream, const std::optional<std::error_code>& result) {
  handshake_outcome out;
  const bool silent = stream.raw_bytes_in() == 0;
  if (!result) {
    out.reason = silent ? "handshake timeout (peer sent nothing)" : "handshake timeout";
    out.kind = ops::handshake_failure::timeout;
    return out;
  }
  const std::error_code ec = *result;
  if (silent && (ec == asio::error::eof || ec == asio::error::connection_reset)) {
    out.probe = true;
    out.reason = "closed before handshake";
    return out;
  }
  const std::string verify = stream.tls().verify_failure();
  out.reason = verify.empty() ? ec.message() : verify;
  if (stream.tls().refused_by_policy()) out.kind = ops::handshake_failure::policy;
  else if (!verify.empty()) out.kind = ops::handshake_failure::verify;
  if (ec == asio::error::eof) out.reason = "peer closed the connection during the handshake";
  return out;
}

}  // namespace

asio::awaitable<handshake_outcome> run_handshake(tls_stream& stream, std::chrono::milliseconds limit) {
  const auto started = std::chrono::steady_clock::now();
  auto result = co_await net::with_timeout(stream.handshake(), limit);
  auto& m = ops::metrics::get();
  // A reload during the handshake: the peer must pass the credentials in force now too.
  if (result && !*result && stream.tls().overtaken_by_reload()) {
    m.count(ops::outcome::handshake_failed);
    m.count(ops::handshake_failure::policy);
    co_return handshake_outcome{.reason = tls_context::overtaken_refusal, .kind = ops::handshake_failure::policy};
  }
  if (result && !*result) {
    m.handshake_seconds.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    if (stream.tls().resumed()) m.handshakes_resumed.fetch_add(1, std::memory_order_relaxed);
    co_return handshake_outcome{.ok = true};
  }
  auto out = classify(stream, result);
  if (out.probe) m.count(ops::outcome::probe);
  else {
    m.count(ops::outcome::handshake_failed);
    m.count(out.kind);
  }
  co_return out;
}

asio::awaitable<std::string> bridge_handshake(tls_stream& stream, std::chrono::milliseconds limit,
                                              const char* timeout_reason) {
  const auto result = co_await net::with_timeout(stream.handshake(), limit);
  if (!result) co_return timeout_reason;
  if (*result) {
    const std::string verify = stream.tls().verify_failure();
    co_return verify.empty() ? result->message() : verify;
  }
  if (stream.tls().overtaken_by_reload()) co_return std::string(tls_context::overtaken_refusal);
  co_return std::string();
}

}  // namespace tunnel::tls
