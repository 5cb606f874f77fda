#!/usr/bin/env bash
# Measures the skeleton's figures on this machine:
#   - cold start of each binary, exec → first healthy answer
#   - gateway → worker overhead: GET /v1/bench/compute?n=1, one connection
#   - /v1/bench/slow latency, one connection
# Usage: loadtest/skeleton.sh   (builds release binaries first)
# Targets loopback only; every loop is bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --locked --workspace --bins 2>&1 | tail -1
bin=target/release
lt=$bin/courtside-loadtest

echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%Y-%m-%dT%H:%MZ)"
ls -l $bin/courtside $bin/courtside-gateway $bin/courtside-analytics | awk '{printf "binary %s: %.1f MiB\n", $9, $5/1048576}'

# Rate limits off: thousands of requests from one address (as in lib.sh).
export COURTSIDE_LOG_FORMAT=json RUST_LOG=warn COURTSIDE_RATE_LIMIT=off
$lt startup --runs 20 --probe http://127.0.0.1:18080/healthz -- \
  env COURTSIDE_GATEWAY_ADDR=127.0.0.1:18080 $bin/courtside-gateway
$lt startup --runs 20 --probe grpc://127.0.0.1:15051 -- \
  env COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15051 $bin/courtside-analytics
$lt startup --runs 20 --probe http://127.0.0.1:18080/healthz -- \
  env COURTSIDE_GATEWAY_ADDR=127.0.0.1:18080 COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15051 $bin/courtside

# The separate binaries, as deployed.
COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15051 $bin/courtside-analytics & worker=$!
COURTSIDE_GATEWAY_ADDR=127.0.0.1:18080 COURTSIDE_WORKER_URL=http://127.0.0.1:15051 $bin/courtside-gateway & gateway=$!
trap 'kill $worker $gateway 2>/dev/null || true' EXIT
for _ in $(seq 100); do $bin/courtside-gateway healthcheck --addr 127.0.0.1:18080 2>/dev/null && break; sleep 0.05; done

$lt latency --url 'http://127.0.0.1:18080/healthz' --requests 5000 --warmup 500
$lt latency --url 'http://127.0.0.1:18080/v1/bench/compute?n=1' --requests 5000 --warmup 500
$lt latency --url 'http://127.0.0.1:18080/v1/bench/slow' --requests 50 --warmup 5
