#include "tls/context_source.hpp"

#include <mbedtls/x509.h>

#include <exception>

#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "policy/peer_identity.hpp"
#include "tls/validity.hpp"

namespace tunnel::tls {
namespace {

std::string serial_of(const mbedtls_x509_crt& c) {
  char text[128];
  const int n = mbedtls_x509_serial_gets(text, sizeof text, &c.serial);
  return n > 0 ? std::string(text, static_cast<std::size_t>(n)) : std::string();
}

}  // namespace

context_source::context_source(tls_options options, credential_files files)
    : options_(std::move(options)), files_(std::move(files)) {
  // Digest first: if a file changes while it is being read, the next check sees it.
  detector_.reset(digest_files(watched_files()));
  current_ = build();
  describe_loaded(*current_, "credentials loaded", nullptr);
}

std::shared_ptr<const tls_context> context_source::current() const {
  std::lock_guard lock(mutex_);
  return current_;
}

std::vector<std::string> context_source::watched_files() const {
  if (!files_.psk.empty()) return {files_.psk};
  std::vector<std::string> paths;
  for (const auto* path : {&files_.cert, &files_.key, &files_.ca, &files_.crl})
    if (!path->empty()) paths.push_back(*path);
  return paths;
}

std::shared_ptr<const tls_context> context_source::build() const {
  auto creds = credentials::load(files_);
  require_usable_for(*creds, options_.side == role::server, files_);
  return std::make_shared<const tls_context>(options_, std::move(creds));
}

context_source::prepared context_source::prepare(reload_trigger why) {
  prepared out;
  try {
    const bool changed = detector_.changed(digest_files(watched_files()));
    if (why == reload_trigger::interval && !changed) return out;
    out.fresh = build();
  } catch (const std::exception& e) {
    out.failure = e.what();
  }
  return out;
}

bool context_source::install(prepared p, reload_trigger why) {
  const char* trigger = why == reload_trigger::signal ? "SIGHUP" : "interval";
  auto& m = ops::metrics::get();
  if (!p.failure.empty()) {
    m.reload_failures.fetch_add(1, std::memory_order_relaxed);
    ops::error("credential reload failed; keeping the previous credentials")
        .kv("trigger", trigger)
        .kv("reason", p.failure);
    return false;
  }
  if (!p.fresh) return false;
  std::shared_ptr<const tls_context> fresh = std::move(p.fresh);
  {
    std::lock_guard lock(mutex_);
    current_.swap(fresh);
  }
  // `fresh` now holds the previous context; it is freed here or by the last connection
  // that still uses it. Its resumption secrets go now: no new connection resumes through it.
  fresh->retire([weak = weak_from_this()]() -> std::shared_ptr<const tls_context> {
    const auto source = weak.lock();
    return source ? source->current() : nullptr;
  });
  m.reloads.fetch_add(1, std::memory_order_relaxed);
  describe_loaded(*current(), "credentials reloaded", trigger);
  return true;
}

void context_source::describe_loaded(const tls_context& c, const char* message, const char* trigger) const {
  const auto& creds = c.creds();
  warn_if_key_readable_by_others(creds, files_);
  if (creds.psk()) {
    auto e = ops::info(message);
    if (trigger) e.kv("trigger", trigger);
    e.kv("psk_identity", creds.psk()->identity);
    return;
  }
  {
    auto e = ops::info(message);
    if (trigger) e.kv("trigger", trigger);
    // One service may hold a DTLS and a TLS context (UDP over TLS): say which this is.
    e.kv("transport", options_.carrier == transport::datagram ? "dtls" : "tls");
    if (options_.legacy_leg) e.kv("leg", options_.side == role::client ? "target" : "listener");
    if (creds.has_own_cert())
      e.kv("identity", policy::identity_of(creds.leaf()).describe()).kv("serial", serial_of(creds.leaf()));
    e.kv("crl", files_.crl.empty() ? "none" : files_.crl);
  }
  if (creds.has_own_cert() && !options_.legacy_leg) report_own_expiry(this, creds.leaf(), options_.expiry_warning);
}

}  // namespace tunnel::tls
