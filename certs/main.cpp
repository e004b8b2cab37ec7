// tunnel-certs: a one-command private PKI for tunnel-in / tunnel-out, on mbedTLS's
// certificate writer (no openssl CLI needed).
//
//   tunnel-certs init  --dir DIR [--server-dns NAME]... [--server-ip IP]... [--client-cn NAME]
//   tunnel-certs issue --dir DIR --name NAME --server|--client [--dns N]... [--ip IP]... [--uri U]...
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>

#include "tls/credentials.hpp"
#include "tls/pki.hpp"

namespace fs = std::filesystem;
using namespace tunnel;

namespace {

class refusal : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw refusal("cannot read " + p.string());
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Gives `tmp` the name `p`: replacing it with `force`, else only if nothing holds the name
// by then. Returns 0 or the errno. (Where the file system has no RENAME_NOREPLACE, NFS
// and some FUSE mounts, link() does the same: it fails with EEXIST.)
int place(const fs::path& tmp, const fs::path& p, bool force) {
  if (force) return ::rename(tmp.c_str(), p.c_str()) == 0 ? 0 : errno;
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, p.c_str(), RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return errno;
  if (::link(tmp.c_str(), p.c_str()) != 0) return errno;
  ::unlink(tmp.c_str());
  return 0;
}

// Writes through a fresh file with the final mode set before any byte lands, so a private
// key is never readable by others, not even for a moment; synced before it takes the final
// name, which it takes only if nothing holds that name by then (unless `force`).
void write_file(const fs::path& p, const std::string& text, mode_t mode, bool force) {
  if (fs::exists(p) && !force) throw refusal(p.string() + " exists (use --force to overwrite)");
  const fs::path tmp = p.string() + ".tmp";
  fs::remove(tmp);
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) throw refusal("cannot create " + tmp.string() + ": " + std::strerror(errno));
  int err = 0;  // the first failure's errno
  for (std::size_t done = 0; done < text.size() && err == 0;) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n > 0) done += static_cast<std::size_t>(n);
    else if (n < 0 && errno == EINTR) continue;
    else err = n < 0 ? errno : ENOSPC;
  }
  if (err == 0 && (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0)) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  if (err == 0) err = place(tmp, p, force);
  if (err == 0) return;
  ::unlink(tmp.c_str());  // never leave a key behind under another name
  if (err == EEXIST) throw refusal(p.string() + " exists (use --force to overwrite)");
  throw refusal("cannot write " + p.string() + ": " + std::strerror(err));
}

// --name is a file name in --dir and the certificate's common name: letters, digits, '.',
// '_' and '-', not starting with '.', and not the CA's own.
void check_name(const std::string& name) {
  const bool plain = !name.empty() && name.size() <= 64 && name.front() != '.' &&
                     std::all_of(name.begin(), name.end(), [](unsigned char c) {
                       return std::isalnum(c) || c == '.' || c == '_' || c == '-';
                     });
  if (!plain) throw refusal("--name " + name + ": use 1-64 letters, digits, '.', '_' or '-', not starting with '.'");
  if (name == "ca") throw refusal("--name ca: that is the CA's own file name");
}

void check_absent(const fs::path& p, bool force) {
  if (fs::exists(p) && !force) throw refusal(p.string() + " exists (use --force to overwrite)");
}

void save_pair(const fs::path& dir, const std::string& name, const tls::issued& cert, bool force) {
  write_file(dir / (name + ".key"), cert.key_pem, 0600, force);
  write_file(dir / (name + ".crt"), cert.cert_pem, 0644, force);
}

tls::issued load_ca(const fs::path& dir) {
  if (!fs::exists(dir / "ca.crt") || !fs::exists(dir / "ca.key"))
    throw refusal("no CA in " + dir.string() + " (run: tunnel-certs init --dir " + dir.string() + ")");
  return {read_file(dir / "ca.crt"), read_file(dir / "ca.key")};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("tunnel-certs: a private CA and certificates for tunnel-in / tunnel-out (ECDSA P-256)",
               "tunnel-certs");
  app.require_subcommand(1);
  std::string dir;
  bool force = false;
  int days = 365;

  auto* init = app.add_subcommand("init", "create a CA plus one server and one client certificate");
  std::vector<std::string> server_dns{"localhost"}, server_ip{"127.0.0.1", "::1"};
  std::string client_cn = "tunnel-in";
  init->add_option("--dir", dir, "output directory (created if missing)")->required();
  init->add_option("--server-dns", server_dns, "DNS SAN of the server certificate (default localhost)");
  init->add_option("--server-ip", server_ip, "IP SAN of the server certificate (default 127.0.0.1, ::1)");
  init->add_option("--client-cn", client_cn, "common name of the client certificate (default tunnel-in)");
  init->add_option("--days", days, "lifetime of the leaf certificates in days (default 365; CA: 10 years)");
  init->add_flag("--force", force, "overwrite existing files");

  auto* issue = app.add_subcommand("issue", "issue one more certificate from the CA in --dir");
  std::string name;
  bool server = false, client = false;
  std::vector<std::string> dns, ip, uri;
  issue->add_option("--dir", dir, "directory holding ca.crt and ca.key")->required();
  issue->add_option("--name", name, "file name stem and common name")->required();
  issue->add_flag("--server", server, "for tunnel-out (extended key usage serverAuth)");
  issue->add_flag("--client", client, "for tunnel-in (extended key usage clientAuth)");
  issue->add_option("--dns", dns, "DNS SAN (repeatable)");
  issue->add_option("--ip", ip, "IP SAN (repeatable)");
  issue->add_option("--uri", uri, "URI SAN, e.g. a SPIFFE ID (repeatable)");
  issue->add_option("--days", days, "lifetime in days (default 365)");
  issue->add_flag("--force", force, "overwrite existing files");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (days < 1 || days > 3650) throw refusal("--days must be 1..3650");
    tls::init_library();
    const fs::path out(dir);
    fs::create_directories(out);
    const auto lifetime = std::chrono::hours(24 * days);
    if (*init) {
      for (const char* f : {"ca.crt", "ca.key", "server.crt", "server.key", "client.crt", "client.key"})
        check_absent(out / f, force);
      // Everything made before anything is written: a bad --server-ip leaves no CA behind.
      const auto ca = tls::make_ca({.common_name = "tunnel private CA", .not_after_offset = std::chrono::hours(24 * 3650)});
      const auto server_pair = tls::issue({.common_name = "tunnel-out", .dns = server_dns, .ip = server_ip,
                                           .purpose = tls::usage::server, .not_after_offset = lifetime}, ca);
      const auto client_pair = tls::issue({.common_name = client_cn, .purpose = tls::usage::client,
                                           .not_after_offset = lifetime}, ca);
      save_pair(out, "ca", ca, force);
      save_pair(out, "server", server_pair, force);
      save_pair(out, "client", client_pair, force);
      std::cout << "wrote " << out.string() << "/{ca,server,client}.{crt,key} (keys mode 0600)\n";
    } else {
      if (server == client) throw refusal("give exactly one of --server or --client");
      check_name(name);
      for (const char* ext : {".crt", ".key"}) check_absent(out / (name + ext), force);
      const auto ca = load_ca(out);
      save_pair(out, name, tls::issue({.common_name = name, .dns = dns, .ip = ip, .uri = uri,
                                       .purpose = server ? tls::usage::server : tls::usage::client,
                                       .not_after_offset = lifetime}, ca), force);
      std::cout << "wrote " << (out / name).string() << ".{crt,key} (key mode 0600)\n";
    }
  } catch (const std::exception& e) {
    std::cerr << "tunnel-certs: error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
