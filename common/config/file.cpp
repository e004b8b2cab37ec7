#include "config/file.hpp"
#include "config/read_file.hpp"

#include <algorithm>
#include <filesystem>
#include <set>
#include <toml++/toml.h>

#include "config/duration.hpp"
#include "config/flags.hpp"

namespace tunnel::config {
namespace {

// Settings of the whole process: written once, at the top level.
const std::set<std::string> process_wide = {"threads", "busy-poll",        "log-level",      "log-format",
                                            "status",  "shutdown-timeout", "reload-interval", "user"};
// File names: relative ones are taken from the config file's directory, so a file and its
// certificates can move together (and systemd's working directory does not matter).
const std::set<std::string> file_keys = {"cert",       "key",         "ca",         "crl",         "psk-file",
                                         "target-ca",  "target-crl",  "target-cert", "target-key",
                                         "listen-cert", "listen-key", "listen-ca",  "listen-crl"};
// Command-line only: they say how to read the settings, they are not settings.
const std::set<std::string> not_in_file = {"config", "check-config", "help", "version"};

std::string line_of(const std::string& file, const toml::node& n) {
  return file + ":" + std::to_string(n.source().begin.line);
}

// One key's value as command-line words, type-checked against its flag.
void append(std::vector<std::string>& args, const CLI::Option& opt, const std::string& where,
            const toml::node& value, const std::filesystem::path& base) {
  const std::string& flag = opt.get_name();
  if (file_keys.count(flag.substr(2))) {
    auto name = value.value_exact<std::string>();
    if (!name) throw usage_error(where + ": expected a string");
    const std::filesystem::path path(*name);
    args.insert(args.end(), {flag, path.is_relative() && !name->empty() ? (base / path).string() : *name});
    return;
  }
  auto scalar = [&](const toml::node& v) -> std::string {
    if (opt.get_type_name() == "INT") {
      if (auto i = v.value_exact<std::int64_t>()) return std::to_string(*i);
      throw usage_error(where + ": expected an integer");
    }
    if (auto s = v.value_exact<std::string>()) return *s;
    throw usage_error(where + ": expected a string");
  };
  if (opt.get_expected_max() == 0) {  // an on/off flag
    auto b = value.value_exact<bool>();
    if (!b) throw usage_error(where + ": expected true or false");
    if (*b) args.push_back(flag);
    return;
  }
  if (opt.get_items_expected_max() > 1) {  // repeatable: an array, or one value
    if (const auto* list = value.as_array()) {
      // An empty allow-list in a service replaces the top-level one with none: every client
      // the CA issued to would be admitted there. Never what is meant; say so. (Elsewhere an
      // empty list is "none", as meant: no pins, default ALPN, ...)
      const bool in_service = where.find(": services.") != std::string::npos;
      if (list->empty() && in_service && flag.rfind("--allow-", 0) == 0)
        throw usage_error(where + ": an empty allow-list would admit every client of the CA (leave the key out)");
      for (const auto& item : *list) {
        args.push_back(flag);
        args.push_back(scalar(item));
      }
      return;
    }
  }
  args.push_back(flag);
  args.push_back(scalar(value));
}

struct written {
  const toml::node* node;
  std::string where;  // "site.toml:12: services.pg.cert" or "site.toml:3: cert"
};

// "--idle-timeout 5x: not a duration" -> "site.toml:9: services.pg.idle-timeout: 5x: not a duration".
std::string relocate(const std::map<std::string, std::string>& origins, const std::string& message) {
  std::string flag;
  if (message.rfind("--", 0) == 0) flag = message.substr(0, message.find_first_of(" :", 2));
  auto it = flag.empty() ? origins.end() : origins.find(flag);
  std::string rest = message;
  if (it != origins.end()) {
    rest = message.substr(flag.size());
    rest.erase(0, rest.find_first_not_of(": "));
  } else {
    it = origins.find("");
  }
  // In a file the keys carry no dashes: "--cert is required" reads "cert is required".
  for (std::size_t at = rest.find("--"); at != std::string::npos; at = rest.find("--", at))
    if (at == 0 || rest[at - 1] == ' ' || rest[at - 1] == '(') rest.erase(at, 2);
    else at += 2;
  return it == origins.end() ? rest : it->second + ": " + rest;
}

service load_service(tls::role side, const std::string& file, const std::string& name, const toml::table& table,
                     const std::map<std::string, written>& defaults) {
  const auto base = std::filesystem::path(file).parent_path();
  const std::string table_where = line_of(file, table) + ": services." + name;
  CLI::App app;
  raw_flags f;
  add_flags(app, f, side);
  std::map<std::string, written> keys = defaults;
  for (const auto& [k, v] : table) {
    const std::string key(k.str());
    const std::string where = line_of(file, v) + ": services." + name + "." + key;
    if (process_wide.count(key)) throw usage_error(where + ": a process-wide setting: write it at the top level");
    keys[key] = written{&v, where};
  }
  std::vector<std::string> args;
  std::map<std::string, std::string> origins{{"", table_where}};
  for (const auto& [key, w] : keys) {
    const CLI::Option* opt = not_in_file.count(key) ? nullptr : app.get_option_no_throw("--" + key);
    if (!opt) throw usage_error(w.where + ": unknown key");
    append(args, *opt, w.where, *w.node, base);
    origins["--" + key] = w.where;
  }
  if (!keys.count("service")) {  // the table's name is the service's name
    args.insert(args.end(), {"--service", name});
    origins["--service"] = table_where;
  }
  std::reverse(args.begin(), args.end());  // CLI11 takes the words last first
  try {
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    throw usage_error(table_where + ": " + e.what());
  }
  try {
    service s = validate(side, f);
    s.origins = std::move(origins);
    return s;
  } catch (const usage_error& e) {
    throw usage_error(relocate(origins, e.what()));
  }
}

std::string where_of(const service& s, const std::string& flag) {
  auto it = s.origins.find(flag);
  return it != s.origins.end() ? it->second : s.origins.at("");
}

std::string table_name(const service& s) {
  const std::string& t = s.origins.at("");
  return t.substr(t.find(": ") + 2);
}

// Services on one tunnel-out port share one TLS configuration: these must agree.
void check_shared_port(const service& first, const service& other, const std::string& port) {
  struct shared {
    const char* flag;
    bool same;
  };
  const shared checks[] = {
      {"--cert", first.files.cert == other.files.cert},
      {"--key", first.files.key == other.files.key},
      {"--ca", first.files.ca == other.files.ca},
      {"--crl", first.files.crl == other.files.crl},
      {"--psk-file", first.files.psk == other.files.psk},
      {"--tls-min", first.tls.min_version == other.tls.min_version},
      {"--expiry-warning", first.tls.expiry_warning == other.tls.expiry_warning},
      {"--resumption", first.tls.resumption == other.tls.resumption},
      {"--handshake-timeout", first.limits.handshake == other.limits.handshake},
      {"--keepalive", first.mux.keepalive == other.mux.keepalive},
      {"--max-conns", first.max_conns == other.max_conns},
  };
  for (const auto& c : checks)
    if (!c.same)
      throw usage_error(where_of(other, c.flag) + ": differs from " + table_name(first) + ", which listens on " +
                        port + " too (services on one port share its TLS settings)");
}

// The TLS (TCP) port a tunnel-out service is reached on: a TCP service's listen, a UDP
// service's tls-listen with udp-over-tls; none for a DTLS-only service or on tunnel-in.
std::optional<std::string> tls_port(const service& s) {
  if (s.side != tls::role::server) return std::nullopt;
  if (!s.udp.enabled) return s.listen.to_string();
  if (s.udp.over_tls && s.udp.tls_listen) return s.udp.tls_listen->to_string();
  return std::nullopt;
}

// Every listener is one socket per address, except tunnel-out's TLS ports, which carry
// several services (SNI / mux routing) and then share their TLS settings.
void check_pair(const service& a, const service& b) {
  if (a.udp.enabled == b.udp.enabled && a.listen.to_string() == b.listen.to_string()) {
    const bool own_socket = b.side == tls::role::client || b.udp.enabled;
    // Port 0: each listener gets a free port of its own (tunnel-out's TCP services on one
    // such address still share one listener).
    if (own_socket && (b.listen.is_unix() || b.listen.port != 0))
      throw usage_error(where_of(b, "--listen") + ": " + b.listen.to_string() + " is already the listener of " +
                        table_name(a));
  }
  const auto pa = tls_port(a), pb = tls_port(b);
  if (!pa || !pb || *pa != *pb) return;
  check_shared_port(a, b, *pa);
  std::string x = a.name, y = b.name;
  std::transform(x.begin(), x.end(), x.begin(), ::tolower);
  std::transform(y.begin(), y.end(), y.begin(), ::tolower);
  if (x == y)
    throw usage_error(where_of(b, "--service") + ": service name " + b.name + " is also " + table_name(a) + "'s on " +
                      *pa);
}

void check_services(const std::vector<service>& all) {
  for (std::size_t i = 0; i < all.size(); ++i)
    for (std::size_t j = 0; j < i; ++j) check_pair(all[j], all[i]);
}

}  // namespace

// A configuration of a thousand services is well under this.
constexpr std::size_t max_config_bytes = 4u << 20;

settings load_file(tls::role side, const std::string& path) {
  toml::table root;
  auto text = read_regular_file(path, max_config_bytes);
  if (!text.error.empty()) throw usage_error(path + ": " + text.error);
  try {
    root = toml::parse(text.bytes, path);
  } catch (const toml::parse_error& e) {
    const auto& at = e.source().begin;
    if (at.line == 0) throw usage_error(path + ": cannot read: " + std::string(e.description()));
    throw usage_error(path + ":" + std::to_string(at.line) + ":" + std::to_string(at.column) + ": " +
                      std::string(e.description()));
  }
  std::map<std::string, written> defaults;
  const toml::table* services = nullptr;
  for (const auto& [k, v] : root) {
    const std::string key(k.str());
    const std::string where = line_of(path, v) + ": " + key;
    if (key == "services") {
      services = v.as_table();
      if (!services) throw usage_error(where + ": expected tables, [services.NAME]");
      continue;
    }
    if (v.is_table()) throw usage_error(where + ": unknown table (services go in [services.NAME])");
    defaults[key] = written{&v, where};
  }
  if (!services || services->empty()) throw usage_error(path + ": no services: add a [services.NAME] table");
  settings out;
  out.file = path;
  for (const auto& [k, v] : *services) {
    const std::string name(k.str());
    const auto* table = v.as_table();
    if (!table) throw usage_error(line_of(path, v) + ": services." + name + ": expected a table");
    out.services.push_back(load_service(side, path, name, *table, defaults));
  }
  check_services(out.services);
  return out;
}

std::string attribute(const service& s, const std::string& message) {
  if (s.origins.empty()) return message;
  return relocate(s.origins, message);
}

}  // namespace tunnel::config
