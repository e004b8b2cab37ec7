#pragma once
// The current TLS context of a service, replaceable while connections run. tls_context
// stays immutable: a reload builds a complete new one from the files and swaps the pointer.
// A connection takes one snapshot (current()) when it starts and keeps it to its end, so
// live connections never see a change; new handshakes use the newest credentials.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tls/context.hpp"
#include "tls/credentials.hpp"
#include "tls/file_digest.hpp"

namespace tunnel::tls {

enum class reload_trigger { signal, interval };

class context_source : public std::enable_shared_from_this<context_source> {
 public:
  // Loads the files and builds the first context; reports our certificate's expiry.
  // Throws credential_error (a bad file, naming the flag) or std::runtime_error (mbedTLS).
  context_source(tls_options options, credential_files files);

  // The context for a new connection. Thread-safe, cheap (one locked shared_ptr copy).
  std::shared_ptr<const tls_context> current() const;

  // A reload in two halves. prepare() re-reads every file and builds a new context: it
  // may block on the files (a hung network mount), so it runs off the event loop, and
  // reloads of one source never overlap (the content check is its state). `signal` always
  // rebuilds; `interval` only when the files' content (not their mtime) differs from the
  // last attempt. install(), on the event loop, swaps the new context in, or keeps the
  // current one on a failure (unreadable file, key not matching, expired CA, parse error,
  // ...), logs either and counts ops::metrics::reloads or reload_failures; a success
  // re-checks our certificate's expiry. It returns true when a new context was installed.
  // Neither throws (std::bad_alloc aside).
  struct prepared {
    std::shared_ptr<const tls_context> fresh;  // null: unchanged, or failed
    std::string failure;                       // why it failed ("" when it did not)
  };
  prepared prepare(reload_trigger why);
  bool install(prepared p, reload_trigger why);

  // The files a reload reads, in a fixed order.
  std::vector<std::string> watched_files() const;

 private:
  std::shared_ptr<const tls_context> build() const;
  void describe_loaded(const tls_context& c, const char* message, const char* trigger) const;

  const tls_options options_;
  const credential_files files_;
  mutable std::mutex mutex_;                    // guards current_ only
  std::shared_ptr<const tls_context> current_;
  change_detector detector_;                    // prepare()'s only
};

}  // namespace tunnel::tls
