#include "tls/ticket.hpp"

#include <mbedtls/chachapoly.h>
#include <mbedtls/platform_util.h>
#include <psa/crypto.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <utility>

#include "codec/bytes.hpp"

namespace tunnel::tls {
namespace {

constexpr unsigned char format_version = 1;
constexpr std::size_t nonce_size = 12, tag_size = 16;
constexpr std::size_t fixed_plain = 8 + 8 + 2;  // authenticated, not_after, identity length
// Authenticated with the ciphertext: the format version, and what the bytes are for.
constexpr unsigned char aad[] = {format_version, 't', 'u', 'n', 'n', 'e', 'l', '-', 't', 'i', 'c', 'k', 'e', 't'};

// The ticket's buffers are unsigned char because mbedTLS takes them so.
using writer = codec::basic_writer<unsigned char>;
using reader = codec::basic_reader<unsigned char>;

// A count (2), then each string with its length (2).
bool put_texts(writer& w, const std::vector<std::string>& v) {
  if (v.size() > 0xFFFF) return false;
  w.u16(static_cast<std::uint16_t>(v.size()));
  return std::all_of(v.begin(), v.end(), [&](const std::string& s) { return w.prefixed<2>(s); });
}

std::string read_text(reader& r) { return std::string(codec::as_text(r.prefixed<2>())); }

std::vector<std::string> read_texts(reader& r) {
  std::vector<std::string> v;
  for (std::uint16_t n = r.u16(); n > 0 && !r.failed(); --n) v.push_back(read_text(r));
  return v;
}

std::optional<std::vector<unsigned char>> encode_identity(const policy::peer_identity& p) {
  std::vector<unsigned char> out;
  writer w(out);
  if (!w.prefixed<2>(p.cn) || !put_texts(w, p.dns) || !put_texts(w, p.uri) || !put_texts(w, p.ip)) return std::nullopt;
  w.raw(p.spki);
  if (out.size() > 0xFFFF) return std::nullopt;
  return out;
}

std::optional<policy::peer_identity> decode_identity(std::span<const unsigned char> b) {
  reader r(b);
  policy::peer_identity p;
  p.cn = read_text(r);
  p.dns = read_texts(r);
  p.uri = read_texts(r);
  p.ip = read_texts(r);
  auto spki = r.take(p.spki.size());
  if (r.failed() || !r.empty()) return std::nullopt;
  std::copy(spki.begin(), spki.end(), p.spki.begin());
  return p;
}

std::optional<std::vector<unsigned char>> plaintext_of(const ticket_contents& c) {
  auto identity = encode_identity(c.peer);
  if (!identity) return std::nullopt;
  std::vector<unsigned char> plain;
  plain.reserve(fixed_plain + identity->size() + c.session.size());  // no copies left behind by growth
  writer w(plain);
  w.u64(static_cast<std::uint64_t>(c.authenticated_ms));
  w.u64(static_cast<std::uint64_t>(c.not_after));
  if (!w.prefixed<2>(*identity)) return std::nullopt;  // encode_identity checked the size: never
  w.raw(c.session);
  return plain;
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
  c.authenticated_ms = static_cast<std::int64_t>(r.u64());
  c.not_after = static_cast<std::int64_t>(r.u64());
  auto peer = decode_identity(r.prefixed<2>());
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
