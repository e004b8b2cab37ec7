#pragma once
// tunnel-out's session ticket keys. A key seals tickets for one period (--resumption) and is
// then replaced by a fresh random one; it still opens tickets for a second period, which is
// as long as any ticket it sealed can be valid (a ticket never outlives --resumption), and
// is then erased. So a key that leaked, with which tickets for any identity could be forged,
// is useless two periods after it was made; and a reload, which builds a new ring, forgets
// every ticket at once.
//
// Time is passed in (steady milliseconds) so the rotation can be tested without waiting.
// Shared by every worker thread: the calls lock.
#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>

#include "tls/ticket.hpp"

namespace tunnel::tls {

class ticket_keys {
 public:
  // Throws std::runtime_error when no random key can be had, std::invalid_argument for a
  // period that is not positive or so long that time arithmetic could overflow.
  ticket_keys(std::int64_t period_ms, std::int64_t now_ms);
  ~ticket_keys();
  ticket_keys(const ticket_keys&) = delete;
  ticket_keys& operator=(const ticket_keys&) = delete;

  // The key to seal with at `now_ms`: made anew once the current one is a period old.
  // nullopt when a new key was due and no random one could be had (no ticket then).
  std::optional<ticket_key> sealing(std::int64_t now_ms);

  // The keys that may open a ticket at `now_ms`, the newest first: each key less than two
  // periods old. Returns how many were written to `out`. (Both calls erase the keys that
  // are two periods old first.)
  std::size_t opening(std::int64_t now_ms, std::array<ticket_key, 2>& out);

  // Erases the keys that are two periods old at `now_ms`, as the calls above do first; for
  // a server that sees no handshakes, so an old key does not stay in memory until the next
  // one. Returns how many were erased.
  std::size_t forget_expired(std::int64_t now_ms);

  // Erases every key for good: nothing opens, and no key is made to seal. For a context a
  // reload replaced, whose tickets no new connection may use.
  void retire();

 private:
  struct entry {
    ticket_key key{};
    std::int64_t made_ms = 0;
    bool live = false;
  };
  bool usable(const entry& e, std::int64_t now_ms, std::int64_t periods) const {
    return e.live && now_ms - e.made_ms < periods * period_ms_;
  }
  std::size_t sweep(std::int64_t now_ms);

  std::mutex mutex_;
  std::int64_t period_ms_;
  entry current_, previous_;
  bool retired_ = false;
};

}  // namespace tunnel::tls
