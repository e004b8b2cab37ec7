#pragma once
// Sources whose failed handshakes cost us dearly, kept out for a while.
//
// mbedTLS checks every signature along the chain a peer sends before it finds that the
// chain does not reach our CA, and it takes RSA keys with any public exponent up to the
// modulus. A client with no valid certificate can send intermediates whose 8192-bit keys
// carry an 8190-bit exponent: each costs us a full modular exponentiation, over a second of
// CPU for a chain it cost the client nothing to make, run on the worker that every other
// connection of that thread waits for. There is no hook before that check, so the answer is
// after it: a source whose handshake failed *and* burnt more CPU than any honest one does
// is refused at accept for a while, longer at each repetition. Honest failures (a wrong
// CA, an expired certificate) cost a few milliseconds and are never penalised.
//
// Thread-safe; bounded (the oldest entries go first). Pure apart from the lock: the caller
// passes the time.
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>

namespace tunnel::policy {

class penalty_box {
 public:
  using clock = std::chrono::steady_clock;
  using source = std::array<std::uint8_t, 16>;  // an IPv6 address (IPv4 mapped)

  // CPU a failed handshake may cost before its source is penalised: an honest full
  // handshake costs about 3 ms here, a failed one less, and even a sanitizer build or a
  // slow embedded CPU stays well below this; a crafted chain costs seconds.
  static constexpr std::chrono::milliseconds costly = std::chrono::milliseconds(200);
  static constexpr std::chrono::seconds first_penalty = std::chrono::seconds(10);
  static constexpr std::chrono::seconds longest_penalty = std::chrono::minutes(10);
  static constexpr std::size_t capacity = 4096;

  // A failed handshake from `from` cost `cpu`. Returns the penalty given (nullopt: none,
  // the cost was ordinary).
  std::optional<clock::duration> failed(const source& from, clock::duration cpu, clock::time_point now);
  // Whether `from` is kept out at `now`.
  bool penalised(const source& from, clock::time_point now) const;
  std::size_t size() const;

  static penalty_box& process();  // the one the listeners share

 private:
  struct entry {
    clock::time_point until;
    clock::duration penalty{};
    clock::time_point last;  // the latest offence: the oldest entries are dropped first
  };
  mutable std::mutex mutex_;
  std::map<source, entry> entries_;
};

}  // namespace tunnel::policy
