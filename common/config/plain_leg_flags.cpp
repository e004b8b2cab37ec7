#include "config/plain_leg_flags.hpp"

#include <grp.h>
#include <pwd.h>

#include <vector>

#include "net/transparent.hpp"

namespace tunnel::config {
namespace {

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// A user name or a numeric uid; nullopt when there is no such user.
std::optional<uid_t> find_user(const std::string& name) {
  if (all_digits(name)) return name.size() <= 9 ? std::optional<uid_t>(std::stoul(name)) : std::nullopt;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* found = nullptr;
  if (::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found) != 0 || !found) return std::nullopt;
  return pw.pw_uid;
}

std::optional<gid_t> find_group(const std::string& name) {
  if (all_digits(name)) return name.size() <= 9 ? std::optional<gid_t>(std::stoul(name)) : std::nullopt;
  std::vector<char> buf(16384);
  group gr{};
  group* found = nullptr;
  if (::getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || !found) return std::nullopt;
  return gr.gr_gid;
}

// --socket-owner USER, USER:GROUP or :GROUP (like chown).
std::optional<std::string> apply_owner(const std::string& text, net::unix_socket_access& access) {
  const auto colon = text.find(':');
  const std::string user = text.substr(0, colon);
  const std::string grp = colon == std::string::npos ? "" : text.substr(colon + 1);
  if ((user.empty() && grp.empty()) || (colon != std::string::npos && grp.empty()))
    return "--socket-owner " + text + ": expected USER, USER:GROUP or :GROUP";
  if (!user.empty() && !(access.owner = find_user(user))) return "--socket-owner " + text + ": no such user " + user;
  if (!grp.empty() && !(access.group = find_group(grp))) return "--socket-owner " + text + ": no such group " + grp;
  return std::nullopt;
}

std::optional<std::string> apply_server_flags(const plain_leg_flags& f, service& s) {
  auto& p = s.plain;
  if (!f.proxy_protocol.empty()) {
    if (f.proxy_protocol == "v1") p.send_proxy = proxy::version::v1;
    else if (f.proxy_protocol == "v2") p.send_proxy = proxy::version::v2;
    else return "--proxy-protocol " + f.proxy_protocol + ": must be v1 or v2";
    if (s.udp.enabled) return "--proxy-protocol: TCP only (not with --udp)";
  }
  if (!f.transparent) return std::nullopt;
  if (s.udp.enabled) return "--transparent: TCP only (not with --udp)";
  if (s.target.is_unix()) return "--transparent: needs a host:port --target, not " + s.target.to_string();
  // Every target connection needs the capability; --user would have dropped it.
  if (!s.user.empty())
    return "--transparent: cannot be combined with --user (the capability it needs would be dropped); "
           "run as a user with CAP_NET_ADMIN instead";
  if (auto why = net::transparent_unavailable()) return "--transparent: " + *why;
  p.transparent = true;
  return std::nullopt;
}

std::optional<std::string> apply_client_flags(const plain_leg_flags& f, service& s) {
  auto& p = s.plain;
  if (f.accept_proxy_protocol) {
    if (s.udp.enabled) return "--accept-proxy-protocol: TCP only (not with --udp)";
    p.accept_proxy = true;
  }
  if (!f.accept_proxy_from.empty()) {
    if (!f.accept_proxy_protocol) return "--accept-proxy-from: only with --accept-proxy-protocol";
    if (s.listen.is_unix()) return "--accept-proxy-from: only with an IP --listen (a Unix client has no IP address)";
    for (const auto& text : f.accept_proxy_from) {
      auto range = proxy::parse_ip_prefix(text);
      if (!range)
        return "--accept-proxy-from " + text + ": expected an IP address or range such as 10.0.0.0/8 or 2001:db8::/32";
      p.proxy_from.push_back(*range);
    }
  }
  if (!s.listen.is_unix()) {
    if (!f.socket_mode.empty()) return "--socket-mode: only with --listen unix:/path";
    if (!f.socket_owner.empty()) return "--socket-owner: only with --listen unix:/path";
  }
  if (!f.socket_mode.empty()) {
    p.listen_access.mode = parse_socket_mode(f.socket_mode);
    if (!p.listen_access.mode) return "--socket-mode " + f.socket_mode + ": expected octal permissions such as 0660";
    if ((*p.listen_access.mode & 0222) == 0)
      return "--socket-mode " + f.socket_mode + ": no one may write to the socket, so no client could connect";
  }
  if (!f.socket_owner.empty()) {
    if (auto why = apply_owner(f.socket_owner, p.listen_access)) return why;
    p.socket_owner = f.socket_owner;
  }
  return std::nullopt;
}

}  // namespace

void add_plain_leg_flags(CLI::App& app, plain_leg_flags& f, tls::role side) {
  if (side == tls::role::server) {
    app.add_option("--proxy-protocol", f.proxy_protocol,
                   "VERSION (v1 or v2) of a PROXY protocol header naming the legacy client, sent "
                   "to the target before any data (default: none)");
    app.add_flag("--transparent", f.transparent,
                 "dial the target from the legacy client's own IP address (Linux IP_TRANSPARENT; "
                 "needs CAP_NET_ADMIN and policy routing, see README)");
    return;
  }
  app.add_flag("--accept-proxy-protocol", f.accept_proxy_protocol,
               "require a PROXY protocol header (v1 or v2) from every legacy connection, e.g. "
               "behind a load balancer; its source becomes the client's address");
  app.add_option("--accept-proxy-from", f.accept_proxy_from,
                 "CIDR,... only these addresses (the load balancers) may send the PROXY header; "
                 "a connection from anywhere else is closed (default: any)")
      ->delimiter(',');
  app.add_option("--socket-mode", f.socket_mode,
                 "MODE of the unix:/path --listen socket, octal, e.g. 0660 (default: from the umask)");
  app.add_option("--socket-owner", f.socket_owner,
                 "OWNER (USER, USER:GROUP or :GROUP) of the unix:/path --listen socket "
                 "(default: the process's user)");
}

std::optional<mode_t> parse_socket_mode(const std::string& text) {
  if (text.size() < 3 || text.size() > 4 || text.find_first_not_of("01234567") != std::string::npos)
    return std::nullopt;
  const auto mode = static_cast<mode_t>(std::stoul(text, nullptr, 8));
  if (mode > 0777) return std::nullopt;  // no setuid, setgid or sticky bits on a socket
  return mode;
}

std::optional<std::string> apply_plain_leg_flags(const plain_leg_flags& f, service& s) {
  return s.side == tls::role::server ? apply_server_flags(f, s) : apply_client_flags(f, s);
}

}  // namespace tunnel::config
