#include "tls/ticket_keys.hpp"

#include <mbedtls/platform_util.h>
#include <psa/crypto.h>

#include <limits>
#include <stdexcept>

namespace tunnel::tls {
namespace {

bool fresh_key(ticket_key& key) { return psa_generate_random(key.data(), key.size()) == PSA_SUCCESS; }

void erase(ticket_key& key) { mbedtls_platform_zeroize(key.data(), key.size()); }

}  // namespace

ticket_keys::ticket_keys(std::int64_t period_ms, std::int64_t now_ms) : period_ms_(period_ms) {
  if (period_ms <= 0 || period_ms > std::numeric_limits<std::int64_t>::max() / 4)
    throw std::invalid_argument("session ticket key period out of range");
  if (!fresh_key(current_.key)) throw std::runtime_error("cannot make a session ticket key");
  current_.made_ms = now_ms;
  current_.live = true;
}

ticket_keys::~ticket_keys() {
  erase(current_.key);
  erase(previous_.key);
}

std::size_t ticket_keys::sweep(std::int64_t now_ms) {
  std::size_t erased = 0;
  for (entry* e : {&current_, &previous_}) {
    if (e->live && !usable(*e, now_ms, 2)) {  // too old to open anything it sealed: gone for good
      erase(e->key);
      e->live = false;
      ++erased;
    }
  }
  return erased;
}

void ticket_keys::retire() {
  std::lock_guard lock(mutex_);
  retired_ = true;
  for (entry* e : {&current_, &previous_}) {
    erase(e->key);
    e->live = false;
  }
}

std::size_t ticket_keys::forget_expired(std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  return sweep(now_ms);
}

std::optional<ticket_key> ticket_keys::sealing(std::int64_t now_ms) {
  std::lock_guard lock(mutex_);
  sweep(now_ms);
  if (retired_) return std::nullopt;
  if (!usable(current_, now_ms, 1)) {
    ticket_key next;
    if (!fresh_key(next)) {
      erase(next);
      return std::nullopt;
    }
    erase(previous_.key);
    previous_.live = current_.live;
    if (current_.live) {
      previous_.key = current_.key;
      previous_.made_ms = current_.made_ms;
    }
    current_.key = next;
    current_.made_ms = now_ms;
    current_.live = true;
    erase(next);
  }
  return current_.key;
}

std::size_t ticket_keys::opening(std::int64_t now_ms, std::array<ticket_key, 2>& out) {
  std::lock_guard lock(mutex_);
  sweep(now_ms);
  std::size_t n = 0;
  for (const entry* e : {&current_, &previous_})
    if (e->live) out[n++] = e->key;
  return n;
}

}  // namespace tunnel::tls
