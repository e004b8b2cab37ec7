#pragma once
// CPU time the calling thread has used: what a handshake step costs, measured around it
// (policy/penalty_box.hpp).
#include <time.h>

#include <chrono>

namespace tunnel::tls {

inline std::chrono::nanoseconds thread_cpu() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

}  // namespace tunnel::tls
