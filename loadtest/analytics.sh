#!/usr/bin/env bash
# The analytics tier under load, through the gateway of the all-in-one
# binary (release build, simulator on so a live match exists):
#   - GET /v1/matches/{id}/win-probability at the default Monte Carlo sample
#     count: latency, and the simulation rate the worker reports;
#   - GET /v1/bench/slow p99 alone, then while /v1/bench/compute keeps the
#     worker's CPU pool saturated: the event loop must not notice.
# Loopback only; every loop is bounded. Writes loadtest/results/<date>/analytics.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=loadtest/results/$(date -u +%Y-%m-%d)
mkdir -p "$out"
cargo build --release --locked -p courtside -p loadtest 2>&1 | tail -1
lt=target/release/courtside-loadtest
base=http://127.0.0.1:18090

COURTSIDE_GATEWAY_ADDR=127.0.0.1:18090 COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15090 COURTSIDE_LOG_FORMAT=json \
RUST_LOG=warn COURTSIDE_SIM_RATE=20 target/release/courtside >/dev/null & pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -sf $base/v1/matches | grep -q '"id"' && break; sleep 0.1; done
match=$(curl -sf $base/v1/matches | sed -E 's/.*"id":"([^"]+)".*/\1/')

one=$(curl -sf "$base/v1/matches/$match/win-probability")
samples=$(echo "$one" | sed -E 's/.*"samples":([0-9]+).*/\1/')
run_us=$(echo "$one" | sed -E 's/.*"run_micros":([0-9]+).*/\1/')
wp=$($lt latency --url "$base/v1/matches/$match/win-probability" --requests 50 --warmup 3)
echo "{\"label\":\"win-probability\",\"samples\":$samples,\"simulations_per_second\":$(( samples * 1000000 / run_us )),\"latency\":\"$wp\"}" | tee -a "$out/analytics.jsonl"

unloaded=$($lt latency --url "$base/v1/bench/slow" --concurrency 100 --requests 3000 --warmup 200)
$lt latency --url "$base/v1/bench/compute?n=20000000" --concurrency 8 --requests 100000 --warmup 0 --max-secs 12 >/tmp/courtside-saturate.txt &
saturate=$!
sleep 1
loaded=$($lt latency --url "$base/v1/bench/slow" --concurrency 100 --requests 3000 --warmup 0)
wait $saturate || true
echo "{\"label\":\"slow-under-saturated-pool\",\"unloaded\":\"$unloaded\",\"loaded\":\"$loaded\",\"saturating\":\"$(cat /tmp/courtside-saturate.txt)\"}" | tee -a "$out/analytics.jsonl"
