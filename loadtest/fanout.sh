#!/usr/bin/env bash
# The fan-out benchmark: courtside's gateway against the Node.js `ws` peer and
# the FastAPI peer on uvicorn, same subscribers, channels and publish rate,
# measured in one run.
#
#   loadtest/fanout.sh [subscribers] [channels] [seconds]     (default 15000 100 30)
#   REPLICAS=2 loadtest/fanout.sh 30000                        (two gateways, one Redis;
#                                                               courtside only: the peers
#                                                               have no cross-process fan-out)
#
# The server under test is pinned to core 0; subscribers, the publisher and
# Redis share core 1 (taskset). Subscribers are spread over processes (a
# process may open at most 20,000 files) and 127.0.0.x source addresses.
# Loopback only; every loop is bounded. Writes JSON lines to
# loadtest/results/<date>/fanout.jsonl and prints them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
subscribers=${1:-15000}
channels=${2:-100}
seconds=${3:-30}
processes=$(( (subscribers + 7999) / 8000 ))
out=loadtest/results/$(date -u +%Y-%m-%d)
mkdir -p "$out"
ulimit -n 20000

cargo build --release --locked -p gateway -p loadtest 2>&1 | tail -1
(cd loadtest/baselines/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
# The venv http.sh makes, brought up to date: one made before the fan-out peer lacks `websockets`.
venv=loadtest/baselines/python/.server-venv
[ -x $venv/bin/python ] || python3 -m venv $venv
$venv/bin/pip install -q -r loadtest/baselines/python/server-requirements.txt
lt=target/release/courtside-loadtest
pin_server="taskset -c 0"
pin_clients="taskset -c 1"
[ "$(nproc)" -ge 2 ] || { pin_server=""; pin_clients=""; }

wait_http() { for _ in $(seq 200); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done; echo "no answer from $1"; return 1; }
replicas=${REPLICAS:-1}
cleanup() { for pid in ${server_pids:-} ${server_pid:-}; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

echo "machine: $(nproc) cores, $(uname -sr); $subscribers subscribers, $channels channels, 1 event/channel/s, ${seconds}s"

# courtside gateway, Redis backend (the deployed configuration).
token=fanout-benchmark-token-0123456789
prefix="fanout-$(date +%s):"
server_pids=""
ws_args=()
pid_args=()
for i in $(seq 0 $((replicas - 1))); do
  port=$((18080 + i))
  COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_REDIS_URL=redis://127.0.0.1:6379 COURTSIDE_REDIS_PREFIX="$prefix" \
  COURTSIDE_PUBLISH_TOKENS=$token COURTSIDE_LOG_FORMAT=json RUST_LOG=warn COURTSIDE_MAX_CONNECTIONS=40000 \
    $pin_server target/release/courtside-gateway & pid=$!
  server_pids="$server_pids $pid"
  ws_args+=(--ws "ws://127.0.0.1:$port/v1/live")
  pid_args+=(--server-pid "$pid")
  wait_http "http://127.0.0.1:$port/healthz"
done
label=courtside
[ "$replicas" -gt 1 ] && label="courtside-${replicas}-replicas"
$pin_clients $lt fanout --label "$label" "${ws_args[@]}" --publish http://127.0.0.1:18080/v1/events \
  --token $token --subscribers "$subscribers" --channels "$channels" --duration "$seconds" --processes "$processes" \
  "${pid_args[@]}" | tee -a "$out/fanout.jsonl"
for pid in $server_pids; do kill "$pid"; wait "$pid" 2>/dev/null || true; done
server_pids=""
redis-cli --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli del >/dev/null
[ "$replicas" -gt 1 ] && exit 0

# Node.js ws peer.
$pin_server node loadtest/baselines/node/fanout.js 13001 >/dev/null & server_pid=$!
wait_http http://127.0.0.1:13001/healthz
$pin_clients $lt fanout --label node-ws --ws ws://127.0.0.1:13001/v1/live --publish http://127.0.0.1:13001/v1/events \
  --subscribers "$subscribers" --channels "$channels" --duration "$seconds" --processes "$processes" \
  --server-pid "$server_pid" | tee -a "$out/fanout.jsonl"
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
server_pid=""

# FastAPI peer on uvicorn.
$pin_server $venv/bin/python loadtest/baselines/python/fanout.py 13002 & server_pid=$!
wait_http http://127.0.0.1:13002/healthz
$pin_clients $lt fanout --label fastapi-ws --ws ws://127.0.0.1:13002/v1/live --publish http://127.0.0.1:13002/v1/events \
  --subscribers "$subscribers" --channels "$channels" --duration "$seconds" --processes "$processes" \
  --server-pid "$server_pid" | tee -a "$out/fanout.jsonl"
