#!/usr/bin/env bash
# Runs the whole test suite (unit, integration against real redis-server,
# browser tests in headless Chromium), with the race detector. Installs the
# Debian packages the tests need when they are missing.
# Usage: scripts/test.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
command -v haproxy >/dev/null || need+=(haproxy)
# The terminal client's tests drive it in a tmux pane (cmd/chat).
command -v tmux >/dev/null || need+=(tmux)
# The fault tests black-hole loopback ports (testutil.DropTCP).
command -v iptables >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# -p 1 keeps package binaries from competing for the two cores while the
# tests inside each package run in parallel.
go test -race -count=1 -timeout 20m -p 1 "$@" ./...
