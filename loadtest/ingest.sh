#!/usr/bin/env bash
# The bulk ingest benchmark: one NDJSON body of a given size (default 1 GiB)
# streamed into `POST /v1/events/bulk` of a release gateway backed by Redis;
# reports events per second and the gateway's peak RSS (VmHWM).
#
#   loadtest/ingest.sh [bytes] [matches]
#
# The body is generated on the fly and streamed with chunked encoding, so
# neither the generator nor curl holds it. Loopback only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bytes=${1:-1073741824}
matches=${2:-1000}
out=loadtest/results/$(date -u +%Y-%m-%d)
mkdir -p "$out"
cargo build --release --locked -p gateway -p loadtest 2>&1 | tail -1

token=ingest-benchmark-token-0123456789
prefix="ingest-$(date +%s):"
COURTSIDE_GATEWAY_ADDR=127.0.0.1:18081 COURTSIDE_REDIS_URL=redis://127.0.0.1:6379 COURTSIDE_REDIS_PREFIX="$prefix" \
COURTSIDE_PUBLISH_TOKENS=$token COURTSIDE_LOG_FORMAT=json RUST_LOG=warn \
  target/release/courtside-gateway & server_pid=$!
trap 'kill $server_pid 2>/dev/null || true; redis-cli --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli del >/dev/null' EXIT
for _ in $(seq 200); do curl -sf http://127.0.0.1:18081/healthz >/dev/null && break; sleep 0.05; done
rss_start=$(awk '/VmRSS/ {print $2}' /proc/$server_pid/status)

start=$(date +%s.%N)
report=$(target/release/courtside-loadtest ndjson --bytes "$bytes" --matches "$matches" --prefix "b$(date +%s)" |
  curl -sS -X POST -T - -H "Authorization: Bearer $token" -H 'content-type: application/x-ndjson' \
    -H 'Transfer-Encoding: chunked' http://127.0.0.1:18081/v1/events/bulk)
end=$(date +%s.%N)
peak=$(awk '/VmHWM/ {print $2}' /proc/$server_pid/status)
accepted=$(echo "$report" | sed -E 's/.*"accepted":([0-9]+).*/\1/')
rejected=$(echo "$report" | sed -E 's/.*"rejected_count":([0-9]+).*/\1/')
secs=$(echo "$end - $start" | bc -l)
rate=$(echo "$accepted / $secs" | bc -l)
line=$(printf '{"label":"courtside-bulk-ingest","bytes":%s,"matches":%s,"accepted":%s,"rejected":%s,"seconds":%.2f,"events_per_second":%.0f,"rss_start_kib":%s,"rss_peak_kib":%s}' \
  "$bytes" "$matches" "$accepted" "$rejected" "$secs" "$rate" "$rss_start" "$peak")
echo "$line" | tee -a "$out/ingest.jsonl"
