#!/usr/bin/env bash
# The bulk ingest benchmark: one NDJSON body of a given size (default 1 GiB,
# QUICK=1 about 20 MB) streamed into `POST /v1/events/bulk` of a gateway
# backed by Redis; reports events per second and the gateway's peak RSS
# (VmHWM), and the CPU that Redis and the gateway spent per event.
#
#   loadtest/ingest.sh [bytes] [matches]
#
# The body is generated on the fly and streamed with chunked encoding, so
# neither the generator nor curl holds it. Courtside only (SYSTEMS without a
# courtside entry skips it): the peers have no bulk endpoint. RUN, RESULTS,
# PROFILE, QUICK, BUILD: see lib.sh. Loopback only. One JSON line per run
# goes to $RESULTS/ingest.jsonl; errors counts rejected events, plus one if
# the request itself failed.
#
# REDIS_CLUSTER_URL (seed nodes, comma-separated, as `.ci/redis-cluster
# start DIR` prints them) ingests into that Redis Cluster instead, reported
# as the system courtside-cluster; REDIS_WAIT_REPLICAS sets
# COURTSIDE_REDIS_WAIT_REPLICAS for it (default 0). COURTSIDE_STORE_WRITE_FORMAT
# (see README.md, "Upgrading") is passed on, and the system's name then ends
# in -format<N>.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$QUICK" = 1 ]; then bytes=${1:-20000000}; else bytes=${1:-1073741824}; fi
matches=${2:-1000}
out=ingest.jsonl
want courtside courtside || { echo "ingest: courtside not in SYSTEMS, nothing to do"; exit 0; }
build gateway loadtest

failed_line() { # message
  echo "ingest: $1 (server's output: $LOGS/ingest-server.log)" >&2
  emit $out "{$(common_fields ingest "$system"),\"errors\":1,\"failed\":true,\"error\":$(json_str "$1")}"
  exit 1
}

system=courtside
if [ -n "${REDIS_CLUSTER_URL:-}" ]; then
  system=courtside-cluster
  redis_env=(COURTSIDE_REDIS_CLUSTER=true "COURTSIDE_REDIS_URL=$REDIS_CLUSTER_URL"
    "COURTSIDE_REDIS_WAIT_REPLICAS=${REDIS_WAIT_REPLICAS:-0}")
  label=courtside-cluster-bulk-ingest
  redis_ports=$(tr ',' '\n' <<<"$REDIS_CLUSTER_URL" | sed -E 's#.*:([0-9]+)/?$#\1#')
else
  [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ] || failed_line "no Redis at 127.0.0.1:6379"
  redis_env=(COURTSIDE_REDIS_URL=redis://127.0.0.1:6379)
  label=courtside-bulk-ingest
  redis_ports=6379
fi
# A format other than the default is its own system in the report, so the
# formats can be compared in one results folder.
if [ -n "${COURTSIDE_STORE_WRITE_FORMAT:-}" ]; then
  system="$system-format$COURTSIDE_STORE_WRITE_FORMAT"
  label="$label-format$COURTSIDE_STORE_WRITE_FORMAT"
fi
port_free 18081 || failed_line "port 18081 in use"
token=ingest-benchmark-token-0123456789
prefix="ingest-$(date +%s%N):"
env "${redis_env[@]}" COURTSIDE_GATEWAY_ADDR=127.0.0.1:18081 COURTSIDE_REDIS_PREFIX="$prefix" \
COURTSIDE_PUBLISH_TOKENS=$token COURTSIDE_LOG_FORMAT=json RUST_LOG=warn \
  "$BIN/courtside-gateway" >>"$LOGS/ingest-server.log" 2>&1 & server_pid=$!
cleanup() {
  stop_tree "$server_pid"
  # Every node: on a cluster each master holds some of the keys (replicas
  # refuse the DEL, which is fine).
  for p in $redis_ports; do
    redis-cli -p "$p" --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli -p "$p" del >/dev/null 2>&1 || true
  done
}
trap cleanup EXIT
wait_http http://127.0.0.1:18081/healthz 200 || failed_line "did not start"
rss_start=$(rss_kib "$server_pid")
redis_cpu() { # seconds of CPU used so far by every Redis node in use
  for p in $redis_ports; do redis-cli -p "$p" info cpu; done |
    awk -F: '/^used_cpu_(user|sys):/ { s += $2 } END { printf "%.3f", s }'
}

echo "ingest: $bytes bytes over $matches matches; run $RUN; $PROFILE build; results in $RESULTS"
start=$(date +%s.%N)
redis_cpu_start=$(redis_cpu); gateway_ticks_start=$(cpu_ticks "$server_pid")
# Bounded: an hour is some 30 times what a gibibyte takes here.
report=$("$LT" ndjson --bytes "$bytes" --matches "$matches" --prefix "b$(date +%s%N)" |
  curl -sS --max-time 3600 -X POST -T - -H "Authorization: Bearer $token" -H 'content-type: application/x-ndjson' \
    -H 'Transfer-Encoding: chunked' http://127.0.0.1:18081/v1/events/bulk) || failed_line "the bulk request failed"
end=$(date +%s.%N)
peak=$(hwm_kib "$server_pid")
redis_cpu_end=$(redis_cpu); gateway_ticks_end=$(cpu_ticks "$server_pid")
accepted=$(sed -nE 's/.*"accepted":([0-9]+).*/\1/p' <<<"$report")
rejected=$(sed -nE 's/.*"rejected_count":([0-9]+).*/\1/p' <<<"$report")
[ -n "$accepted" ] && [ -n "$rejected" ] || failed_line "unexpected answer: ${report:0:300}"
line=$(awk -v s="$start" -v e="$end" -v a="$accepted" -v r0="$redis_cpu_start" -v r1="$redis_cpu_end" \
  -v g0="$gateway_ticks_start" -v g1="$gateway_ticks_end" -v hz="$(getconf CLK_TCK)" 'BEGIN {
  n = a > 0 ? a : 1
  printf "\"seconds\":%.3f,\"events_per_second\":%.0f,\"redis_cpu_us_per_event\":%.2f,\"gateway_cpu_us_per_event\":%.2f",
    e - s, a / (e - s), (r1 - r0) / n * 1e6, (g1 - g0) / hz / n * 1e6 }')
emit $out "{$(common_fields ingest "$system"),$line,\"rss_peak_kib\":$peak,\"errors\":$rejected,\"label\":\"$label\",\"bytes\":$bytes,\"matches\":$matches,\"accepted\":$accepted,\"rejected\":$rejected,\"rss_start_kib\":$rss_start}"
