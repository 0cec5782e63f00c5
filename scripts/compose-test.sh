#!/usr/bin/env bash
# The compose end-to-end test (test/compose): the real Dockerfile and
# deploy/docker-compose.yml on this machine's Docker engine, with
# `--scale node=3`, under traffic through the balancer (see
# test/compose/stack_test.go for the checks). Prepares what it needs:
#   - Compose v2 (scripts/compose-v2.sh builds it when only v1 is here);
#   - the base images: real ones when present, else local stand-ins
#     (scripts/standin-images.sh, cached);
# then runs the test, and always removes the project (containers,
# networks, volumes), even when the test binary is killed.
#
# Usage: scripts/compose-test.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."

t0=$(date +%s)
scripts/compose-v2.sh
# Stand-ins for the base images; those already current, and real images
# (pulled where a registry is reachable), are kept.
scripts/standin-images.sh
echo "compose-test: tools and images ready in $(($(date +%s) - t0)) s"

export CHAT_E2E_PROJECT=chate2e$$
cleanup() {
	docker compose -p "$CHAT_E2E_PROJECT" -f deploy/docker-compose.yml --profile monitoring \
		down -v --remove-orphans -t 5 >/dev/null 2>&1 || true
}
trap cleanup EXIT
go test -tags compose -count=1 -v -timeout 30m "$@" ./test/compose
