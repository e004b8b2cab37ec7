#include "tls/ticket.hpp"

#include <mbedtls/chachapoly.h>
#include <mbedtls/platform_util.h>
#include <psa/crypto.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

namespace tunnel::tls {
namespace {

constexpr unsigned char format_version = 1;
constexpr std::size_t nonce_size = 12, tag_size = 16;
constexpr std::size_t fixed_plain = 8 + 8 + 2;  // authenticated, not_after, identity length
// Authenticated with the ciphertext: the format version, and what the bytes are for.
constexpr unsigned char aad[] = {format_version, 't', 'u', 'n', 'n', 'e', 'l', '-', 't', 'i', 'c', 'k', 'e', 't'};

class writer {
 public:
  void u16(std::size_t v) { u(v, 2); }
  void u64(std::uint64_t v) { u(v, 8); }
  bool text(const std::string& s) {
    if (s.size() > 0xFFFF) return false;
    u16(s.size());
    bytes_.insert(bytes_.end(), s.begin(), s.end());
    return true;
  }
  bool texts(const std::vector<std::string>& v) {
    if (v.size() > 0xFFFF) return false;
    u16(v.size());
    return std::all_of(v.begin(), v.end(), [&](const std::string& s) { return text(s); });
  }
  void raw(std::span<const unsigned char> b) { bytes_.insert(bytes_.end(), b.begin(), b.end()); }
  std::vector<unsigned char>& bytes() { return bytes_; }

 private:
  void u(std::uint64_t v, int n) {
    for (int i = n - 1; i >= 0; --i) bytes_.push_back(static_cast<unsigned char>(v >> (8 * i)));
  }
  std::vector<unsigned char> bytes_;
};

// Every read is bounded by what is left; a short or malformed input sets failed().
class reader {
 public:
  explicit reader(std::span<const unsigned char> b) : b_(b) {}
  std::uint64_t u(std::size_t n) {
    if (n > b_.size()) return fail();
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < n; ++i) v = (v << 8) | b_[i];
    b_ = b_.subspan(n);
    return v;
  }
  std::span<const unsigned char> take(std::size_t n) {
    if (n > b_.size()) return fail(), std::span<const unsigned char>{};
    auto out = b_.first(n);
    b_ = b_.subspan(n);
    return out;
  }
  std::string text() {
    auto s = take(u(2));
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }
  std::vector<std::string> texts() {
    std::vector<std::string> v;
    for (std::uint64_t n = u(2); n > 0 && !failed_; --n) v.push_back(text());
    return v;
  }
  std::span<const unsigned char> rest() { return std::exchange(b_, {}); }
  bool failed() const { return failed_; }

 private:
  std::uint64_t fail() {
    failed_ = true;
    b_ = {};
    return 0;
  }
  std::span<const unsigned char> b_;
  bool failed_ = false;
};

std::optional<std::vector<unsigned char>> encode_identity(const policy::peer_identity& p) {
  writer w;
  if (!w.text(p.cn) || !w.texts(p.dns) || !w.texts(p.uri) || !w.texts(p.ip)) return std::nullopt;
  w.raw(p.spki);
  if (w.bytes().size() > 0xFFFF) return std::nullopt;
  return std::move(w.bytes());
}

std::optional<policy::peer_identity> decode_identity(std::span<const unsigned char> b) {
  reader r(b);
  policy::peer_identity p;
  p.cn = r.text();
  p.dns = r.texts();
  p.uri = r.texts();
  p.ip = r.texts();
  auto spki = r.take(p.spki.size());
  if (r.failed() || !r.rest().empty()) return std::nullopt;
  std::copy(spki.begin(), spki.end(), p.spki.begin());
  return p;
}

std::optional<std::vector<unsigned char>> plaintext_of(const ticket_contents& c) {
  auto identity = encode_identity(c.peer);
  if (!identity) return std::nullopt;
  writer w;
  w.bytes().reserve(fixed_plain + identity->size() + c.session.size());  // no copies left behind by growth
  w.u64(static_cast<std::uint64_t>(c.authenticated_ms));
  w.u64(static_cast<std::uint64_t>(c.not_after));
  w.u16(identity->size());
  w.raw(*identity);
  w.raw(c.session);
  return std::move(w.bytes());
}

struct chachapoly {
  explicit chachapoly(const ticket_key& key) {
    mbedtls_chachapoly_init(&ctx);
    ok = mbedtls_chachapoly_setkey(&ctx, key.data()) == 0;
  }
  ~chachapoly() { mbedtls_chachapoly_free(&ctx); }
  chachapoly(const chachapoly&) = delete;
  chachapoly& operator=(const chachapoly&) = delete;
  mbedtls_chachapoly_context ctx;
  bool ok;
};

}  // namespace

std::size_t seal_ticket(const ticket_key& key, const ticket_contents& c, std::span<unsigned char> out) {
  auto plain = plaintext_of(c);
  if (!plain) return 0;
  const std::size_t total = 1 + nonce_size + plain->size() + tag_size;
  unsigned char* nonce = out.data() + 1;
  unsigned char* body = nonce + nonce_size;
  chachapoly aead(key);
  const bool sealed = out.size() >= total && psa_generate_random(nonce, nonce_size) == PSA_SUCCESS && aead.ok &&
                      mbedtls_chachapoly_encrypt_and_tag(&aead.ctx, plain->size(), nonce, aad, sizeof aad,
                                                         plain->data(), body, body + plain->size()) == 0;
  mbedtls_platform_zeroize(plain->data(), plain->size());  // it holds the resumption secret
  if (!sealed) return 0;
  out[0] = format_version;
  return total;
}

std::optional<ticket_contents> open_ticket(const ticket_key& key, std::span<const unsigned char> ticket) {
  if (ticket.size() < 1 + nonce_size + fixed_plain + tag_size || ticket[0] != format_version) return std::nullopt;
  const unsigned char* nonce = ticket.data() + 1;
  const std::size_t length = ticket.size() - 1 - nonce_size - tag_size;
  const unsigned char* body = nonce + nonce_size;
  std::vector<unsigned char> plain(length);
  chachapoly aead(key);
  if (!aead.ok ||
      mbedtls_chachapoly_auth_decrypt(&aead.ctx, length, nonce, aad, sizeof aad, body + length, body, plain.data()) != 0)
    return std::nullopt;
  reader r(plain);
  ticket_contents c;
  c.authenticated_ms = static_cast<std::int64_t>(r.u(8));
  c.not_after = static_cast<std::int64_t>(r.u(8));
  auto peer = decode_identity(r.take(r.u(2)));
  auto session = r.rest();
  std::optional<ticket_contents> out;
  if (!r.failed() && peer && !session.empty()) {
    c.peer = std::move(*peer);
    c.session.assign(session.begin(), session.end());
    out = std::move(c);
  }
  mbedtls_platform_zeroize(plain.data(), plain.size());
  return out;
}

}  // namespace tunnel::tls
