#!/usr/bin/env bash
# Runs the performance scenarios of docs/PERFORMANCE.md on this machine and
# writes one chatbench JSON per run, then the plots.
# Needs redis-server. Takes about ten minutes; run it on a quiet machine.
#
# Usage: scripts/bench.sh [-commit] [scenario...]
#   scenarios: 1node 3nodes idle smallrooms oneroom manyrooms manyrooms-3nodes manyrooms-idle; default: all
#   (manyrooms*: issue 14's connections in many rooms each, one stream per connection;
#   smallrooms, oneroom: issue 17's, with each WebSocket client and framing)
#   BENCH_ONLY=regex runs only the runs whose label matches (to re-run the
#   ones a busy machine disturbed), e.g. BENCH_ONLY='grpc-100k$' scripts/bench.sh manyrooms
#
# By default the results go to bench-out/ (ignored by git; BENCH_OUT moves
# it), so a trial run never overwrites the committed figures. -commit writes
# them where docs/PERFORMANCE.md reads them: docs/bench/*.json and the plots
# in docs/.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=""
if [ "${1:-}" = "-commit" ]; then commit=1; shift; fi
if [ -n "$commit" ]; then
  out=docs/bench plots=docs
else
  out=${BENCH_OUT:-bench-out} plots=${BENCH_OUT:-bench-out}
fi
mkdir -p "$out" "$plots"
echo "results in $out/ (plots in $plots/)${commit:+, replacing the committed ones}" >&2
bin=$(mktemp -d)
trap 'pkill -P $$ || true; rm -rf "$bin"' EXIT
go build -o "$bin/node" ./cmd/node
go build -o "$bin/chatbench" ./cmd/chatbench
ulimit -n 65536 2>/dev/null || true

nodes=()     # pids
wsaddrs=""
grpcaddrs=""
pprofaddrs=""  # set by start_nodes when with_pprof=1
with_pprof=""

start_nodes() { # n [redis]
  stop_nodes
  local n=$1 redis=${2:-}
  wsaddrs="" grpcaddrs="" pprofaddrs=""
  for i in $(seq 1 "$n"); do
    local hp=$((18080 + i)) gp=$((15050 + i)) pp=$((16060 + i))
    args=(-grpc-addr 127.0.0.1:$gp -http-addr 127.0.0.1:$hp -send-rate 100000 -conn-rate-per-ip 0 -log-level warn)
    [ -n "$redis" ] && args+=(-redis-url "redis://$redis/0")
    if [ -n "$with_pprof" ]; then
      args+=(-pprof-addr 127.0.0.1:$pp)
      pprofaddrs+="${pprofaddrs:+,}127.0.0.1:$pp"
    fi
    "$bin/node" "${args[@]}" >"$bin/node$i.log" 2>&1 &
    nodes+=($!)
    wsaddrs+="${wsaddrs:+,}127.0.0.1:$hp"
    grpcaddrs+="${grpcaddrs:+,}127.0.0.1:$gp"
  done
  for i in $(seq 1 "$n"); do
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$((18080 + i))/readyz" >/dev/null && break; sleep 0.1; done
  done
}

stop_nodes() {
  for p in "${nodes[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  nodes=()
}

redis_pid=""
start_redis() {
  redis-server --port 16399 --save "" --appendonly no --bind 127.0.0.1 >"$bin/redis.log" 2>&1 &
  redis_pid=$!
  for _ in $(seq 1 50); do redis-cli -p 16399 ping >/dev/null 2>&1 && break; sleep 0.1; done
}

stop_redis() { # and wait, so that the next group can bind its port
  kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  redis_pid=""
}

bench() { # label, chatbench args...
  local label=$1; shift
  if [ -n "${BENCH_ONLY:-}" ] && ! [[ $label =~ $BENCH_ONLY ]]; then return 0; fi
  local pids
  pids=$(IFS=,; echo "${nodes[*]}")
  echo "== $label (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  "$bin/chatbench" -ws-addrs "$wsaddrs" -grpc-addrs "$grpcaddrs" -pids "$pids" ${pprofaddrs:+-pprof-addrs "$pprofaddrs"} -json -q "$@" >"$out/$label.json"
  python3 -c "
import json,sys; r=json.load(open(sys.argv[1]))
if r.get('mode') == 'idle':
    print('   ', r.get('connected'), 'connections,', r.get('subscriptions'), 'subscriptions: rss', r.get('server_bytes_per_conn'), 'B/conn,', r.get('server_bytes_per_subscription'), 'B/sub; heap', r.get('server_heap_bytes_per_conn'), 'B/conn,', r.get('server_heap_bytes_per_subscription'), 'B/sub')
else:
    print('   ', r.get('deliveries_per_s'), 'deliveries/s, p50', r.get('latency_ms',{}).get('p50'), 'p99', r.get('latency_ms',{}).get('p99'), 'ms, lost', r.get('lost'), 'wrong room', r.get('wrong_room'), ', cpu/100k', r.get('server_cpu_s_per_100k'), ', load', r.get('load_avg'))
" "$out/$label.json" >&2 || true
}

want() { [ $# -eq 0 ] || [[ " $* " == *" $1 "* ]]; }
scen=("$@")
has() { [ ${#scen[@]} -eq 0 ] || [[ " ${scen[*]} " == *" $1 "* ]]; }

common=(-duration 15s -warmup 3s)

if has 1node; then
  for r in 10 25 50 100 150; do
    start_nodes 1
    bench "1node-ws-r$r" -transport ws -subs 1000 -pubs 10 -rooms 1 -rate "$r" "${common[@]}"
  done
  for r in 10 25 50; do
    start_nodes 1
    bench "1node-grpc-r$r" -transport grpc -subs 1000 -pubs 10 -rooms 1 -rate "$r" "${common[@]}"
  done
  start_nodes 1
  bench "1node-rooms100" -transport ws -subs 1000 -pubs 100 -rooms 100 -rate 10 "${common[@]}"
  start_nodes 1
  bench "1node-rooms100-grpc" -transport grpc -subs 1000 -pubs 100 -rooms 100 -rate 10 "${common[@]}"
fi

if has 3nodes; then
  start_redis
  for r in 25 50 70 100; do
    redis-cli -p 16399 flushall >/dev/null
    start_nodes 3 127.0.0.1:16399
    bench "3nodes-ws-r$r" -transport ws -subs 1000 -pubs 10 -rooms 1 -rate "$r" "${common[@]}"
  done
  redis-cli -p 16399 flushall >/dev/null
  start_nodes 3 127.0.0.1:16399
  bench "3nodes-rooms100" -transport ws -subs 1000 -pubs 100 -rooms 100 -rate 10 "${common[@]}"
  redis-cli -p 16399 flushall >/dev/null
  start_nodes 3 127.0.0.1:16399
  bench "3nodes-rooms100-grpc" -transport grpc -subs 1000 -pubs 100 -rooms 100 -rate 10 "${common[@]}"
  stop_redis
fi

# Issue 17: 100 rooms of 10 (1000 subscribers, 100 publishers) at 10k and
# 100k deliveries/s, on one node and on three nodes over Redis; one room
# of 1000 at 100k and 1M deliveries/s on one node. Each with the tuned
# client (fast: byte scanning, one JSON message per frame) and the
# standard one (std: coder/websocket reading frame by frame, decoding
# every message) in each framing: json (the default, one message a
# frame), ndjson and proto (packed, chat.v1.ndjson / chat.v1.proto).
clients=(fast:json std:json std:ndjson std:proto)
if has smallrooms; then
  start_redis
  for n in 1 3; do
    for rr in 10:10k 100:100k; do
      for c in "${clients[@]}"; do
        if [ "$n" = 1 ]; then start_nodes 1; else redis-cli -p 16399 flushall >/dev/null; start_nodes 3 127.0.0.1:16399; fi
        bench "smallrooms-${n}node-${c%:*}-${c#*:}-${rr#*:}" -transport ws -ws-client "${c%:*}" -ws-framing "${c#*:}" \
          -subs 1000 -pubs 100 -rooms 100 -rate "${rr%:*}" "${common[@]}"
      done
    done
  done
  stop_redis
fi
if has oneroom; then
  for rr in 10:100k 100:1m; do
    for c in "${clients[@]}"; do
      start_nodes 1
      bench "oneroom-1node-${c%:*}-${c#*:}-${rr#*:}" -transport ws -ws-client "${c%:*}" -ws-framing "${c#*:}" \
        -subs 1000 -pubs 10 -rooms 1 -rate "${rr%:*}" "${common[@]}"
    done
  done
fi

if has idle; then
  start_nodes 1
  bench "idle-ws-10k" -transport ws -idle 10000
  start_nodes 1
  bench "idle-grpc-10k" -transport grpc -idle 10000
fi
# Issue 14: 1000 connections, each in 20 of 100 rooms on its one stream
# (200 connections per room), 100 publishers (one per room); -rate 0.5 and
# 5 msg/s per publisher give 10k and 100k deliveries/s. The k1 runs are the
# same connections and deliveries per connection with one room each (10
# per room, 20x the publish rate).
many=(-subs 1000 -pubs 100 -rooms 100 -rooms-per-conn 20)
if has manyrooms; then
  for tr in ws grpc; do
    for rr in 0.5:10k 5:100k; do
      start_nodes 1
      bench "manyrooms-1node-$tr-${rr#*:}" -transport "$tr" "${many[@]}" -rate "${rr%:*}" "${common[@]}"
    done
  done
  start_nodes 1
  bench "manyrooms-1node-ws-1m" -transport ws "${many[@]}" -rate 50 "${common[@]}"
  for rr in 10:10k 100:100k; do
    start_nodes 1
    bench "manyrooms-1node-ws-k1-${rr#*:}" -transport ws -subs 1000 -pubs 100 -rooms 100 -rate "${rr%:*}" "${common[@]}"
  done
fi

if has manyrooms-3nodes; then
  start_redis
  for tr in ws grpc; do
    for rr in 0.5:10k 5:100k; do
      redis-cli -p 16399 flushall >/dev/null
      start_nodes 3 127.0.0.1:16399
      bench "manyrooms-3nodes-$tr-${rr#*:}" -transport "$tr" "${many[@]}" -rate "${rr%:*}" "${common[@]}"
    done
  done
  stop_redis
fi

# Memory per subscription, node level: N connections in all 100 rooms each
# against 100*N connections in one room each (the same subscriptions), on
# a fresh node; RSS and the live heap after a GC (-pprof-addrs). The 20 s
# settle lets the join's presence events drain (every join is an event to
# the room's other members): measured sooner, gRPC still holds them.
# The -redis run keeps presence and history in Redis, not in the node.
if has manyrooms-idle; then
  with_pprof=1
  idle=(-warmup 20s -duration 5s)
  for tr in ws grpc; do
    start_nodes 1
    bench "manyrooms-idle-$tr-100x100" -transport "$tr" -idle 100 -rooms 100 -rooms-per-conn 100 "${idle[@]}"
    start_nodes 1
    bench "manyrooms-idle-$tr-10000x1" -transport "$tr" -idle 10000 -rooms 100 "${idle[@]}"
    start_nodes 1
    bench "manyrooms-idle-$tr-1000x100" -transport "$tr" -idle 1000 -rooms 100 -rooms-per-conn 100 "${idle[@]}"
  done
  start_redis
  redis-cli -p 16399 flushall >/dev/null
  start_nodes 1 127.0.0.1:16399
  bench "manyrooms-idle-ws-1000x100-redis" -transport ws -idle 1000 -rooms 100 -rooms-per-conn 100 "${idle[@]}"
  stop_nodes
  stop_redis
  with_pprof=""
fi
stop_nodes

# Issue 14's scenarios draw no plot: when only they ran, leave the plots be.
only_many=1
for s in "${scen[@]:-}"; do [[ "$s" == manyrooms* ]] || only_many=""; done
[ ${#scen[@]} -gt 0 ] && [ -n "$only_many" ] && exit 0

go run ./cmd/benchplot -title "one node, 1000 subscribers, 10 publishers" -o "$plots"/latency-throughput-1node.png "$out"/1node-ws-r*.json "$out"/1node-grpc-r*.json || true
go run ./cmd/benchplot -title "three nodes on one Redis, 1000 subscribers" -o "$plots"/latency-throughput-3nodes.png "$out"/3nodes-ws-r*.json || true
for n in 1 3; do
  if ls "$out"/smallrooms-${n}node-*.json >/dev/null 2>&1; then
    go run ./cmd/benchplot -logy -title "100 rooms of 10, ${n} node(s): WebSocket client and framing" -o "$plots"/latency-smallrooms-${n}node.png "$out"/smallrooms-${n}node-*.json || true
  fi
done
if ls "$out"/oneroom-1node-*.json >/dev/null 2>&1; then
  go run ./cmd/benchplot -logy -title "one room of 1000, one node: WebSocket client and framing" -o "$plots"/latency-oneroom-1node.png "$out"/oneroom-1node-*.json || true
fi
