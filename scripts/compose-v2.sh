#!/usr/bin/env bash
# Makes `docker compose` (Compose v2) available: when the machine has only
# docker-compose v1 (Debian's), builds v2 from the Go module proxy with
# this machine's Go and installs it as the Docker CLI plugin
# /usr/local/lib/docker/cli-plugins/docker-compose. Skips everything when
# `docker compose version` already answers v2 (a cache between runs).
#
# Usage: scripts/compose-v2.sh
set -euo pipefail

version=${CHAT_COMPOSE_VERSION:-v2.40.3}
plugin_dir=${CHAT_COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}

if v=$(docker compose version --short 2>/dev/null) && [ "${v%%.*}" != 1 ] && [ -n "$v" ]; then
	echo "compose-v2: docker compose $v present"
	exit 0
fi
start=$(date +%s)
echo "compose-v2: building docker compose $version from the Go module proxy (a few minutes, once)"
# `go install module/cmd@version` refuses a module whose go.mod has
# exclude directives, as compose's has: build inside the downloaded module.
dir=$(go mod download -json "github.com/docker/compose/v2@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir" ] || { echo "compose-v2: could not download github.com/docker/compose/v2@$version" >&2; exit 1; }
mkdir -p "$plugin_dir"
(cd "$dir" && CGO_ENABLED=0 GOFLAGS=-mod=readonly nice -n 10 go build -trimpath \
	-ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$version" \
	-o "$plugin_dir/docker-compose.tmp" ./cmd)
mv "$plugin_dir/docker-compose.tmp" "$plugin_dir/docker-compose"
echo "compose-v2: installed $(docker compose version) in $(($(date +%s) - start)) s"
