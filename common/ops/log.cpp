#include "ops/log.hpp"

#include "ops/log_budget.hpp"
#include "ops/metrics.hpp"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdio>

namespace tunnel::ops {
namespace {

log_format current_format = log_format::text;

bool needs_quotes(std::string_view v) {
  if (v.empty()) return true;
  for (unsigned char c : v)
    if (c <= ' ' || c == '"' || c == '=' || c == '\\' || c >= 0x7f) return true;
  return false;
}

}  // namespace

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c >= 0x7f) {
          // Non-ASCII bytes are escaped one by one: certificate fields are not trusted to
          // be valid UTF-8, and a JSON line must stay parseable whatever they hold.
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

void init_logging(std::string_view program, spdlog::level::level_enum level, log_format format) {
  current_format = format;
  auto logger = spdlog::stderr_logger_mt(std::string(program));
  if (format == log_format::json) {
    logger->set_pattern(R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","program":"%n",%v})",
                        spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n %^%l%$ %v");
  }
  logger->set_level(level);
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

event::event(spdlog::level::level_enum level, std::string_view message)
    : level_(level), enabled_(spdlog::default_logger_raw()->should_log(level)) {
  if (!enabled_) return;
  if (level >= spdlog::level::warn) {
    const auto verdict = warning_budget().admit(message, log_budget::clock::now());
    if (!verdict.print) {
      enabled_ = false;
      metrics::get().log_lines_suppressed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    suppressed_ = verdict.suppressed_before;
  }
  if (current_format == log_format::json) {
    line_ = "\"msg\":\"" + json_escape(message) + "\"";
  } else {
    line_ = std::string(message);
  }
}

event::~event() {
  if (!enabled_) return;
  if (suppressed_ > 0) raw("suppressed", std::to_string(suppressed_), false);
  spdlog::default_logger_raw()->log(level_, "{}", line_);
}

void event::raw(std::string_view key, std::string_view value, bool quoted) {
  if (current_format == log_format::json) {
    line_ += ",\"";
    line_ += key;
    line_ += quoted ? "\":\"" : "\":";
    line_ += quoted ? json_escape(value) : std::string(value);
    if (quoted) line_ += '"';
  } else {
    line_ += ' ';
    line_ += key;
    line_ += '=';
    if (quoted && needs_quotes(value)) {
      line_ += '"';
      line_ += json_escape(value);
      line_ += '"';
    } else {
      line_ += value;
    }
  }
}

event& event::kv(std::string_view key, std::string_view value) {
  if (enabled_) raw(key, value, true);
  return *this;
}

event& event::kv(std::string_view key, std::uint64_t value) {
  if (enabled_) raw(key, std::to_string(value), false);
  return *this;
}

event& event::kv(std::string_view key, std::int64_t value) {
  if (enabled_) raw(key, std::to_string(value), false);
  return *this;
}

event& event::kv(std::string_view key, double value) {
  if (enabled_) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", value);
    raw(key, buf, false);
  }
  return *this;
}

}  // namespace tunnel::ops
