#include "ops/log.hpp"

#include "ops/log_budget.hpp"
#include "ops/metrics.hpp"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdio>
#include <utility>

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

namespace {

// The code point of the well-formed UTF-8 sequence at the start of `s` (RFC 3629: no
// overlong forms, no surrogates, nothing past U+10FFFF) and its length; length 0 if there
// is none.
std::pair<char32_t, std::size_t> utf8_at(std::string_view s) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char lead = byte(0);
  std::size_t length = 0;
  char32_t cp = 0, least = 0;
  if (lead >= 0xc2 && lead <= 0xdf) length = 2, cp = lead & 0x1f, least = 0x80;
  else if (lead >= 0xe0 && lead <= 0xef) length = 3, cp = lead & 0x0f, least = 0x800;
  else if (lead >= 0xf0 && lead <= 0xf4) length = 4, cp = lead & 0x07, least = 0x10000;
  else return {0, 0};
  if (s.size() < length) return {0, 0};
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return {0, 0};
    cp = (cp << 6) | (byte(i) & 0x3f);
  }
  if (cp < least || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return {0, 0};
  return {cp, length};
}

void append_u16(std::string& out, unsigned unit) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\u%04x", unit);
  out += buf;
}

}  // namespace

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (std::size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      // Certificate fields and peer names are not trusted to be UTF-8: a well-formed
      // character is written as its \u escape (a pair for one past U+FFFF), so the line
      // stays ASCII and decodes to what was sent; any other byte becomes U+FFFD.
      const auto [cp, length] = utf8_at(s.substr(i));
      if (length == 0) {
        append_u16(out, 0xfffd);
        ++i;
        continue;
      }
      if (cp > 0xffff) {
        append_u16(out, 0xd800 + ((cp - 0x10000) >> 10));
        append_u16(out, 0xdc00 + ((cp - 0x10000) & 0x3ff));
      } else {
        append_u16(out, cp);
      }
      i += length;
      continue;
    }
    ++i;
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) append_u16(out, c);
        else out += static_cast<char>(c);
    }
  }
  return out;
}

std::string what_of(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  }
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

event& event::kv(std::string_view key, bool value) {
  if (enabled_) raw(key, value ? "true" : "false", false);
  return *this;
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
