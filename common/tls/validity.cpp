#include "tls/validity.hpp"

#include <mbedtls/md.h>
#include <mbedtls/pk.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string_view>
#include <unordered_map>

#include "ops/log.hpp"
#include "ops/metrics.hpp"
#include "policy/peer_identity.hpp"
#include "tls/credentials.hpp"

namespace tunnel::tls {
namespace {

using std::chrono::system_clock;

// "2031-05-01T12:00:00Z" for log lines.
std::string iso(const mbedtls_x509_time& t) {
  char text[32];
  std::snprintf(text, sizeof text, "%04d-%02d-%02dT%02d:%02d:%02dZ", t.year, t.mon, t.day, t.hour, t.min, t.sec);
  return text;
}

std::string subject_of(const mbedtls_x509_crt& c) {
  char text[256];
  const int n = mbedtls_x509_dn_gets(text, sizeof text, &c.subject);
  return n > 0 ? std::string(text, static_cast<std::size_t>(n)) : std::string("(unnamed)");
}

// Peers already warned about, by a hash of their DER: at most one warning an hour each.
class peer_warnings {
 public:
  bool should_warn(std::size_t key, std::int64_t now) {
    std::lock_guard lock(mutex_);
    if (last_.size() >= capacity) last_.clear();  // bounded: forget all rather than grow
    auto [it, fresh] = last_.try_emplace(key, now);
    if (!fresh && now - it->second < interval_s) return false;
    it->second = now;
    return true;
  }

 private:
  static constexpr std::size_t capacity = 1024;
  static constexpr std::int64_t interval_s = 3600;
  std::mutex mutex_;
  std::unordered_map<std::size_t, std::int64_t> last_;
};

peer_warnings& warned() {
  static peer_warnings w;
  return w;
}

}  // namespace

std::int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(system_clock::now().time_since_epoch()).count();
}

std::int64_t unix_seconds(const mbedtls_x509_time& t) {
  // Days from the civil date (Howard Hinnant's algorithm), no time zone involved.
  const int y = t.year - (t.mon <= 2 ? 1 : 0);
  const int era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned mp = static_cast<unsigned>(t.mon > 2 ? t.mon - 3 : t.mon + 9);
  const unsigned doy = (153 * mp + 2) / 5 + static_cast<unsigned>(t.day) - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  const std::int64_t days = static_cast<std::int64_t>(era) * 146097 + static_cast<std::int64_t>(doe) - 719468;
  return days * 86400 + t.hour * 3600 + t.min * 60 + t.sec;
}

// How far ahead of our clock a fresh CRL's thisUpdate or our new certificate's notBefore
// may be: a file issued a moment ago on a host whose clock runs ahead must not be refused
// (a failed interval reload is not tried again until the file changes).
constexpr std::int64_t clock_skew = 10 * 60;

void require_valid_cas(const mbedtls_x509_crt& bundle, const std::string& flag, const std::string& path) {
  const std::int64_t now = now_unix();
  for (const mbedtls_x509_crt* c = &bundle; c != nullptr && c->raw.p != nullptr; c = c->next) {
    if (unix_seconds(c->valid_to) < now)
      throw credential_error(flag + " " + path + ": CA certificate " + subject_of(*c) + " expired on " +
                             iso(c->valid_to));
    // (The same allowance as for our leaf: a CA made a moment ago on a host whose clock runs
    // ahead is taken, and works once the clocks agree, rather than never being retried.)
    if (unix_seconds(c->valid_from) > now + clock_skew)
      throw credential_error(flag + " " + path + ": CA certificate " + subject_of(*c) + " is not valid before " +
                             iso(c->valid_from));
  }
}

namespace {

// Whether `ca`'s key verifies `crl`'s signature (mbedTLS checks it only during a peer's
// verification, where a bad one refuses every peer). The signature fields are private in
// mbedTLS 3.6's struct; MBEDTLS_PRIVATE is its own way to reach them.
bool signed_by(const mbedtls_x509_crl& crl, const mbedtls_x509_crt& ca) {
  const mbedtls_md_type_t md_type = crl.MBEDTLS_PRIVATE(sig_md);
  const mbedtls_md_info_t* md = mbedtls_md_info_from_type(md_type);
  if (md == nullptr) return false;
  unsigned char hash[MBEDTLS_MD_MAX_SIZE];
  if (mbedtls_md(md, crl.tbs.p, crl.tbs.len, hash) != 0) return false;
  return mbedtls_pk_verify_ext(crl.MBEDTLS_PRIVATE(sig_pk), crl.MBEDTLS_PRIVATE(sig_opts),
                               const_cast<mbedtls_pk_context*>(&ca.pk), md_type, hash, mbedtls_md_get_size(md),
                               crl.MBEDTLS_PRIVATE(sig).p, crl.MBEDTLS_PRIVATE(sig).len) == 0;
}

}  // namespace

void require_usable_crls(const mbedtls_x509_crl& crls, const mbedtls_x509_crt& cas, const std::string& path,
                         const std::string& crl_flag, const std::string& ca_flag) {
  const std::int64_t now = now_unix();
  for (const mbedtls_x509_crl* l = &crls; l != nullptr && l->raw.p != nullptr; l = l->next) {
    // A CRL without nextUpdate never goes stale (year 0 means absent in mbedTLS).
    if (l->next_update.year != 0 && unix_seconds(l->next_update) < now)
      throw credential_error(crl_flag + " " + path + ": stale since " + iso(l->next_update) +
                             " (nextUpdate); every peer would be refused: publish a fresh CRL");
    if (unix_seconds(l->this_update) > now + clock_skew)
      throw credential_error(crl_flag + " " + path + ": not valid before " + iso(l->this_update) +
                             " (thisUpdate); every peer would be refused until then: check the clocks");
    const mbedtls_x509_crt* issuer = nullptr;  // a CA of that name (the last one tried)
    bool verified = false;
    for (const mbedtls_x509_crt* c = &cas; c != nullptr && c->raw.p != nullptr && !verified; c = c->next) {
      if (c->subject_raw.len != l->issuer_raw.len ||
          std::memcmp(c->subject_raw.p, l->issuer_raw.p, l->issuer_raw.len) != 0)
        continue;
      issuer = c;
      verified = signed_by(*l, *c);
    }
    if (issuer == nullptr)
      throw credential_error(crl_flag + " " + path + ": issued by none of the CAs in " + ca_flag +
                             ", so it would never be checked");
    if (!verified)
      throw credential_error(crl_flag + " " + path + ": names " + subject_of(*issuer) +
                             " as its issuer, but its signature does not verify with that CA's key; every peer "
                             "would be refused");
  }
}

void require_current_leaf(const mbedtls_x509_crt& leaf, const std::string& where) {
  const std::int64_t now = now_unix();
  if (unix_seconds(leaf.valid_from) > now + clock_skew)
    throw credential_error(where + ": not valid before " + iso(leaf.valid_from) +
                           "; every peer would refuse it until then (check the clocks)");
  if (unix_seconds(leaf.valid_to) < now)
    throw credential_error(where + ": expired on " + iso(leaf.valid_to) + "; every peer would refuse it");
}

namespace {
// Each source's current certificate expiry: the metric is the soonest, so an alert on it
// fires for whichever certificate of the process expires first (sources live as long as
// the process; a handful per process).
void record_expiry(const void* source, std::int64_t not_after) {
  static std::mutex m;
  static std::unordered_map<const void*, std::int64_t> by_source;
  std::lock_guard lk(m);
  by_source[source] = not_after;
  std::int64_t soonest = not_after;
  for (const auto& [s, t] : by_source) soonest = std::min(soonest, t);
  ops::metrics::get().certificate_expiry_unix.store(soonest, std::memory_order_relaxed);
}
}  // namespace

void report_own_expiry(const void* source, const mbedtls_x509_crt& leaf, std::chrono::seconds warn_before) {
  const std::int64_t not_after = unix_seconds(leaf.valid_to);
  record_expiry(source, not_after);
  const std::int64_t left = not_after - now_unix();
  if (left < 0) {
    ops::error("our certificate has expired: peers will refuse it")
        .kv("subject", subject_of(leaf))
        .kv("not_after", iso(leaf.valid_to));
  } else if (left <= warn_before.count()) {
    ops::warn("our certificate expires soon")
        .kv("subject", subject_of(leaf))
        .kv("not_after", iso(leaf.valid_to))
        .kv("days_left", static_cast<double>(left) / 86400.0);
  }
}

void note_peer_expiry(const mbedtls_x509_crt& leaf, std::chrono::seconds warn_before) {
  const std::int64_t now = now_unix();
  const std::int64_t left = unix_seconds(leaf.valid_to) - now;
  // Expired peers are refused by verification, which logs the reason itself.
  if (left < 0 || left > warn_before.count()) return;
  const std::size_t key =
      std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(leaf.raw.p), leaf.raw.len));
  if (!warned().should_warn(key, now)) return;
  ops::warn("peer certificate expires soon")
      .kv("identity", policy::identity_of(leaf).describe())
      .kv("not_after", iso(leaf.valid_to))
      .kv("days_left", static_cast<double>(left) / 86400.0);
}

}  // namespace tunnel::tls
