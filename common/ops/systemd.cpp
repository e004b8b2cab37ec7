#include "ops/systemd.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <string>

namespace tunnel::ops::systemd {
namespace {

std::optional<unsigned long long> env_number(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  unsigned long long out = 0;
  auto [end, ec] = std::from_chars(v, v + std::strlen(v), out);
  if (ec != std::errc{} || *end != '\0') return std::nullopt;
  return out;
}

bool for_this_process(const char* pid_variable) {
  const auto pid = env_number(pid_variable);
  return !pid || *pid == static_cast<unsigned long long>(::getpid());
}

}  // namespace

bool notify(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || *path == '\0') return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return false;
  std::memcpy(addr.sun_path, path, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  const ssize_t sent = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                                reinterpret_cast<const sockaddr*>(&addr), addr_len);
  ::close(fd);
  return sent == static_cast<ssize_t>(state.size());
}

bool notify_reloading() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  const auto usec = static_cast<long long>(now.tv_sec) * 1000000 + now.tv_nsec / 1000;
  return notify("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec));
}

std::optional<std::chrono::microseconds> watchdog_interval() {
  if (!for_this_process("WATCHDOG_PID")) return std::nullopt;
  const auto usec = env_number("WATCHDOG_USEC");
  if (!usec || *usec == 0) return std::nullopt;
  // Bounded both ways: the pings go out every half interval, which must be neither zero
  // (a busy loop) nor beyond what a timer holds. A day is far more than systemd would ask.
  constexpr unsigned long long least = 2'000, most = 86'400'000'000ULL;
  return std::chrono::microseconds(std::clamp(*usec, least, most));
}

std::vector<int> inherited_listeners() {
  std::vector<int> fds;
  const auto pid = env_number("LISTEN_PID");
  const auto count = env_number("LISTEN_FDS");
  if (pid && count && *pid == static_cast<unsigned long long>(::getpid()) && *count <= 64) {
    for (int fd = 3; fd < 3 + static_cast<int>(*count); ++fd) {
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      fds.push_back(fd);
    }
  }
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return fds;
}

}  // namespace tunnel::ops::systemd
