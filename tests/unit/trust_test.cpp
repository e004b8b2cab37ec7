#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <unistd.h>

#include "config/trust_flags.hpp"
#include "tls/credentials.hpp"
#include "tls/file_digest.hpp"
#include "tls/psk_file.hpp"
#include "tls/validity.hpp"

using namespace tunnel;

namespace {

const std::string key32 = "00112233445566778899aabbccddeeff";  // 16 bytes

// A private scratch directory, removed with its files at the end of the test.
struct scratch {
  std::string dir;
  scratch() {
    char tmpl[] = "/tmp/trust-test-XXXXXX";
    dir = ::mkdtemp(tmpl);
  }
  ~scratch() { std::system(("rm -rf " + dir).c_str()); }
  std::string write(const std::string& name, const std::string& content, mode_t mode = 0600) {
    const std::string path = dir + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    ::chmod(path.c_str(), mode);
    return path;
  }
};

}  // namespace

TEST_CASE("a PSK line parses into identity and key bytes") {
  std::string why;
  auto p = tls::parse_psk("plc-7:" + key32 + "\n", why);
  REQUIRE(p);
  CHECK(p->identity == "plc-7");
  REQUIRE(p->key.size() == 16);
  CHECK(p->key[0] == 0x00);
  CHECK(p->key[15] == 0xff);
  CHECK(tls::parse_psk("a:" + key32 + "\r\n", why));
  CHECK(tls::parse_psk("a:" + std::string(96, 'A'), why));  // 48 bytes, upper-case hex
}

TEST_CASE("malformed PSK files are refused without echoing the key") {
  const std::string secretish = "deadbeefdeadbeefdeadbeefdeadbeef";
  for (const std::string& bad : {std::string(""), std::string("\n"), "noseparator" + key32, ":" + key32,
                                "id:" + key32.substr(2),               // 15 bytes: too short
                                "id:" + std::string(98, 'a'),          // 49 bytes: too long
                                "id:" + key32 + "0",                   // odd digit count
                                "id:" + key32.substr(0, 30) + "zz",    // not hex
                                "two words:" + key32,                  // space in identity
                                "id:" + key32 + "\nid2:" + key32,      // two lines
                                std::string(129, 'i') + ":" + key32,   // identity too long
                                "id:" + secretish + "x"}) {
    std::string why;
    CHECK_MESSAGE(!tls::parse_psk(bad, why), bad);
    CHECK(!why.empty());
    CHECK(why.find(secretish) == std::string::npos);
  }
}

TEST_CASE("PSK file permissions: group or world access is refused") {
  CHECK(!tls::psk_mode_too_open(0100600));
  CHECK(!tls::psk_mode_too_open(0100400));
  CHECK(tls::psk_mode_too_open(0100640));
  CHECK(tls::psk_mode_too_open(0100604));
  CHECK(tls::psk_mode_too_open(0100660));
  scratch s;
  CHECK(tls::load_psk_file(s.write("ok", "id:" + key32 + "\n")).identity == "id");
  CHECK_THROWS_AS(tls::load_psk_file(s.write("open", "id:" + key32 + "\n", 0644)), tls::credential_error);
  CHECK_THROWS_AS(tls::load_psk_file(s.dir + "/missing"), tls::credential_error);
  CHECK_THROWS_AS(tls::load_psk_file(s.write("big", std::string(5000, 'a'))), tls::credential_error);
}

TEST_CASE("content digest: same bytes same digest, whatever the mtime") {
  scratch s;
  const auto a = s.write("a", "alpha");
  const auto b = s.write("b", "beta");
  const auto d1 = tls::digest_files({a, b});
  s.write("a", "alpha");  // rewritten, new mtime, same content
  CHECK(tls::digest_files({a, b}) == d1);
  s.write("a", "alphA");
  CHECK(tls::digest_files({a, b}) != d1);
}

TEST_CASE("content digest: a symlink swap to new content is a change") {
  scratch s;
  s.write("v1", "old");
  s.write("v2", "new");
  const std::string link = s.dir + "/current";
  REQUIRE(::symlink((s.dir + "/v1").c_str(), link.c_str()) == 0);
  const auto before = tls::digest_files({link});
  const std::string tmp = s.dir + "/current.tmp";
  REQUIRE(::symlink((s.dir + "/v2").c_str(), tmp.c_str()) == 0);
  REQUIRE(std::rename(tmp.c_str(), link.c_str()) == 0);  // atomic, as Kubernetes does it
  CHECK(tls::digest_files({link}) != before);
}

TEST_CASE("content digest: missing files and boundaries count") {
  scratch s;
  const auto ab = s.write("x", "ab");
  const auto c = s.write("y", "c");
  const auto d = tls::digest_files({ab, c});
  s.write("x", "a");
  s.write("y", "bc");
  CHECK(tls::digest_files({ab, c}) != d);  // same concatenation, different files
  const auto present = tls::digest_files({ab});
  ::unlink(ab.c_str());
  const auto missing = tls::digest_files({ab});
  CHECK(missing != present);
  CHECK(tls::digest_files({ab}) == missing);  // stable while missing
}

TEST_CASE("change detector reports each change once") {
  tls::change_detector det;
  tls::file_digest a{}, b{};
  b[0] = 1;
  det.reset(a);
  CHECK(!det.changed(a));
  CHECK(det.changed(b));
  CHECK(!det.changed(b));  // reported once, even if acting on it failed
  CHECK(det.changed(a));
}

TEST_CASE("expiry warning accepts days and durations") {
  using std::chrono::seconds;
  CHECK(config::parse_expiry_warning("14d") == seconds(14 * 86400));
  CHECK(config::parse_expiry_warning("0d") == seconds(0));
  CHECK(config::parse_expiry_warning("72h") == seconds(72 * 3600));
  CHECK(config::parse_expiry_warning("365d") == seconds(365 * 86400));
  for (const char* bad : {"", "d", "366d", "-1d", "1.5d", "14", "14days"})
    CHECK_MESSAGE(!config::parse_expiry_warning(bad), bad);
}

TEST_CASE("X.509 times convert to Unix seconds") {
  mbedtls_x509_time t{};
  t.year = 1970, t.mon = 1, t.day = 1;
  CHECK(tls::unix_seconds(t) == 0);
  t.year = 2000, t.mon = 3, t.day = 1, t.hour = 12, t.min = 30, t.sec = 15;
  CHECK(tls::unix_seconds(t) == 951913815);
  t.year = 2038, t.mon = 1, t.day = 19, t.hour = 3, t.min = 14, t.sec = 8;
  CHECK(tls::unix_seconds(t) == 2147483648LL);
}

TEST_CASE("PSK mode refuses certificate flags; certificate mode needs them") {
  config::service s;
  s.side = tls::role::client;
  config::trust_flags f;
  f.psk_file = "/etc/psk";
  s.files.cert = "c.crt";
  auto why = config::apply_trust_flags(f, false, s);
  REQUIRE(why);
  CHECK(why->find("--cert") == 0);

  config::service p;
  p.side = tls::role::client;
  p.tls.server_name = "example";  // defaulted from --connect
  CHECK(!config::apply_trust_flags(f, false, p));
  CHECK(!p.tls.server_name);
  CHECK(p.files.psk == "/etc/psk");
  CHECK(config::apply_trust_flags(f, true, p));  // explicit --server-name

  config::service c;
  config::trust_flags none;
  why = config::apply_trust_flags(none, false, c);
  REQUIRE(why);
  CHECK(why->find("--cert is required") == 0);
  none.reload_interval = "500ms";
  c.files = {"c", "k", "a", "", ""};
  why = config::apply_trust_flags(none, false, c);
  REQUIRE(why);
  CHECK(why->find("--reload-interval") == 0);
}
