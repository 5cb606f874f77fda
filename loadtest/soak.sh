#!/usr/bin/env bash
# Soak: the all-in-one binary under a steady live-feed load for a long time,
# its resident memory sampled every few seconds; fails if memory keeps
# growing after warm-up, or if any subscriber missed an event.
#
#   loadtest/soak.sh            10 minutes of publishing to 10,000 WebSocket
#                               subscribers over 100 matches, one event per
#                               match per second (100 events/s, 10,000
#                               deliveries/s)
#   loadtest/soak.sh --short    90 s, 2,000 subscribers over 20 matches
#   SOAK_SECS=1800 SOAK_SUBSCRIBERS=15000 SOAK_MATCHES=150 loadtest/soak.sh
#
# The bound: warm-up is the first 20% of the publishing time. The RSS at the
# end of warm-up is the reference; the largest RSS sampled after it may
# exceed the reference by at most 10% plus 8 MiB. A leak of a few hundred
# bytes per event or per delivery crosses that within the full run; steady
# state (allocator arenas, the hub's per-match state, buffers already
# grown) does not.
#
# State is kept in Redis under a fresh key prefix (deleted afterwards), as
# deployed: with the in-process store the durable event stream is kept in
# the process itself and grows with every event by design, which this check
# would report as a leak. STORE=memory runs it that way anyway.
#
# The server is pinned to core 0, the subscribers and the publisher to core
# 1 (taskset). RSS samples go to $RESULTS/soak-rss-<mode>-<run>.csv
# (t_secs, phase, rss_kib); the verdict is one JSON line in
# $RESULTS/soak.jsonl, which `courtside-loadtest report` tabulates.
# RUN, RESULTS, PROFILE, BUILD: see lib.sh. Loopback only; every loop is
# bounded.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=full
if [ "${1:-}" = --short ]; then mode=short; shift; fi
[ $# -eq 0 ] || { echo "usage: loadtest/soak.sh [--short]" >&2; exit 2; }
if [ "$mode" = short ]; then
  secs=${SOAK_SECS:-90}; subscribers=${SOAK_SUBSCRIBERS:-2000}; matches=${SOAK_MATCHES:-20}
else
  secs=${SOAK_SECS:-600}; subscribers=${SOAK_SUBSCRIBERS:-10000}; matches=${SOAK_MATCHES:-100}
fi
store=${STORE:-redis}
interval=5
warmup_share=20     # percent of the publishing time
bound_percent=10    # growth allowed over the reference, plus:
bound_mib=8
port=18090
token=soak-benchmark-token-0123456789
samples=$RESULTS/soak-rss-$mode-$RUN.csv

raise_fd_limit
build courtside loadtest
port_free $port

prefix="soak-$(date +%s%N):"
redis_env=()
if [ "$store" = redis ]; then
  [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ] || { echo "soak: no Redis at 127.0.0.1:6379" >&2; exit 1; }
  redis_env=(COURTSIDE_REDIS_URL=redis://127.0.0.1:6379 COURTSIDE_REDIS_PREFIX="$prefix")
fi

server=""
cleanup() {
  [ -n "$server" ] && stop_tree "$server"
  if [ "$store" = redis ]; then
    redis-cli --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli del >/dev/null
  fi
}
trap cleanup EXIT

echo "soak ($mode): $subscribers subscribers, $matches matches, 1 event/match/s for ${secs}s; store $store; $PROFILE build; RSS every ${interval}s to $samples"
env COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_ANALYTICS_ADDR=127.0.0.1:0 COURTSIDE_SIMULATE=false \
  COURTSIDE_PUBLISH_TOKENS=$token COURTSIDE_MAX_CONNECTIONS=40000 COURTSIDE_LOG_FORMAT=json RUST_LOG=warn \
  "${redis_env[@]}" $PIN_SERVER "$BIN/courtside" >>"$LOGS/soak-server.log" 2>&1 &
server=$!
wait_http "http://127.0.0.1:$port/readyz"

processes=$(((subscribers + 7999) / 8000))
# shellcheck disable=SC2086
report=$(timeout $((secs + 600)) $PIN_CLIENT "$LT" fanout --label "soak-$mode" --ws "ws://127.0.0.1:$port/v1/live" \
  --publish "http://127.0.0.1:$port/v1/events" --token "$token" --subscribers "$subscribers" \
  --channels "$matches" --duration "$secs" --processes "$processes" --server-pid "$server" \
  --rss-log "$samples" --rss-interval "$interval")
alive "$server" || { echo "soak: the server died" >&2; exit 1; }

line=$(python3 - "$samples" "$report" "$warmup_share" "$bound_percent" "$bound_mib" "{$(common_fields soak "courtside-$store"),\"mode\":\"$mode\",\"secs\":$secs}" <<'PY'
import csv, json, sys
samples_path, report, warmup_share, bound_percent, bound_mib, common = sys.argv[1:]
report = json.loads(report)
publishing = [{"t": float(row["t_secs"]), "rss_kib": int(row["rss_kib"])}
              for row in csv.DictReader(open(samples_path))
              if row["phase"] == "publishing" and row["rss_kib"]]
if len(publishing) < 4:
    sys.exit(f"only {len(publishing)} samples while publishing")
start, end = publishing[0]["t"], publishing[-1]["t"]
warmup_end = start + (end - start) * int(warmup_share) / 100
during = [s for s in publishing if s["t"] <= warmup_end]
after = [s for s in publishing if s["t"] > warmup_end]
reference = during[-1]["rss_kib"]
peak = max(s["rss_kib"] for s in after)
growth = peak - reference
bound = reference * int(bound_percent) / 100 + int(bound_mib) * 1024
missing = max(0, report["expected_deliveries"] - report["received"])
errors = report["gaps"] + report["duplicates"] + report["disconnects"] + report["publish_errors"] + missing
line = json.loads(common)
line.update({
    "x": report["subscribers"], "connected": report["connected"], "matches": report["channels"],
    "published": report["published"], "received": report["received"], "errors": errors,
    "samples": len(publishing), "rss_start_kib": publishing[0]["rss_kib"],
    "rss_warmup_end_kib": reference, "rss_max_after_kib": peak, "rss_end_kib": publishing[-1]["rss_kib"],
    "growth_kib": growth, "bound_kib": round(bound),
    "p99_ms": report["latency_ms"]["p99"], "max_ms": report["latency_ms"]["max"],
    "passed": growth <= bound and errors == 0,
})
print(json.dumps(line, separators=(",", ":")))
PY
)
emit soak.jsonl "$line"
python3 - "$line" <<'PY'
import json, sys
l = json.loads(sys.argv[1])
mib = lambda k: l[k] / 1024
print(f"soak {l['mode']}: RSS {mib('rss_start_kib'):.1f} MiB at the start of publishing, "
      f"{mib('rss_warmup_end_kib'):.1f} MiB at the end of warm-up, at most {mib('rss_max_after_kib'):.1f} MiB after "
      f"(growth {mib('growth_kib'):+.1f} MiB, bound {mib('bound_kib'):.1f} MiB), {mib('rss_end_kib'):.1f} MiB at the end; "
      f"{l['received']:,} deliveries, {l['errors']} errors, p99 {l['p99_ms']} ms")
sys.exit(0 if l["passed"] else 1)
PY
