#pragma once
// The systemd service-manager protocol, spoken directly (no libsystemd needed):
// readiness/state notifications over $NOTIFY_SOCKET and socket activation via $LISTEN_FDS.
// Both are no-ops when the variables are absent, so the binaries run the same anywhere.
#include <chrono>
#include <optional>
#include <string_view>
#include <vector>

namespace tunnel::ops::systemd {

// Sends one state string such as "READY=1", "RELOADING=1", "STOPPING=1", "WATCHDOG=1",
// "STATUS=...". Returns false when $NOTIFY_SOCKET is unset or the send failed. Thread-safe.
bool notify(std::string_view state);

// "RELOADING=1" with the MONOTONIC_USEC of now, as the notify-reload protocol wants at the
// start of a reload (its end is a READY=1).
bool notify_reloading();

// The watchdog interval systemd expects pings within ($WATCHDOG_USEC, for this process),
// or nullopt when the watchdog is off.
std::optional<std::chrono::microseconds> watchdog_interval();

// File descriptors passed by socket activation ($LISTEN_PID == our pid, $LISTEN_FDS = n:
// descriptors 3..3+n-1). Clears the variables so children do not inherit them. Empty when
// not socket-activated. Call once, at start-up.
std::vector<int> inherited_listeners();

}  // namespace tunnel::ops::systemd
