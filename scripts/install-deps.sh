#!/usr/bin/env bash
# Installs what building and testing tunnel-in/tunnel-out needs, on Debian 12 or newer.
# Idempotent, non-interactive; must run as root (or with sudo available).
# --sanitizers adds what scripts/sanitizers.sh needs: clang, its sanitizer and libFuzzer
# runtimes (libclang-rt-dev) and llvm-symbolizer (readable stack traces in reports).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

PACKAGES=(build-essential cmake ninja-build pkg-config libasio-dev libcli11-dev libspdlog-dev
          libfmt-dev doctest-dev libtomlplusplus-dev libmbedtls-dev openssl python3 python3-pytest
          python3-cryptography python3-yaml iproute2 procps ccache)
if [ "${1:-}" = "--sanitizers" ]; then PACKAGES+=(clang libclang-rt-dev llvm); fi

codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"

# Debian 12 ships mbedTLS 2.28 (no TLS 1.3). Debian 13's 3.6 packages install cleanly on 12;
# pin exactly those from trixie and nothing else.
if [ "$codename" = "bookworm" ]; then
  src=/etc/apt/sources.list.d/trixie-mbedtls.sources
  pref=/etc/apt/preferences.d/trixie-mbedtls
  if [ ! -f "$src" ] || [ ! -f "$pref" ]; then
    $SUDO tee "$src" >/dev/null <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    $SUDO tee "$pref" >/dev/null <<'PREF'
Package: *
Pin: release n=trixie
Pin-Priority: -1

Package: libmbedtls-dev libmbedtls21 libmbedcrypto16 libmbedx509-7
Pin: release n=trixie
Pin-Priority: 990
PREF
    need_update=1
  fi
fi

mbedtls_ok() {
  local v
  v="$(dpkg-query -W -f='${Version}' libmbedtls-dev 2>/dev/null || true)"
  [ -n "$v" ] && dpkg --compare-versions "$v" ge 3.6
}

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ! mbedtls_ok; then missing+=(libmbedtls-dev); fi

if [ "${#missing[@]}" -gt 0 ] || [ -n "${need_update:-}" ]; then
  $SUDO apt-get update -qq
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
mbedtls_ok || { echo "mbedTLS 3.6 or newer is required (libmbedtls-dev)"; exit 1; }
