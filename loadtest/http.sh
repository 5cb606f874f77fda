#!/usr/bin/env bash
# The HTTP comparison from the argument, side by side in one run: courtside
# (gateway + analytics worker), the Node.js peer, the FastAPI peer on uvicorn,
# each blocking variant, and a bare axum server as the ceiling for `slow`.
#
#   loadtest/http.sh [seconds-per-point]
#   SCENARIOS="slow mixed" SYSTEMS="courtside node" loadtest/http.sh
#
# Scenarios (SCENARIOS, default all five):
#   slow           /slow at 100, 1,000, 5,000, 10,000 connections: throughput,
#                  latency, errors, server RSS per open connection.
#                  Server on core 0, wrk on core 1; a fresh server per point.
#   latency        /slow at a fixed rate, open loop: 1,000, 5,000, 10,000 and
#                  20,000 requests/s offered by oha with latency correction
#                  (each request timed from when it fell due), over rate / 2
#                  connections. Latency as users at that rate would see it.
#                  Server on core 0, oha on core 1; a fresh server per point.
#   compute        the seed's CPU loop at n = 20,000,000, 1, 2, 8, 32 requests
#                  in flight; the server may use both cores.
#   compute-small  the same at n = 1,000: per-request overhead, not CPU.
#   mixed          /slow at 2,500 requests/s, open loop (oha, 1,000
#                  connections) alone, then again while wrk keeps 4 compute
#                  requests (n = 20,000,000) in flight: loaded p99 against
#                  unloaded p99. Server on core 0, oha and wrk on core 1.
# Systems (SYSTEMS): courtside (gateway + worker), courtside-all-in-one (the
# one-process binary; slow and latency only), both as the compose
# observability profile runs them (configuration b below),
# courtside-all-in-one-untraced (the one-process binary as `cargo run
# --release` starts it, configuration a; slow and latency only), bare-axum
# (slow and latency only), node and fastapi
# (/compute off the event loop: worker_threads, process pool), node-blocking
# and fastapi-blocking (/compute-blocking, the loop in the handler; compute
# and mixed only, their /slow is node's and fastapi's).
#
# SECS (seconds per point, default 10), SLOW_CONNS and RATES (the x values of
# slow and latency, to measure a few points only), RUN, RESULTS, PROFILE,
# QUICK, BUILD: see lib.sh. QUICK=1: 50 and 200 connections, 100 and 400 requests/s,
# concurrency 1 and 2, n = 2,000,000, 2 s per point. One JSON line per point
# goes to $RESULTS/http.jsonl; wrk's own figures come from wrk-report.lua,
# oha's from `courtside-loadtest oha-fields`. Loopback only; every wrk and
# oha run stops after its duration (and a hard timeout).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

all_scenarios="slow latency compute compute-small mixed"
scenarios=${SCENARIOS:-$all_scenarios}
for s in $scenarios; do
  [[ " $all_scenarios " == *" $s "* ]] || { echo "unknown scenario '$s' (known: $all_scenarios)" >&2; exit 2; }
done
if [ "$QUICK" = 1 ]; then
  secs=${1:-${SECS:-2}}; warm=1; slow_conns="50 200"; rates="100 400"; concurrency="1 2"; big_n=2000000
  mixed_rate=100; mixed_conns=50
else
  secs=${1:-${SECS:-10}}; warm=2; slow_conns=${SLOW_CONNS:-100 1000 5000 10000}; rates=${RATES:-1000 5000 10000 20000}
  concurrency="1 2 8 32"; big_n=20000000
  # Half of what 1,000 connections carry closed-loop at 200 ms a request:
  # every system here keeps up with it unloaded.
  mixed_rate=2500; mixed_conns=1000
fi
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "seconds per point must be a whole number, not '$secs'" >&2; exit 2; }
small_n=1000
default_systems="courtside courtside-all-in-one courtside-all-in-one-untraced bare-axum node node-blocking fastapi fastapi-blocking"
out=http.jsonl

command -v wrk >/dev/null || { echo "wrk is required (Debian package wrk)" >&2; exit 1; }
if [[ " $scenarios " == *" latency "* ]] || [[ " $scenarios " == *" mixed "* ]]; then ensure_oha; fi
raise_fd_limit
build gateway analytics loadtest courtside
if want node "$default_systems" || want node-blocking "$default_systems"; then node_peers; fi
if want fastapi "$default_systems" || want fastapi-blocking "$default_systems"; then python_peers; fi

# Two configurations of courtside. (a) courtside-all-in-one-untraced: as
# `cargo run --release` starts it, every default (log level info, plain
# logs, metrics, the runtime-fit monitor, rate limits), no exporter.
# (b) courtside and courtside-all-in-one: as the compose observability
# profile runs them, JSON logs at info and traces exported by OTLP, 10 % of
# them sampled, to a stand-in collector on the client's core. Only the
# connection cap is raised, for the load. Rate limits stay on (their
# default) where the route has none to spend (/slow); compute and mixed
# turn them off, as lib.sh does for every scenario, since one loopback
# address sends what thousands of clients would.
observed=()
if want courtside "$default_systems" || want courtside-all-in-one "$default_systems"; then
  port_free 14327 || exit 1
  $PIN_CLIENT "$LT" otlp-sink --addr 127.0.0.1:14327 >"$LOGS/otlp-sink.json" 2>>"$LOGS/http-servers.log" &
  observed=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14327 OTEL_TRACES_SAMPLER=parentbased_traceidratio
    OTEL_TRACES_SAMPLER_ARG=0.1 COURTSIDE_LOG_FORMAT=json RUST_LOG=info)
fi
# Set to `on` by the /slow scenarios (slow, latency) around start_system.
rate_limit=off

server_pids=""
# Only this shell's own live jobs (wrk under timeout, servers) are stopped:
# a pid remembered from earlier may belong to someone else by now.
cleanup() {
  [ -n "$server_pids" ] && stop_tree $server_pids
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
  rm -rf "${tmp:-}"
}
trap cleanup EXIT
tmp=$(mktemp -d)
failures=0

# Starts one system with the given pinning; sets server_pids and port.
start_system() { # system pin
  local system=$1 pin=$2
  server_pids=""
  case $system in
    courtside)
      port=18100
      port_free 18100 && port_free 15100 && port_free 19100 || return 1
      env "${observed[@]}" COURTSIDE_RATE_LIMIT=$rate_limit COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15100 COURTSIDE_ANALYTICS_METRICS_ADDR=127.0.0.1:19100 \
        $pin "$BIN/courtside-analytics" >>"$LOGS/http-servers.log" 2>&1 &
      server_pids=$!
      env "${observed[@]}" COURTSIDE_RATE_LIMIT=$rate_limit COURTSIDE_GATEWAY_ADDR=127.0.0.1:18100 COURTSIDE_WORKER_URL=http://127.0.0.1:15100 \
        COURTSIDE_MAX_CONNECTIONS=40000 $pin "$BIN/courtside-gateway" >>"$LOGS/http-servers.log" 2>&1 &
      server_pids="$server_pids $!"
      ;;
    courtside-all-in-one)
      port=18110
      port_free 18110 && port_free 15110 || return 1
      env "${observed[@]}" COURTSIDE_RATE_LIMIT=$rate_limit COURTSIDE_GATEWAY_ADDR=127.0.0.1:18110 \
        COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15110 COURTSIDE_MAX_CONNECTIONS=40000 $pin "$BIN/courtside" \
        >>"$LOGS/http-servers.log" 2>&1 &
      server_pids=$!
      ;;
    courtside-all-in-one-untraced)
      port=18115
      port_free 18115 && port_free 15115 || return 1
      env -u OTEL_EXPORTER_OTLP_ENDPOINT -u COURTSIDE_LOG_FORMAT -u RUST_LOG COURTSIDE_RATE_LIMIT=$rate_limit \
        COURTSIDE_GATEWAY_ADDR=127.0.0.1:18115 COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15115 \
        COURTSIDE_MAX_CONNECTIONS=40000 $pin "$BIN/courtside" >>"$LOGS/http-servers.log" 2>&1 &
      server_pids=$!
      ;;
    bare-axum)
      port=18400; port_free $port || return 1
      $pin "$LT" bare-axum --addr 127.0.0.1:$port >>"$LOGS/http-servers.log" 2>&1 &
      server_pids=$!
      ;;
    node | node-blocking)
      port=18300; port_free $port || return 1
      $pin node loadtest/baselines/node/server.js $port >>"$LOGS/http-servers.log" 2>&1 &
      server_pids=$!
      ;;
    fastapi | fastapi-blocking)
      port=18200; port_free $port || return 1
      $pin "$VENV/bin/python" loadtest/baselines/python/server.py $port >>"$LOGS/http-servers.log" 2>&1 &
      server_pids=$!
      ;;
  esac
  wait_http "http://127.0.0.1:$port/healthz"
}

stop_system() {
  [ -n "$server_pids" ] && stop_tree $server_pids
  server_pids=""
}

slow_path() { case $1 in courtside*) echo /v1/bench/slow ;; *) echo /slow ;; esac; }
compute_path() { # system n
  case $1 in
    courtside) echo "/v1/bench/compute?n=$2" ;;
    node-blocking | fastapi-blocking) echo "/compute-blocking?n=$2" ;;
    *) echo "/compute?n=$2" ;;
  esac
}

# wrk in the background, its report to a file; the caller waits.
wrk_start() { # report-file connections seconds url pin
  # shellcheck disable=SC2086
  timeout $(($3 + 30)) $5 wrk -t1 -c"$2" -d"$3"s --timeout 10s -s loadtest/wrk-report.lua "$4" >"$1" 2>&1 &
  wrk_pid=$!
}

# The fields of wrk-report.lua's line, braces and marker stripped, or nothing.
# wrk times only requests that complete: when none did, every connection's
# request outlived the run, and that is counted as an error per connection
# rather than left to read as a clean run without latency figures.
wrk_fields() { # report-file connections
  local line requests errors
  line=$(grep '^{"wrk":1,' "$1" | tail -1 || true)
  [ -n "$line" ] || { echo "wrk said:" >&2; tail -5 "$1" >&2; return 0; }
  line=${line#\{\"wrk\":1,}
  line=${line%\}}
  requests=$(field "$line" requests)
  if [ "$requests" = 0 ]; then
    errors=$(field "$line" errors)
    line=$(sed -E "s/\"errors\":[0-9]+/\"errors\":$((errors + $2))/" <<<"$line")",\"unanswered\":$2"
  fi
  echo "$line"
}

field() { # fields key
  sed -nE "s/.*\"$2\":(-?[0-9.]+).*/\1/p" <<<"$1"
}

prefixed() { # fields prefix
  sed -E "s/\"([a-z0-9_]+)\":/\"$2\1\":/g" <<<"$1"
}

# oha at a fixed rate in the background, its JSON report to a file; the
# caller waits. One runtime thread: oha gets one core, as wrk does. -w lets
# requests in flight at the end finish (and count) instead of being aborted.
oha_start() { # report-file rate connections seconds url pin
  # shellcheck disable=SC2086
  timeout $(($4 + 40)) $6 "$OHA" --no-tui --output-format json --worker-threads 1 -z "$4"s -w -t 10s \
    -c "$3" -q "$2" --latency-correction "$5" >"$1" 2>"$1.err" &
  oha_pid=$!
}

# oha's report as fields, or nothing when there is none.
oha_fields() { # report-file rate
  "$LT" oha-fields --file "$1" --offered-rps "$2" --secs "$secs" 2>/dev/null || {
    echo "oha said:" >&2; tail -5 "$1.err" "$1" >&2; return 0
  }
}

# One open-loop point measured while sampling the server mid-run, and what
# share of its core oha itself used (near 1, the figures are oha's limit,
# not the server's); sets point_fields, rss_load, open_conns.
measure_rate() { # rate connections url pin
  local ticks0 ticks1 o step
  oha_start "$tmp/oha" "$1" "$2" "$secs" "$3" "$4"
  o=$oha_pid
  # oha's CPU is read from 0.2 s in to 0.2 s before the end, while it runs.
  step=$(awk -v s="$secs" 'BEGIN { print s / 2 - 0.2 }')
  sleep 0.2
  ticks0=$(cpu_ticks "$o")
  sleep "$step"
  rss_load=$(rss_kib $server_pids)
  open_conns=$(open_connections "$port")
  sleep "$step"
  ticks1=$(cpu_ticks "$o")
  wait "$o" || true
  point_fields=$(oha_fields "$tmp/oha" "$1")
  [ -n "$point_fields" ] || return 0
  point_fields="$point_fields,$(awk -v t="$((ticks1 - ticks0))" -v hz="$(getconf CLK_TCK)" -v s="$step" \
    'BEGIN { printf "\"client_cpu\":%.2f", (t > 0 ? t : 0) / hz / (2 * s) }')"
}

warm_up() { # connections url pin
  # shellcheck disable=SC2086
  timeout $((warm + 30)) $3 wrk -t1 -c"$1" -d"$warm"s --timeout 10s "$2" >/dev/null 2>&1 || true
}

half() { awk -v s="$1" 'BEGIN { print s / 2 }'; }

# One point measured while sampling the server mid-run; sets point_fields,
# rss_load, open_conns. Empty point_fields when wrk gave no report.
measure() { # connections url pin
  wrk_start "$tmp/wrk" "$1" "$secs" "$2" "$3"
  local w=$wrk_pid
  # Half-way, every connection is open and the server has had time to settle
  # under the load: memory read then is the memory the load costs.
  sleep "$(half "$secs")"
  rss_load=$(rss_kib $server_pids)
  open_conns=$(open_connections "$port")
  wait "$w" || true
  point_fields=$(wrk_fields "$tmp/wrk" "$1")
}

failed_line() { # scenario system x message
  failures=$((failures + 1))
  echo "$2: $4 (servers' output: $LOGS/http-servers.log)" >&2
  emit $out "{$(common_fields "$1" "$2"),\"x\":$3,\"errors\":1,\"failed\":true,\"error\":$(json_str "$4")}"
}

# slow: a fresh server for every point, so the idle RSS before the point is
# a server that has never held more connections than the warm-up's (an
# allocator keeps freed memory, which would hide the next point's cost).
slow_point() { # system connections
  local system=$1 c=$2 url idle
  if ! rate_limit=on start_system "$system" "$PIN_SERVER"; then
    stop_system; failed_line slow "$system" "$c" "did not start"; return
  fi
  url="http://127.0.0.1:$port$(slow_path "$system")"
  warm_up "$([ "$QUICK" = 1 ] && echo 50 || echo 100)" "$url" "$PIN_CLIENT"
  sleep 0.5
  idle=$(rss_kib $server_pids)
  measure "$c" "$url" "$PIN_CLIENT"
  stop_system
  if [ -z "$point_fields" ]; then failed_line slow "$system" "$c" "wrk gave no report"; return; fi
  local per_conn=""
  if [ "$open_conns" -gt 0 ]; then
    per_conn=$(awk -v l="$rss_load" -v i="$idle" -v n="$open_conns" 'BEGIN { printf ",\"rss_per_conn_bytes\":%.0f", (l - i) * 1024 / n }')
  fi
  emit $out "{$(common_fields slow "$system"),\"x\":$c,\"connections\":$c,\"secs\":$secs,\"server_cpus\":\"0\",$point_fields,\"rss_idle_kib\":$idle,\"rss_kib\":$rss_load,\"open_connections\":$open_conns$per_conn}"
}

# latency: as slow (a fresh, warmed-up server per point), at a fixed rate.
# Connections: half the rate, 2.5 times what a server that keeps up holds
# in flight at 200 ms a request; one that falls behind queues the rest.
latency_point() { # system rate
  local system=$1 rate=$2 url conns
  conns=$((rate / 2)); [ "$conns" -ge 50 ] || conns=50
  if ! rate_limit=on start_system "$system" "$PIN_SERVER"; then
    stop_system; failed_line latency "$system" "$rate" "did not start"; return
  fi
  url="http://127.0.0.1:$port$(slow_path "$system")"
  warm_up "$([ "$QUICK" = 1 ] && echo 50 || echo 100)" "$url" "$PIN_CLIENT"
  sleep 0.5
  measure_rate "$rate" "$conns" "$url" "$PIN_CLIENT"
  stop_system
  if [ -z "$point_fields" ]; then failed_line latency "$system" "$rate" "oha gave no report"; return; fi
  emit $out "{$(common_fields latency "$system"),\"x\":$rate,\"connections\":$conns,\"secs\":$secs,\"server_cpus\":\"0\",\"generator\":\"oha\",$point_fields,\"rss_kib\":$rss_load,\"open_connections\":$open_conns}"
}

# compute and compute-small: one server per series, both cores for it.
compute_series() { # scenario system n
  local scenario=$1 system=$2 n=$3 url c idle
  if ! start_system "$system" ""; then
    stop_system
    for c in $concurrency; do failed_line "$scenario" "$system" "$c" "did not start"; done
    return
  fi
  url="http://127.0.0.1:$port$(compute_path "$system" "$n")"
  warm_up 2 "$url" ""
  for c in $concurrency; do
    wait_idle $server_pids
    idle=$(rss_kib $server_pids)
    measure "$c" "$url" ""
    if [ -z "$point_fields" ]; then failed_line "$scenario" "$system" "$c" "wrk gave no report"; continue; fi
    emit $out "{$(common_fields "$scenario" "$system"),\"x\":$c,\"concurrency\":$c,\"n\":$n,\"secs\":$secs,\"server_cpus\":\"all\",$point_fields,\"rss_idle_kib\":$idle,\"rss_kib\":$rss_load}"
  done
  stop_system
}

# mixed: the same server (core 0) measured twice at the same rate on /slow,
# the second time with the CPU side saturated, so the ratio isolates what
# CPU work does to I/O latency on that runtime. Open loop: a stalled event
# loop is charged for every request that fell due during the stall.
mixed_point() { # system rate connections
  local system=$1 rate=$2 c=$3 slow_url compute_url unloaded loaded saturating
  if ! start_system "$system" "$PIN_SERVER"; then
    stop_system; failed_line mixed "$system" "$rate" "did not start"; return
  fi
  slow_url="http://127.0.0.1:$port$(slow_path "$system")"
  compute_url="http://127.0.0.1:$port$(compute_path "$system" "$big_n")"
  warm_up "$([ "$QUICK" = 1 ] && echo 50 || echo 100)" "$slow_url" "$PIN_CLIENT"
  # Starts a process pool's workers and a worker thread's code before
  # anything is timed.
  warm_up 4 "http://127.0.0.1:$port$(compute_path "$system" "$small_n")" "$PIN_CLIENT"
  wait_idle $server_pids

  measure_rate "$rate" "$c" "$slow_url" "$PIN_CLIENT"
  unloaded=$point_fields

  # The compute side runs 1 s before and 1 s after the measured window so
  # the whole window is saturated.
  wrk_start "$tmp/saturate" 4 $((secs + 2)) "$compute_url" "$PIN_CLIENT"
  local saturator=$wrk_pid
  sleep 1
  measure_rate "$rate" "$c" "$slow_url" "$PIN_CLIENT"
  loaded=$point_fields
  wait "$saturator" || true
  saturating=$(wrk_fields "$tmp/saturate" 4)
  stop_system

  if [ -z "$unloaded" ] || [ -z "$loaded" ] || [ -z "$saturating" ]; then
    failed_line mixed "$system" "$rate" "oha or wrk gave no report"; return
  fi
  local u99 l99 errors ratio="" main
  u99=$(field "$unloaded" p99_ms); l99=$(field "$loaded" p99_ms)
  errors=$(($(field "$unloaded" errors) + $(field "$loaded" errors) + $(field "$saturating" errors)))
  if [ -n "$u99" ] && [ -n "$l99" ]; then
    ratio=$(awk -v l="$l99" -v u="$u99" 'BEGIN { if (u > 0) printf ",\"ratio\":%.3f", l / u }')
  fi
  # Unprefixed: the loaded run, the one the scenario is about. The unloaded
  # run and the saturating compute run follow under their prefixes; errors
  # counts all three.
  main=$(sed -E -e 's/"errors":([0-9]+),/"loaded_errors":\1,/' -e 's/,"offered_rps":[0-9.]+//' <<<"$loaded")
  emit $out "{$(common_fields mixed "$system"),\"x\":$rate,\"offered_rps\":$rate,\"connections\":$c,\"generator\":\"oha\",\"n\":$big_n,\"secs\":$secs,\"server_cpus\":\"0\",\"errors\":$errors$ratio${l99:+,\"loaded_p99_ms\":$l99},$main,$(prefixed "$unloaded" unloaded_),$(prefixed "$saturating" compute_),\"rss_kib\":$rss_load}"
}

echo "http: $(nproc) cores, $(uname -sr); scenarios: $scenarios; ${secs}s per point; run $RUN; $PROFILE build; results in $RESULTS"
for scenario in $scenarios; do
  case $scenario in
    slow)
      for system in courtside courtside-all-in-one courtside-all-in-one-untraced bare-axum node fastapi; do
        want "$system" "$default_systems" || continue
        for c in $slow_conns; do slow_point "$system" "$c"; done
      done
      ;;
    latency)
      for system in courtside courtside-all-in-one courtside-all-in-one-untraced bare-axum node fastapi; do
        want "$system" "$default_systems" || continue
        for r in $rates; do latency_point "$system" "$r"; done
      done
      ;;
    compute | compute-small)
      n=$big_n; [ "$scenario" = compute-small ] && n=$small_n
      for system in courtside node node-blocking fastapi fastapi-blocking; do
        want "$system" "$default_systems" || continue
        compute_series "$scenario" "$system" "$n"
      done
      ;;
    mixed)
      for system in courtside node node-blocking fastapi fastapi-blocking; do
        want "$system" "$default_systems" || continue
        mixed_point "$system" "$mixed_rate" "$mixed_conns"
      done
      ;;
  esac
done
[ "$failures" = 0 ] || { echo "http: $failures points failed" >&2; exit 1; }
