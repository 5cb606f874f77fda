#!/usr/bin/env bash
# The analytics tier under load, through the gateway of the all-in-one
# binary (simulator on so a live match exists):
#   - GET /v1/matches/{id}/win-probability at the default Monte Carlo sample
#     count: latency, and the simulation rate the worker reports;
#   - GET /v1/bench/slow p99 alone, then while /v1/bench/compute keeps the
#     worker's CPU pool saturated: the event loop must not notice.
# The HTTP comparison's `mixed` scenario (http.sh) asks the same question of
# every system with wrk; this one uses courtside's own closed-loop client
# against the all-in-one binary.
#
# RUN, RESULTS, PROFILE, QUICK, BUILD: see lib.sh. Loopback only; every loop
# is bounded. Writes $RESULTS/analytics.jsonl: scenarios "win-probability"
# and "pool-saturation" (x absent), the latency figures of the measured
# requests in the common fields and the client's own report line kept whole.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
out=analytics.jsonl
# The client's warm-up is sequential: 200 requests of /v1/bench/slow take 40 s.
if [ "$QUICK" = 1 ]; then
  wp_requests=10; slow_requests=300; slow_warmup=10; n=2000000; saturate_secs=4
else
  wp_requests=50; slow_requests=3000; slow_warmup=200; n=20000000; saturate_secs=12
fi
build courtside loadtest
base=http://127.0.0.1:18090
port_free 18090 && port_free 15090 || exit 1

COURTSIDE_GATEWAY_ADDR=127.0.0.1:18090 COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15090 COURTSIDE_LOG_FORMAT=json \
RUST_LOG=warn COURTSIDE_SIM_RATE=20 "$BIN/courtside" >/dev/null & pid=$!
tmp=$(mktemp -d)
trap 'stop_tree $pid; rm -rf "$tmp"' EXIT
for _ in $(seq 200); do curl -sf $base/v1/matches | grep -q '"id"' && break; sleep 0.1; done
match=$(curl -sf $base/v1/matches | sed -E 's/.*"id":"([^"]+)".*/\1/')

# "latency URL c=N: n=.. errors=.. rps=.. p50=..us ... max=..us" → JSON fields.
fields() {
  awk '{
    for (i = 1; i <= NF; i++) {
      split($i, kv, "=")
      if (kv[1] == "n") printf "\"requests\":%d,", kv[2]
      else if (kv[1] == "errors") printf "\"errors\":%d,", kv[2]
      else if (kv[1] == "rps") printf "\"rps\":%s,", kv[2]
      else if (kv[1] ~ /^(p50|p90|p99|p99\.9|max)$/) { k = kv[1]; sub(/\./, "", k); v = kv[2]; sub(/us$/, "", v); printf "\"%s_ms\":%.3f,", k, v / 1000 }
    }
  }' <<<"$1"
}

one=$(curl -sf "$base/v1/matches/$match/win-probability")
samples=$(echo "$one" | sed -E 's/.*"samples":([0-9]+).*/\1/')
run_us=$(echo "$one" | sed -E 's/.*"run_micros":([0-9]+).*/\1/')
wp=$("$LT" latency --url "$base/v1/matches/$match/win-probability" --requests $wp_requests --warmup 3)
emit $out "{$(common_fields win-probability courtside),$(fields "$wp")\"samples\":$samples,\"simulations_per_second\":$(( samples * 1000000 / (run_us > 0 ? run_us : 1) )),\"latency\":$(json_str "$wp")}"

unloaded=$("$LT" latency --url "$base/v1/bench/slow" --concurrency 100 --requests $slow_requests --warmup $slow_warmup)
"$LT" latency --url "$base/v1/bench/compute?n=$n" --concurrency 8 --requests 100000 --warmup 0 --max-secs $saturate_secs >"$tmp/saturate.txt" &
saturate=$!
sleep 1
loaded=$("$LT" latency --url "$base/v1/bench/slow" --concurrency 100 --requests $slow_requests --warmup 0)
wait $saturate || true
saturating=$(cat "$tmp/saturate.txt")
u99=$(sed -nE 's/.* p99=([0-9]+)us.*/\1/p' <<<"$unloaded")
l99=$(sed -nE 's/.* p99=([0-9]+)us.*/\1/p' <<<"$loaded")
errors=0
for report in "$unloaded" "$loaded" "$saturating"; do
  errors=$((errors + $(sed -nE 's/.* errors=([0-9]+).*/\1/p' <<<"$report")))
done
line=$(fields "$loaded" | sed -E 's/"errors":[0-9]+,//')
ratio=$(awk -v l="$l99" -v u="$u99" 'BEGIN { if (u > 0) printf "%.3f", l / u; else print "null" }')
emit $out "{$(common_fields pool-saturation courtside),$line\"errors\":$errors,\"unloaded_p99_ms\":$(awk -v u="$u99" 'BEGIN { printf "%.3f", u / 1000 }'),\"loaded_p99_ms\":$(awk -v l="$l99" 'BEGIN { printf "%.3f", l / 1000 }'),\"ratio\":$ratio,\"unloaded\":$(json_str "$unloaded"),\"loaded\":$(json_str "$loaded"),\"saturating\":$(json_str "$saturating")}"
