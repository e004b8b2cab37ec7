#pragma once
// Structured log events over spdlog: a message plus key/value fields, rendered as
// `message key=value ...` (text) or one JSON object per line (json).
// Keys are fixed identifiers chosen in code; values are escaped, so hostile strings from
// certificates or the network can neither break a line nor forge fields. Warnings and
// errors are rationed per message text (ops/log_budget.hpp): a line that follows left-out
// ones of its kind carries `suppressed=N`.
#include <spdlog/spdlog.h>

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>

namespace tunnel::ops {

enum class log_format { text, json };

// Sets up the process logger on stderr. `level` is one of trace|debug|info|warn|error.
void init_logging(std::string_view program, spdlog::level::level_enum level, log_format format);

class event {
 public:
  event(spdlog::level::level_enum level, std::string_view message);
  ~event();  // emits the line
  event(const event&) = delete;
  event& operator=(const event&) = delete;

  event& kv(std::string_view key, std::string_view value);
  event& kv(std::string_view key, const char* value) { return kv(key, std::string_view(value)); }
  event& kv(std::string_view key, const std::string& value) { return kv(key, std::string_view(value)); }
  event& kv(std::string_view key, std::uint64_t value);
  event& kv(std::string_view key, std::int64_t value);
  event& kv(std::string_view key, int value) { return kv(key, static_cast<std::int64_t>(value)); }
  event& kv(std::string_view key, double value);
  event& kv(std::string_view key, bool value);  // true / false, a JSON boolean

 private:
  void raw(std::string_view key, std::string_view rendered_value, bool quoted);
  spdlog::level::level_enum level_;
  bool enabled_;
  std::uint64_t suppressed_ = 0;  // lines of this kind left out before this one
  std::string line_;
};

inline event trace(std::string_view m) { return event(spdlog::level::trace, m); }
inline event debug(std::string_view m) { return event(spdlog::level::debug, m); }
inline event info(std::string_view m) { return event(spdlog::level::info, m); }
inline event warn(std::string_view m) { return event(spdlog::level::warn, m); }
inline event error(std::string_view m) { return event(spdlog::level::err, m); }

// JSON string escaping (quotes not included), exposed for tests.
std::string json_escape(std::string_view s);

// What the exception a coroutine ended with says, for its "... failed unexpectedly" line.
// (Anything that is no std::exception is rethrown, as a catch of std::exception alone would.)
std::string what_of(std::exception_ptr e);

}  // namespace tunnel::ops
