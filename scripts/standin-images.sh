#!/usr/bin/env bash
# Builds local stand-ins for the base images that the Dockerfile and
# deploy/docker-compose.yml name, on a machine that cannot pull from an
# image registry:
#
#   golang:1.26-bookworm                  Debian bookworm + this machine's /usr/local/go
#   gcr.io/distroless/static-debian12:nonroot
#                                         scratch + /etc/passwd (nonroot, uid 65532) + CA certs
#   redis:7-bookworm                      Debian's redis-server, laid out like the official image
#   haproxy:2.6                           Debian's haproxy 2.6, laid out like the official image
#   prom/prometheus:v2.53.0               Debian's prometheus (monitoring profile; CHAT_STANDIN_PROMETHEUS=0 skips it)
#
# Grafana has no Debian package: no stand-in; the compose test leaves it out.
#
# The Debian root file system comes from `debootstrap --variant=minbase
# bookworm` on the mirror this machine's apt uses; packages are installed
# into copies of it by chroot, and each tree becomes an image through
# `docker import`. Nothing runs in a container, so no container network is
# needed.
#
# Cached: the rootfs tarball stays in $CHAT_STANDIN_CACHE
# (/var/cache/chat-standins), and an image whose label chat.standin.hash
# matches this script's content (and, for golang, the Go version) is not
# built again. Needs root (debootstrap, chroot) and a Docker engine.
#
# Usage: scripts/standin-images.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

cache=${CHAT_STANDIN_CACHE:-/var/cache/chat-standins}
force=0
[ "${1:-}" = --force ] && force=1
if [ "$(id -u)" != 0 ]; then echo "standin-images: needs root (debootstrap, chroot)" >&2; exit 1; fi
mkdir -p "$cache"

hash=$(sha256sum "$0" | cut -c1-16)
nice=(nice -n 10)

log() { echo "standin-images: $*"; }

# Work trees are removed whatever happens.
trap 'rm -rf "$cache"/tree.* "$cache"/rootfs.* "$cache"/*.tar.tmp' EXIT

# current IMAGE KEY: true when IMAGE exists with label chat.standin.hash =
# KEY, or exists without that label (a real image, pulled: kept).
current() {
	[ "$force" = 0 ] || return 1
	local got
	got=$(docker image inspect -f '{{index .Config.Labels "chat.standin.hash"}}' "$1" 2>/dev/null) || return 1
	[ "$got" = "$2" ] || [ "$got" = "<no value>" ] || [ -z "$got" ]
}

# The Debian mirror apt uses here (bookworm, not the security suite).
mirror() {
	local m
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk '$1=="deb" && $0 ~ / bookworm( |$)/ && $0 !~ /security/ {for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}')
	if [ -z "$m" ]; then
		m=$(awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/security/ {if (match($0, /URIs: *[^ \n]+/)) {s=substr($0, RSTART, RLENGTH); sub(/URIs: */, "", s); print s; exit}}' \
			/etc/apt/sources.list.d/*.sources 2>/dev/null || true)
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

need_debootstrap() {
	command -v debootstrap >/dev/null && return
	log "installing debootstrap"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# The minbase rootfs with ca-certificates, as a tarball under $cache.
# Named for what debootstrap is asked for, not for this script's hash:
# editing the script does not fetch Debian again.
rootfs_tar="$cache/bookworm-minbase-ca-v1.tar"
rootfs() {
	[ -s "$rootfs_tar" ] && return
	need_debootstrap
	local dir m
	m=$(mirror)
	dir=$(mktemp -d "$cache/rootfs.XXXXXX")
	log "debootstrap bookworm from $m (a few minutes, once)"
	"${nice[@]}" debootstrap --variant=minbase --include=ca-certificates bookworm "$dir" "$m" >"$cache/debootstrap.log" 2>&1 ||
		{ tail -20 "$cache/debootstrap.log"; rm -rf "$dir"; exit 1; }
	chroot "$dir" apt-get clean
	rm -rf "$dir"/var/lib/apt/lists/*
	tar -C "$dir" -cf "$rootfs_tar.tmp" .
	mv "$rootfs_tar.tmp" "$rootfs_tar"
	rm -rf "$dir"
}

# with_tree CMD...: extracts the rootfs into a fresh directory, exported
# as $tree, runs CMD, and removes the directory.
with_tree() {
	tree=$(mktemp -d "$cache/tree.XXXXXX")
	tar -C "$tree" -xf "$rootfs_tar"
	"$@"
	rm -rf "$tree"
}

# apt_install PKG...: installs Debian packages into $tree by chroot.
apt_install() {
	cp /etc/resolv.conf "$tree/etc/resolv.conf"
	# No service starts during the install.
	printf '#!/bin/sh\nexit 101\n' >"$tree/usr/sbin/policy-rc.d"
	chmod +x "$tree/usr/sbin/policy-rc.d"
	"${nice[@]}" chroot "$tree" sh -c 'apt-get -o APT::Sandbox::User=root update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o APT::Sandbox::User=root install -y -qq --no-install-recommends "$@" && apt-get clean' sh "$@" \
		>"$cache/apt.log" 2>&1 || { tail -20 "$cache/apt.log"; exit 1; }
	rm -rf "$tree/usr/sbin/policy-rc.d" "$tree"/var/lib/apt/lists/*
	: >"$tree/etc/resolv.conf"
}

# import IMAGE KEY [--change ...]: imports $tree as IMAGE, labelled.
import() {
	local image=$1 key=$2
	shift 2
	tar -C "$tree" -c . | docker import --change "LABEL chat.standin.hash=$key" "$@" - "$image" >/dev/null
	log "built $image"
}

build_golang() {
	local image=golang:1.26-bookworm goversion key
	goversion=$(/usr/local/go/bin/go env GOVERSION)
	case $goversion in go1.26*) ;; *) echo "standin-images: /usr/local/go is $goversion; golang:1.26-bookworm needs go1.26" >&2; exit 1 ;; esac
	key="$hash-$goversion"
	current "$image" "$key" && { log "$image is current"; return; }
	golang_tree() {
		cp -a /usr/local/go "$tree/usr/local/go"
		mkdir -p "$tree/go/bin" "$tree/go/src"
		chmod -R 777 "$tree/go"
		import "$image" "$key" \
			--change 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'ENV GOPATH=/go' --change 'ENV GOTOOLCHAIN=local' \
			--change 'WORKDIR /go' --change 'CMD ["bash"]'
	}
	with_tree golang_tree
}

build_distroless() {
	local image=gcr.io/distroless/static-debian12:nonroot
	current "$image" "$hash" && { log "$image is current"; return; }
	local base
	base=$(mktemp -d "$cache/tree.XXXXXX")
	tar -C "$base" -xf "$rootfs_tar"
	tree=$(mktemp -d "$cache/tree.XXXXXX")
	mkdir -p "$tree/etc/ssl/certs" "$tree/usr/share" "$tree/home/nonroot" "$tree/tmp" "$tree/root"
	cp "$base/etc/ssl/certs/ca-certificates.crt" "$tree/etc/ssl/certs/"
	[ ! -d "$base/usr/share/zoneinfo" ] || cp -a "$base/usr/share/zoneinfo" "$tree/usr/share/"
	rm -rf "$base"
	cat >"$tree/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/sbin/nologin
		nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
		nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
	EOF
	cat >"$tree/etc/group" <<-'EOF'
		root:x:0:
		nobody:x:65534:
		tty:x:5:
		staff:x:50:
		nonroot:x:65532:
	EOF
	chmod 1777 "$tree/tmp"
	chmod 700 "$tree/root"
	chown 65532:65532 "$tree/home/nonroot"
	import "$image" "$hash" --change 'USER 65532' --change 'WORKDIR /home/nonroot' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt'
	rm -rf "$tree"
}

build_redis() {
	local image=redis:7-bookworm
	current "$image" "$hash" && { log "$image is current"; return; }
	redis_tree() {
		apt_install redis-server
		# As the official image: data in /data, owned by redis, which a
		# fresh named volume inherits; the server runs in the foreground.
		mkdir -p "$tree/data"
		chroot "$tree" chown redis:redis /data
		# The official image builds Redis with protected mode off (the
		# container network is the boundary); Debian's refuses clients
		# from other hosts when no password is set. Options given later
		# on the command line still win.
		cat >"$tree/usr/local/bin/redis-server" <<-'EOF'
			#!/bin/sh
			if [ -n "$1" ] && [ "${1#-}" = "$1" ]; then
				conf=$1
				shift
				exec /usr/bin/redis-server "$conf" --protected-mode no "$@"
			fi
			exec /usr/bin/redis-server --protected-mode no "$@"
		EOF
		chmod +x "$tree/usr/local/bin/redis-server"
		import "$image" "$hash" --change 'USER redis' --change 'WORKDIR /data' --change 'VOLUME /data' \
			--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
			--change 'EXPOSE 6379' --change 'CMD ["redis-server"]'
	}
	with_tree redis_tree
}

build_haproxy() {
	local image=haproxy:2.6
	current "$image" "$hash" && { log "$image is current"; return; }
	haproxy_tree() {
		apt_install haproxy
		mkdir -p "$tree/usr/local/etc/haproxy" "$tree/var/lib/haproxy"
		cp "$tree/etc/haproxy/haproxy.cfg" "$tree/usr/local/etc/haproxy/haproxy.cfg"
		chroot "$tree" chown haproxy:haproxy /var/lib/haproxy
		# The official image's entrypoint: master-worker mode (-W), in
		# the foreground (-db), so that SIGUSR1 soft-stops and SIGUSR2
		# reloads.
		cat >"$tree/usr/local/bin/docker-entrypoint.sh" <<-'EOF'
			#!/bin/sh
			set -e
			if [ "${1#-}" != "$1" ]; then set -- haproxy "$@"; fi
			if [ "$1" = haproxy ]; then shift; set -- haproxy -W -db "$@"; fi
			exec "$@"
		EOF
		chmod +x "$tree/usr/local/bin/docker-entrypoint.sh"
		import "$image" "$hash" --change 'USER haproxy' --change 'WORKDIR /var/lib/haproxy' \
			--change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
			--change 'CMD ["haproxy", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'
		# `docker import --change` takes no STOPSIGNAL on older engines:
		# one more layer-less step adds it (no context, nothing pulled).
		printf 'FROM %s\nSTOPSIGNAL SIGUSR1\n' "$image" | DOCKER_BUILDKIT=0 docker build -q -t "$image" - >"$cache/build.log" 2>&1 ||
			{ cat "$cache/build.log"; exit 1; }
	}
	with_tree haproxy_tree
}

build_prometheus() {
	local image=prom/prometheus:v2.53.0
	current "$image" "$hash" && { log "$image is current"; return; }
	prometheus_tree() {
		apt_install prometheus
		mkdir -p "$tree/prometheus" "$tree/etc/prometheus"
		chroot "$tree" chown prometheus:prometheus /prometheus
		# /bin/prometheus, as the official image has it, is Debian's
		# /usr/bin/prometheus (bookworm's /bin is /usr/bin).
		[ -x "$tree/bin/prometheus" ] || { echo "standin-images: no /bin/prometheus" >&2; exit 1; }
		import "$image" "$hash" --change 'USER prometheus' --change 'WORKDIR /prometheus' \
			--change 'EXPOSE 9090' --change 'VOLUME /prometheus' \
			--change 'ENTRYPOINT ["/bin/prometheus"]' \
			--change 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", "--web.console.libraries=/usr/share/prometheus/console_libraries", "--web.console.templates=/usr/share/prometheus/consoles"]'
	}
	with_tree prometheus_tree
}

start=$(date +%s)
rootfs
build_golang
build_distroless
build_redis
build_haproxy
[ "${CHAT_STANDIN_PROMETHEUS:-1}" = 0 ] || build_prometheus
# Stand-ins replaced by a newer build of this script.
docker image prune -f --filter label=chat.standin.hash >/dev/null
log "done in $(($(date +%s) - start)) s"
