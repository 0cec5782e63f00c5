#!/usr/bin/env bash
# Rolls the node service one replica at a time, with no gap in service:
# `docker compose up -d --build` would recreate every replica at once (all
# of them drain together, then every client reconnects in one storm).
#
# For each old replica: start one new replica (from the freshly built
# image), wait until it is healthy and the balancer has had time to check
# it, then stop the old one (SIGTERM: it turns not-ready, waits
# CHAT_DRAIN_DELAY, moves its clients in batches, exits) and remove it.
# The replica count stays what it was.
#
# Usage: scripts/roll.sh [--no-build] [compose options...]
#   compose options default to -f deploy/docker-compose.yml; pass your own
#   (-p NAME, -f FILE, ...) to roll another project.
# Needs Compose v2 (`docker compose`).
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
if [ "${1:-}" = --no-build ]; then build=0; shift; fi
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-f deploy/docker-compose.yml)
dc() { docker compose "${args[@]}" "$@"; }
log() { echo "roll: $(date +%T) $*"; }

# The balancer checks every second and needs one good check (rise 1).
settle=${ROLL_SETTLE:-2}
health_timeout=${ROLL_HEALTH_TIMEOUT:-60}

if [ "$build" = 1 ]; then
	log "building"
	dc build node
fi
mapfile -t old < <(dc ps -q node)
n=${#old[@]}
if [ "$n" = 0 ]; then echo "roll: no running node replica" >&2; exit 1; fi
log "rolling $n replicas"

wait_healthy() {
	local id=$1 deadline=$((SECONDS + health_timeout)) status
	while :; do
		status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")
		case $status in
		healthy) return 0 ;;
		unhealthy | exited | dead) echo "roll: new replica $id is $status" >&2; return 1 ;;
		esac
		if [ $SECONDS -ge $deadline ]; then echo "roll: new replica $id not healthy after ${health_timeout}s" >&2; return 1; fi
		sleep 0.5
	done
}

for id in "${old[@]}"; do
	before=$(dc ps -q node | sort)
	dc up -d --no-deps --no-recreate --scale "node=$((n + 1))" node >/dev/null 2>&1 ||
		dc up -d --no-deps --no-recreate --scale "node=$((n + 1))" node
	new=$(comm -13 <(echo "$before") <(dc ps -q node | sort) | head -1)
	if [ -z "$new" ]; then echo "roll: no new replica appeared" >&2; exit 1; fi
	wait_healthy "$new"
	sleep "$settle" # the balancer's next check puts it in rotation
	log "$(docker inspect -f '{{.Name}}' "$new" | tr -d /) up; draining $(docker inspect -f '{{.Name}}' "$id" | tr -d /)"
	docker stop "$id" >/dev/null
	docker rm "$id" >/dev/null
done
log "done: $(dc ps -q node | wc -l) replicas"
