#!/usr/bin/env bash
# What observability costs the gateway: `/v1/bench/slow` with trace export
# off, on at 10% sampling, and on at 100%, everything else equal (metrics,
# the runtime-fit monitors and JSON logs at warn are always on).
#
#   loadtest/overhead.sh [seconds-per-point] [runs]      (default 10 s, 3 runs)
#
# Spans go by OTLP/gRPC to `courtside-loadtest otlp-sink`, a stand-in
# collector that counts and drops them, so only the gateway's side of
# exporting is measured. The gateway is pinned to core 0; wrk and the sink
# to core 1. At 1,000 connections the 200 ms wait bounds throughput at
# about 5,000 req/s, below what one core can serve, so the cost shows as
# CPU time per request rather than as lost throughput; 5,000 connections
# saturate the core, where it shows as throughput. Both are reported.
# Configurations alternate within each run, so drift on this shared machine
# spreads over all of them. Writes JSON lines to
# loadtest/results/<date>/overhead.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-10}
runs=${2:-3}
out=${RESULTS:-loadtest/results/$(date -u +%Y-%m-%d)}
mkdir -p "$out"
ulimit -n 20000
command -v wrk >/dev/null || { echo "wrk is required (Debian package wrk)"; exit 1; }
cargo build --release --locked -p gateway -p loadtest 2>&1 | tail -1
bin=target/release
ticks=$(getconf CLK_TCK)

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_http() { for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1"; return 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

taskset -c 1 $bin/courtside-loadtest otlp-sink --addr 127.0.0.1:14317 >"$out/.otlp-sink.json" & sink=$!
pids+=("$sink")

measure() { # config run connections
  local config=$1 run=$2 conns=$3 env=()
  case $config in
    off) env=(OTEL_EXPORTER_OTLP_ENDPOINT=) ;;
    sampled-10) env=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1) ;;
    sampled-100) env=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14317 OTEL_TRACES_SAMPLER=always_on) ;;
  esac
  env "${env[@]}" COURTSIDE_GATEWAY_ADDR=127.0.0.1:18500 COURTSIDE_WORKER_URL=http://127.0.0.1:1 \
    COURTSIDE_MAX_CONNECTIONS=40000 COURTSIDE_LOG_FORMAT=json RUST_LOG=warn \
    taskset -c 0 $bin/courtside-gateway & local gw=$!
  pids+=("$gw")
  wait_http http://127.0.0.1:18500/healthz
  taskset -c 1 wrk -t1 -c"$conns" -d2s http://127.0.0.1:18500/v1/bench/slow >/dev/null 2>&1 || true
  local before report after
  before=$(cpu_ticks $gw)
  report=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" --timeout 10s --latency http://127.0.0.1:18500/v1/bench/slow 2>&1 || true)
  after=$(cpu_ticks $gw)
  kill $gw; wait $gw 2>/dev/null || true
  echo "$report" | awk -v config="$config" -v run="$run" -v conns="$conns" -v cpu=$(( after - before )) -v hz="$ticks" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps = $2 } /requests in/ { requests = $1 } /^ +99%/ { p99 = ms($2) } /^ +50%/ { p50 = ms($2) }
    /Socket errors/ { errors = $4 + $6 + $8 + $10 } /Non-2xx/ { errors += $5 }
    END {
      cpu_ms = cpu * 1000 / hz
      printf "{\"scenario\":\"overhead\",\"system\":\"courtside-trace-%s\",\"x\":%d,\"run\":%d,\"rps\":%.0f,\"p50_ms\":%.2f,\"p99_ms\":%.2f,\"errors\":%d,\"cpu_ms\":%.0f,\"cpu_us_per_request\":%.1f}\n",
        config, conns, run, rps, p50, p99, errors + 0, cpu_ms, (requests > 0 ? cpu_ms * 1000 / requests : 0) }'
}

echo "machine: $(nproc) cores, $(uname -sr); ${secs}s per point, $runs runs"
for run in $(seq "$runs"); do
  for conns in 1000 5000; do
    for config in off sampled-10 sampled-100; do
      measure $config "$run" "$conns" | tee -a "$out/overhead.jsonl"
    done
  done
done
kill -TERM $sink; wait $sink 2>/dev/null || true
echo "spans received by the sink: $(cat "$out/.otlp-sink.json")"
rm -f "$out/.otlp-sink.json"
