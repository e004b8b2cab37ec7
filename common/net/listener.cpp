#include "net/listener.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <asio/ip/tcp.hpp>
#include <optional>
#include <stdexcept>

#include "net/endpoint.hpp"

namespace tunnel::net {
namespace {

generic_endpoint resolve_listen(asio::io_context& io, const address& at) {
  if (at.is_unix()) return unix_endpoint(at.path);
  asio::ip::tcp::resolver resolver(io);
  std::error_code ec;
  auto results = resolver.resolve(at.host, std::to_string(at.port),
                                  asio::ip::resolver_base::passive |
                                      asio::ip::resolver_base::numeric_service,
                                  ec);
  if (ec || results.empty())
    throw std::runtime_error("cannot resolve listen address " + at.to_string() + ": " +
                             (ec ? ec.message() : "no addresses"));
  return to_generic(results.begin()->endpoint());
}

// A socket file stays behind when a process ends without removing it (a crash, SIGKILL).
// Connecting tells a stale one (refused) from one a running process still serves.
void remove_stale_unix_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode))
    throw std::runtime_error("listen path " + path + " exists and is not a socket");
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) throw std::runtime_error("cannot check listen path " + path + ": " + std::strerror(errno));
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
  const int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  const int err = errno;
  ::close(fd);
  if (rc == 0 || err == EAGAIN)  // accepted, or queued behind a full backlog: alive
    throw std::runtime_error("listen path " + path + " is in use by a running process");
  if (err != ECONNREFUSED)
    throw std::runtime_error("cannot check listen path " + path + ": " + std::strerror(err));
  ::unlink(path.c_str());
}

// The owner of the socket file (fchown on a socket does not reach its file). lchown: between
// bind() and here someone who may write to the directory could put a symlink in its place,
// and chown() as root would then give them whatever file it points at.
void apply_owner(const std::string& path, const unix_socket_access& access) {
  if (!access.owner && !access.group) return;
  const uid_t uid = access.owner ? *access.owner : static_cast<uid_t>(-1);
  const gid_t gid = access.group ? *access.group : static_cast<gid_t>(-1);
  if (::lchown(path.c_str(), uid, gid) != 0)
    throw std::runtime_error("cannot set the owner of " + path + " (--socket-owner): " + std::strerror(errno));
}

// The mode is given to the socket file as bind() creates it, through the umask, rather than
// set afterwards by path (chmod follows a symlink swapped in meanwhile). Start-up is single
// threaded here, so the process-wide umask is ours for the moment.
class creation_mode {
 public:
  explicit creation_mode(std::optional<mode_t> mode) : active_(mode.has_value()) {
    if (active_) previous_ = ::umask(static_cast<mode_t>(~*mode & 0777));
  }
  ~creation_mode() {
    if (active_) ::umask(previous_);
  }
  creation_mode(const creation_mode&) = delete;
  creation_mode& operator=(const creation_mode&) = delete;

 private:
  bool active_;
  mode_t previous_ = 0;
};

}  // namespace

generic_acceptor listen_on(asio::io_context& io, const address& at, const unix_socket_access& access) {
  const generic_endpoint ep = resolve_listen(io, at);
  if (at.is_unix()) remove_stale_unix_socket(at.path);
  generic_acceptor acceptor(io);
  std::error_code ec;
  acceptor.open(ep.protocol(), ec);
  if (!ec && !at.is_unix()) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) {
    const creation_mode mode(at.is_unix() ? access.mode : std::nullopt);
    acceptor.bind(ep, ec);
  }
  if (ec) throw std::runtime_error("cannot listen on " + at.to_string() + ": " + ec.message());
  // Until listen(), a connect() to the new file is refused: nobody gets in before the
  // owner is in place.
  if (at.is_unix()) apply_owner(at.path, access);
  acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("cannot listen on " + at.to_string() + ": " + ec.message());
  // Set once here: every accepted connection inherits it, with no setsockopt per connection.
  if (!at.is_unix()) set_low_latency(acceptor.native_handle());
  return acceptor;
}

std::string bound_address(const generic_acceptor& acceptor) {
  std::error_code ec;
  const auto ep = acceptor.local_endpoint(ec);
  return ec ? std::string("unknown") : describe(ep);
}

}  // namespace tunnel::net
