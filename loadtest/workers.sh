#!/usr/bin/env bash
# Worker replicas: win-probability throughput through one gateway in front
# of one, then two analytics worker processes on the same machine. The
# gateway is given both addresses and balances calls over them; each
# worker's own call count shows how evenly. Nothing is pinned: the two
# cores are shared by the gateway, the workers and the client, so the
# figure says how the machine's CPU divides, not how two machines would
# scale.
#
# RUN, RESULTS, PROFILE, QUICK, BUILD: see lib.sh. Loopback only. Writes
# $RESULTS/workers.jsonl: scenario "workers", x = worker processes, the
# client's latency figures, and each worker's share of the calls.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out=workers.jsonl
if [ "$QUICK" = 1 ]; then requests=40; concurrency=4; else requests=3000; concurrency=16; fi
build gateway analytics loadtest
gateway_port=18095
base=http://127.0.0.1:$gateway_port
pids=()
tmp=$(mktemp -d)
trap 'stop_tree "${pids[@]}"; rm -rf "$tmp"' EXIT

fields() { # the latency client's report → JSON fields
  awk '{
    for (i = 1; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == "n") printf "\"requests\":%d,", kv[2]
      else if (kv[1] == "errors") printf "\"errors\":%d,", kv[2]
      else if (kv[1] == "rps") printf "\"rps\":%s,", kv[2]
      else if (kv[1] ~ /^(p50|p99)$/) { v = kv[2]; sub(/us$/, "", v); printf "\"%s_ms\":%.3f,", kv[1], v / 1000 }
    }
  }' <<<"$1"
}

# Win-probability calls a worker has answered, from its own metrics.
answered() { # metrics port
  curl -sf "http://127.0.0.1:$1/metrics" |
    awk '/^rpc_server_call_duration_seconds_count/ && /WinProbability/ { s += $NF } END { print s + 0 }'
}

for workers in 1 2; do
  pids=()
  urls=""
  for i in $(seq "$workers"); do
    port=$((15100 + i)) metrics=$((15200 + i))
    port_free $port && port_free $metrics || exit 1
    COURTSIDE_ANALYTICS_ADDR=127.0.0.1:$port COURTSIDE_ANALYTICS_METRICS_ADDR=127.0.0.1:$metrics \
      COURTSIDE_ANALYTICS_CONSUME=false COURTSIDE_LOG_FORMAT=json RUST_LOG=warn \
      "$BIN/courtside-analytics" >"$tmp/worker-$i.log" 2>&1 &
    pids+=($!)
    urls="${urls:+$urls,}http://127.0.0.1:$port"
  done
  port_free $gateway_port || exit 1
  COURTSIDE_GATEWAY_ADDR=127.0.0.1:$gateway_port COURTSIDE_WORKER_URL="$urls" COURTSIDE_RATE_LIMIT=off \
    COURTSIDE_PUBLISH_TOKENS=workers-scenario-token COURTSIDE_LOG_FORMAT=json RUST_LOG=warn \
    "$BIN/courtside-gateway" >"$tmp/gateway.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do
    [ "$(curl -s "$base/readyz" | grep -c '"ready"')" = 1 ] && break
    sleep 0.1
  done
  curl -sf -X POST "$base/v1/events" -H 'authorization: Bearer workers-scenario-token' \
    -H 'content-type: application/json' \
    -d '{"match_id":"wp","seq":1,"kind":"kickoff","home":{"id":1,"name":"Home"},"away":{"id":2,"name":"Away"}}' >/dev/null
  report=$("$LT" latency --url "$base/v1/matches/wp/win-probability" --concurrency $concurrency \
    --requests $requests --warmup $((concurrency * 4)))
  shares=""
  for i in $(seq "$workers"); do
    shares="${shares:+$shares,}$(answered $((15200 + i)))"
  done
  emit $out "{$(common_fields workers courtside),\"x\":$workers,$(fields "$report")\"answered_by_each\":[$shares],\"latency\":$(json_str "$report")}"
  stop_tree "${pids[@]}"
done
