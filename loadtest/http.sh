#!/usr/bin/env bash
# The HTTP comparison from the argument, side by side in one run:
# courtside (gateway + worker, release), the Node.js peer, the FastAPI peer on
# uvicorn, and a bare axum server as the ceiling for `slow`.
#
#   loadtest/http.sh [seconds-per-point]          (default 10)
#   SYSTEMS="node fastapi" loadtest/http.sh       (a subset)
#
# slow: the server pinned to core 0, wrk to core 1; connections 100, 1000,
#       5000. compute (n = 20,000,000): both cores for the server, 1, 2 and 8
#       connections. Warm-up before each series. wrk is closed-loop: latency
#       percentiles under a saturating load, which is what the argument's
#       comparison reports. Loopback only; every run is bounded in time.
# Writes JSON lines to loadtest/results/<date>/http.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
secs=${1:-10}
out=loadtest/results/$(date -u +%Y-%m-%d)
mkdir -p "$out"
ulimit -n 20000
command -v wrk >/dev/null || { echo "wrk is required (Debian package wrk)"; exit 1; }
cargo build --release --locked -p gateway -p analytics -p loadtest 2>&1 | tail -1
(cd loadtest/baselines/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
venv=loadtest/baselines/python/.server-venv
[ -x $venv/bin/python ] || { python3 -m venv $venv; $venv/bin/pip install -q -r loadtest/baselines/python/server-requirements.txt; }

pid=""
# Children first: a process pool's workers inherit the listening socket.
stop() {
  for p in $pid ${worker:-}; do pkill -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pid=""; worker=""
}
systems=${SYSTEMS:-"courtside bare-axum node fastapi"}
want() { [[ " $systems " == *" $1 "* ]]; }
trap stop EXIT
wait_http() { for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1"; return 1; }

# wrk's report → one JSON line.
run_wrk() { # system scenario connections url [pin]
  local system=$1 scenario=$2 conns=$3 url=$4 pin=${5:-}
  local threads=1; [ "$conns" -ge 1000 ] && threads=1
  local report
  report=$($pin wrk -t$threads -c"$conns" -d"${secs}s" --timeout 10s --latency "$url" 2>&1 || true)
  echo "$report" | awk -v sys="$system" -v scenario="$scenario" -v conns="$conns" -v rss="$(awk '/VmRSS/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)" '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) } /^ +90%/ { p90 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /Latency/ && !lat { max = ms($4); lat = 1 }
    /Socket errors/ { errors = $4 + $6 + $8 + $10; gsub(",", "", errors) }
    /Non-2xx/ { non2xx = $5 }
    /requests in/ { requests = $1 }
    END { printf "{\"system\":\"%s\",\"scenario\":\"%s\",\"connections\":%d,\"requests\":%d,\"rps\":%.0f,\"p50_ms\":%.2f,\"p90_ms\":%.2f,\"p99_ms\":%.2f,\"max_ms\":%.2f,\"socket_errors\":%d,\"non_2xx\":%d,\"server_rss_kib\":%d}\n", sys, scenario, conns, requests, rps, p50, p90, p99, max, errors+0, non2xx+0, rss }'
}

slow_series() { # system base path
  local system=$1 base=$2 path=$3
  wrk -t1 -c100 -d2s "$base$path" >/dev/null 2>&1 || true   # warm-up
  for c in 100 1000 5000; do run_wrk "$system" slow "$c" "$base$path" "taskset -c 1" | tee -a "$out/http.jsonl"; done
}

compute_series() { # system base path
  local system=$1 base=$2 path=$3
  wrk -t1 -c2 -d2s "$base$path" >/dev/null 2>&1 || true
  for c in 1 2 8; do run_wrk "$system" compute "$c" "$base$path" | tee -a "$out/http.jsonl"; done
}

echo "machine: $(nproc) cores, $(uname -sr); ${secs}s per point"

# Each system twice: pinned to core 0 for slow (wrk on core 1), then on both
# cores for compute, so every system has the same core budget per scenario.
start_courtside() { # pin
  COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15100 RUST_LOG=warn COURTSIDE_LOG_FORMAT=json $1 target/release/courtside-analytics & worker=$!
  COURTSIDE_GATEWAY_ADDR=127.0.0.1:18100 COURTSIDE_WORKER_URL=http://127.0.0.1:15100 RUST_LOG=warn COURTSIDE_LOG_FORMAT=json \
    COURTSIDE_MAX_CONNECTIONS=40000 $1 target/release/courtside-gateway & pid=$!
  wait_http http://127.0.0.1:18100/healthz
}
if want courtside; then
start_courtside "taskset -c 0"; slow_series courtside http://127.0.0.1:18100 /v1/bench/slow; stop
start_courtside ""; compute_series courtside http://127.0.0.1:18100 "/v1/bench/compute?n=20000000"; stop
fi

if want bare-axum; then
taskset -c 0 target/release/courtside-loadtest bare-axum --addr 127.0.0.1:18400 & pid=$!
wait_http http://127.0.0.1:18400/healthz
slow_series bare-axum http://127.0.0.1:18400 /slow; stop
fi

if want node; then
taskset -c 0 node loadtest/baselines/node/server.js 18300 >/dev/null & pid=$!
wait_http http://127.0.0.1:18300/healthz; slow_series node http://127.0.0.1:18300 /slow; stop
node loadtest/baselines/node/server.js 18300 >/dev/null & pid=$!
wait_http http://127.0.0.1:18300/healthz; compute_series node http://127.0.0.1:18300 "/compute?n=20000000"; stop
fi

if want fastapi; then
taskset -c 0 $venv/bin/python loadtest/baselines/python/server.py 18200 & pid=$!
wait_http http://127.0.0.1:18200/healthz; slow_series fastapi http://127.0.0.1:18200 /slow; stop
$venv/bin/python loadtest/baselines/python/server.py 18200 & pid=$!
wait_http http://127.0.0.1:18200/healthz; compute_series fastapi http://127.0.0.1:18200 "/compute?n=20000000"; stop
fi
