#!/usr/bin/env bash
# The start-up comparison: exec → first 200 from /healthz, each run a fresh
# process, for courtside's gateway, the all-in-one binary, the bare axum
# ceiling, the Node.js peer and the FastAPI peer on uvicorn. The argument
# credits V8 with fast start-up; this is where that claim is measured.
#
#   loadtest/startup.sh [runs]                  (default 20)
#   SYSTEMS="node fastapi" loadtest/startup.sh  (a subset)
#
# Every system is timed by the same prober (`courtside-loadtest startup`: a
# fresh TCP connection every 0.5 ms, the process killed once it answers), so
# the figures differ only by the server. The server is pinned to core 0 and
# the prober to core 1, as in the other comparisons; both wrappers (taskset,
# env) are exec'd for every system alike. Ports are checked free first: a
# stale listener would answer the first probe and fake a start-up of ~0 ms.
# Loopback only; each run gives up after 10 s. Writes JSON lines to
# loadtest/results/<date>/startup.jsonl and prints a table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-20}
out=loadtest/results/$(date -u +%Y-%m-%d)
mkdir -p "$out"

cargo build --release --locked -p gateway -p loadtest -p courtside 2>&1 | tail -1
# The venv http.sh makes, brought up to date the same way fanout.sh does.
venv=loadtest/baselines/python/.server-venv
[ -x $venv/bin/python ] || python3 -m venv $venv
$venv/bin/pip install -q -r loadtest/baselines/python/server-requirements.txt
bin=target/release
lt=$bin/courtside-loadtest
pin_server="taskset -c 0"
pin_prober="taskset -c 1"
[ "$(nproc)" -ge 2 ] || { pin_server=""; pin_prober=""; }
systems=${SYSTEMS:-"courtside-gateway courtside-all-in-one bare-axum node fastapi"}
want() { [[ " $systems " == *" $1 "* ]]; }

# The first port from $1 upwards that nothing listens on.
free_port() {
  local port=$1
  while [ -n "$(ss -Htln "sport = :$port")" ]; do port=$((port + 1)); done
  echo "$port"
}

echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ); $runs runs per system"
rows=()
# One system: its runs through the prober, one JSON line, one table row.
measure() { # system port command...
  local system=$1 port=$2; shift 2
  local probe="http://127.0.0.1:$port/healthz" report
  if ! report=$($pin_prober $lt startup --runs "$runs" --probe "$probe" -- $pin_server env "$@" 2>&1); then
    echo "$system: $report" >&2
    printf '{"system":"%s","runs":%d,"error":"no healthy answer"}\n' "$system" "$runs" | tee -a "$out/startup.jsonl"
    rows+=("$(printf '%-22s %5s %9s %9s %9s' "$system" "-" "failed" "-" "-")")
    return 0
  fi
  # The prober prints "startup NAME: runs=N min=Xms p50=Yms max=Zms".
  local n min p50 max
  n=$(sed -E 's/.* runs=([0-9]+).*/\1/' <<<"$report")
  min=$(sed -E 's/.* min=([0-9.]+)ms.*/\1/' <<<"$report")
  p50=$(sed -E 's/.* p50=([0-9.]+)ms.*/\1/' <<<"$report")
  max=$(sed -E 's/.* max=([0-9.]+)ms.*/\1/' <<<"$report")
  printf '{"system":"%s","runs":%d,"min_ms":%s,"p50_ms":%s,"max_ms":%s,"probe":"%s"}\n' \
    "$system" "$n" "$min" "$p50" "$max" "$probe" | tee -a "$out/startup.jsonl"
  rows+=("$(printf '%-22s %5d %9s %9s %9s' "$system" "$n" "$min" "$p50" "$max")")
}

export COURTSIDE_LOG_FORMAT=json RUST_LOG=warn
if want courtside-gateway; then
  port=$(free_port 18500)
  measure courtside-gateway "$port" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port $bin/courtside-gateway
fi
if want courtside-all-in-one; then
  port=$(free_port 18510); grpc=$(free_port 15510)
  measure courtside-all-in-one "$port" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_ANALYTICS_ADDR=127.0.0.1:$grpc \
    $bin/courtside
fi
if want bare-axum; then
  port=$(free_port 18520)
  measure bare-axum "$port" $lt bare-axum --addr 127.0.0.1:$port
fi
if want node; then
  port=$(free_port 18530)
  measure node "$port" node loadtest/baselines/node/server.js "$port"
fi
if want fastapi; then
  port=$(free_port 18540)
  measure fastapi "$port" $venv/bin/python loadtest/baselines/python/server.py "$port"
fi

echo
printf '%-22s %5s %9s %9s %9s\n' system runs "min ms" "p50 ms" "max ms"
printf '%s\n' "${rows[@]}"
