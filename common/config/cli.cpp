#include "config/cli.hpp"

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <mbedtls/version.h>
#include <stdexcept>
#include <thread>

#include "config/file.hpp"
#include "config/flags.hpp"

namespace tunnel::config {
namespace {

std::string version_text(const char* program) {
  char lib[18] = {};
  mbedtls_version_get_string(lib);
  return std::string(program) + " " TUNNEL_VERSION " (mbedTLS " + lib + ")";
}

const char* server_footer = R"(
Examples:
  tunnel-out --listen 0.0.0.0:8443 --target 127.0.0.1:5432 \
             --cert server.crt --key server.key --ca ca.crt --allow-cn app-client

Every client must present a certificate that chains to --ca. With no --allow-* flag every
such certificate is admitted (the start-up log says so); with any, the client must match
at least one entry. ADDR: host:port, [v6]:port or unix:/path. DUR: 250ms, 10s, 5m, 1h.
Exit codes: 0 after a clean shutdown, 2 for a configuration mistake.)";

const char* client_footer = R"(
Examples:
  tunnel-in --listen 127.0.0.1:5432 --connect db.example.net:8443 \
            --cert client.crt --key client.key --ca ca.crt

The server certificate must chain to --ca and carry --server-name (default: the host of
--connect) as a DNS or IP SAN; with --pin-spki-sha256 the key pin replaces the name check.
ADDR: host:port, [v6]:port or unix:/path. DUR: 250ms, 10s, 5m, 1h.
Exit codes: 0 after a clean shutdown, 2 for a configuration mistake.)";

// Sorts the flags into sections so --help reads like a manual page; a flag not listed here
// lands in "Other" rather than being hidden.
void assign_groups(CLI::App& app) {
  static const std::pair<const char*, const char*> sections[] = {
      {"--config", "Addresses"}, {"--service", "Addresses"}, {"--listen", "Addresses"}, {"--target", "Addresses"}, {"--connect", "Addresses"},
      {"--cert", "Credentials"}, {"--key", "Credentials"}, {"--ca", "Credentials"}, {"--crl", "Credentials"},
      {"--psk-file", "Credentials"}, {"--reload-interval", "Credentials"}, {"--expiry-warning", "Credentials"},
      {"--resumption", "Credentials"},
      {"--allow-cn", "Who may connect"}, {"--allow-dns", "Who may connect"}, {"--allow-uri", "Who may connect"},
      {"--allow-ip", "Who may connect"}, {"--allow-spki-sha256", "Who may connect"},
      {"--server-name", "Server checks"}, {"--pin-spki-sha256", "Server checks"}, {"--tls-min", "Server checks"},
      {"--connect-timeout", "Timeouts"}, {"--handshake-timeout", "Timeouts"}, {"--idle-timeout", "Timeouts"},
      {"--close-timeout", "Timeouts"}, {"--max-lifetime", "Timeouts"}, {"--shutdown-timeout", "Timeouts"},
      {"--max-conns", "Limits and threads"}, {"--threads", "Limits and threads"},
      {"--busy-poll", "Limits and threads"},
      {"--udp", "UDP"}, {"--mtu", "UDP"}, {"--max-flows", "UDP"}, {"--flow-idle-timeout", "UDP"},
      {"--udp-over-tls", "UDP"}, {"--tls-fallback", "UDP"}, {"--dtls-retry", "UDP"}, {"--tls-listen", "UDP"},
      {"--proxy-protocol", "Plain legs"}, {"--transparent", "Plain legs"},
      {"--accept-proxy-protocol", "Plain legs"}, {"--accept-proxy-from", "Plain legs"}, {"--socket-mode", "Plain legs"}, {"--socket-owner", "Plain legs"},
      {"--mode", "Mux"}, {"--pool", "Mux"}, {"--keepalive", "Mux"}, {"--rotate-after", "Mux"},
      {"--target-tls", "TLS bridge"}, {"--target-ca", "TLS bridge"}, {"--target-crl", "TLS bridge"}, {"--target-server-name", "TLS bridge"},
      {"--target-cert", "TLS bridge"}, {"--target-key", "TLS bridge"}, {"--target-alpn", "TLS bridge"},
      {"--listen-cert", "TLS bridge"}, {"--listen-key", "TLS bridge"}, {"--listen-ca", "TLS bridge"},
      {"--listen-crl", "TLS bridge"},
      {"--listen-alpn", "TLS bridge"},
      {"--status", "Operations"}, {"--user", "Operations"}, {"--check-config", "Operations"},
      {"--log-level", "Operations"}, {"--log-format", "Operations"},
  };
  for (CLI::Option* opt : app.get_options()) {
    if (opt->get_name() == "--help" || opt->get_name() == "--version") continue;
    std::string group = "Other";
    for (const auto& [flag, section] : sections)
      for (const auto& name : opt->get_lnames())
        if ("--" + name == flag) group = section;
    opt->group(group);
    // "ADDR to accept ..." / "FILE: our ..." -> shown as `--listen ADDR`, `--cert FILE`.
    const std::string& text = opt->get_description();
    const auto word = text.substr(0, text.find_first_of(" :"));
    if (opt->get_type_size() != 0 && !word.empty() &&
        word.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") == std::string::npos)
      opt->type_name(word);
  }
}

std::string first_line(const std::string& text) {
  auto nl = text.find('\n');
  return nl == std::string::npos ? text : text.substr(0, nl);
}

}  // namespace

std::size_t default_max_conns(unsigned threads) {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return 10000;
  const auto fds = static_cast<std::size_t>(lim.rlim_cur);
  const std::size_t reserve = 64 + 64 + 3 * std::size_t{threads};
  return fds > reserve + 64 ? (fds - reserve) / 2 : 32;
}

cli_outcome parse_command_line(tls::role side, int argc, char** argv) {
  const char* program = side == tls::role::server ? "tunnel-out" : "tunnel-in";
  CLI::App app(side == tls::role::server
                   ? "tunnel-out: accept mutually authenticated TLS 1.3 and relay to a plaintext legacy server"
                   : "tunnel-in: accept plaintext legacy connections and carry them over mutually authenticated TLS 1.3",
               program);
  app.footer(side == tls::role::server ? server_footer : client_footer);
  app.set_version_flag("--version", version_text(program));
  raw_flags flags;
  add_flags(app, flags, side);
  assign_groups(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    std::cout << app.help();
    return {std::nullopt, 0};
  } catch (const CLI::CallForVersion&) {
    std::cout << version_text(program) << "\n";
    return {std::nullopt, 0};
  } catch (const CLI::ParseError& e) {
    std::cerr << program << ": error: " << first_line(e.what()) << " (see --help)\n";
    return {std::nullopt, 2};
  }
  try {
    if (flags.config.empty()) return {settings{{validate(side, flags)}, {}}, 0, flags.check_config};
    // The file holds every setting: a flag beside it would be a second, competing source.
    for (const CLI::Option* opt : app.get_options())
      if (opt->count() > 0 && opt->get_name() != "--config" && opt->get_name() != "--check-config")
        throw usage_error(opt->get_name() + ": not with --config (write it in the file)");
    return {load_file(side, flags.config), 0, flags.check_config};
  } catch (const usage_error& e) {
    std::cerr << program << ": error: " << e.what() << "\n";
    return {std::nullopt, 2};
  }
}

}  // namespace tunnel::config
