#!/usr/bin/env bash
# Installs what a fresh machine needs for the tests and the demo: Debian packages
# (Prometheus, openssl, curl) and the Go-built control plane (cached).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
log() { printf '[deps %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  # Without systemd, the prometheus package's service is not started (policy-rc.d).
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { log "cargo is missing: install Rust with rustup (https://rustup.rs)"; exit 1; }
command -v go >/dev/null || { log "go is missing: it builds the local Kubernetes control plane"; exit 1; }
"$repo/tests/e2e/build-bins.sh" >/dev/null
