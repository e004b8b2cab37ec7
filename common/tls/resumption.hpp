#pragma once
// TLS 1.3 session resumption that keeps the peer's identity (tls/ticket.hpp says why it has
// to be carried by us). Only TLS 1.3, only the forward-secret psk_dhe_ke mode (a resumed
// handshake still runs a fresh ECDHE), never early data.
//
// Server: tickets sealed with keys made together with the TLS context and replaced every
// --resumption (tls/ticket_keys.hpp), so a credential reload, which builds a new context,
// forgets every ticket issued before it: a peer whose certificate a new CRL revokes must
// run a full handshake, and fails it. Resumption ends --resumption after the full
// handshake that verified the peer (however often it was resumed since: each resumption's
// new ticket keeps that time), and never runs past the earliest notAfter in the peer's
// chain. A ticket whose peer the service asked for would not admit is not accepted: the
// connection falls back to a full handshake, refused there.
// Client: the sessions a server gave us, beside the server identity that the full handshake
// verified; each offered once to a later connection of the same service within the window.
#include <mbedtls/ssl.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <vector>

#include "policy/peer_identity.hpp"
#include "tls/ticket.hpp"
#include "tls/ticket_keys.hpp"

namespace tunnel::tls {

// A peer as a verified certificate chain showed it.
struct known_peer {
  policy::peer_identity identity;
  std::int64_t not_after = 0;         // Unix seconds: the earliest notAfter in its chain
  std::int64_t authenticated_ms = 0;  // steady_clock milliseconds of the full handshake
};

// steady_clock now, in the milliseconds of known_peer::authenticated_ms.
std::int64_t steady_ms();

// What the handshake running on this thread offers the ticket callbacks, which mbedTLS
// calls without their connection. The engine owns one and installs it around its calls.
struct handshake_slot {
  const mbedtls_ssl_context* ssl = nullptr;
  const std::optional<policy::peer_identity>* peer = nullptr;  // the engine's, once a certificate showed it
  std::int64_t peer_not_after = std::numeric_limits<std::int64_t>::max();                    // the earliest notAfter in its chain
  std::int64_t peer_authenticated_ms = 0;                       // when that chain was verified
  std::optional<known_peer> resumed;                            // server: from the ticket mbedTLS took
  // Server: whether the service this connection asked for admits a ticket's peer.
  bool (*admits)(const void* owner, const policy::peer_identity& peer) = nullptr;
  const void* owner = nullptr;
};

class handshake_scope {
 public:
  explicit handshake_scope(handshake_slot& slot);
  ~handshake_scope();
  handshake_scope(const handshake_scope&) = delete;
  handshake_scope& operator=(const handshake_scope&) = delete;
  static handshake_slot* current();

 private:
  handshake_slot* previous_;
};

// Server side: mbedTLS's ticket callbacks (mbedtls_ssl_conf_session_tickets_cb), with `this`
// as their context.
class ticket_issuer {
 public:
  // Throws std::runtime_error when no random key can be had.
  explicit ticket_issuer(std::chrono::seconds window);
  ~ticket_issuer();
  ticket_issuer(const ticket_issuer&) = delete;
  ticket_issuer& operator=(const ticket_issuer&) = delete;

  static int write(void* self, const mbedtls_ssl_session* session, unsigned char* start, const unsigned char* end,
                   std::size_t* length, std::uint32_t* lifetime);
  static int parse(void* self, mbedtls_ssl_session* session, unsigned char* buf, std::size_t length);
  // Erases the ticket keys too old to open anything (ticket_keys::forget_expired), now.
  std::size_t forget_expired();
  // Erases every key; no ticket is issued or accepted from then on (ticket_keys::retire).
  void retire() { keys_.retire(); }

 private:
  ticket_keys keys_;
  std::chrono::seconds window_;
};

// Client side: the sessions to offer, shared by every connection of one service. Each ticket
// is offered once (RFC 8446 C.4): connections resumed from tickets cannot be linked to each
// other by the ticket an observer sees. tunnel-out sends four after a full handshake and one
// after a resumed one, so connections that overlap find one each.
class session_cache {
 public:
  static constexpr std::size_t capacity = 16;

  explicit session_cache(std::chrono::seconds window);
  ~session_cache();
  session_cache(const session_cache&) = delete;
  session_cache& operator=(const session_cache&) = delete;

  // A ticket just arrived on `ssl`, whose server is `server`: keep it (the oldest kept goes
  // when the cache is full).
  void store(mbedtls_ssl_context& ssl, const known_peer& server);
  // Before `ssl`'s handshake: takes the newest kept session still within the window and the
  // certificate's validity, sets it on `ssl` and forgets it; returns the server it was made with.
  std::optional<known_peer> offer(mbedtls_ssl_context& ssl);
  std::size_t size();
  // Drops (and zeroizes) the sessions past their window or their server's certificate, as
  // store() and offer() do first; returns how many. For an idle process, whose sessions
  // would otherwise stay in memory until its next connection.
  std::size_t forget_expired();
  // Drops every session and keeps none that arrives later: for a context a reload replaced.
  void retire();
  // Takes a copy of what `other` holds. For tests: a ticket shown where it was not issued.
  void copy_from(session_cache& other);

 private:
  struct kept {
    std::vector<unsigned char> session;  // mbedtls_ssl_session_save(): holds the resumption key
    known_peer server;
    std::chrono::steady_clock::time_point until;
  };
  static void erase(kept& k);
  std::size_t drop_expired();  // with the lock held

  std::mutex mutex_;
  std::deque<kept> kept_;  // oldest first
  bool retired_ = false;
  std::chrono::seconds window_;
};

}  // namespace tunnel::tls
