#!/usr/bin/env bash
# Instructions per `/slow` request of the real servers, hyper and the socket
# calls included: the gateway binary, the all-in-one and bare axum, each run
# under valgrind's callgrind as `http.sh` starts it, in its two
# configurations: (b) the gateway and the all-in-one as the compose
# observability profile runs them (JSON logs at info, metrics, the
# runtime-fit monitor, rate limits, traces exported at 10 % sampling to a
# stand-in collector); (a) both as `cargo run --release` starts them, every
# default and no exporter (courtside-untraced, courtside-all-in-one-untraced).
#
#   loadtest/callgrind.sh [requests]      (default 2000; QUICK=1: 200)
#
# The in-process guard (`instructions.sh`, crates/hotpaths) counts one
# request through the router without the server and the network stack;
# this one counts everything the process executes while it serves. Per
# request: (instructions while serving N requests - what the same process
# executes idle for as long) / N. Idle work (timers, the monitor's ticks,
# the exporter's flushes) runs some 50 times slower under valgrind, so it
# is measured and subtracted, not ignored. Clients: 50 keep-alive
# connections (curl), each sending N/50 requests in turn.
#
# One JSON line per system goes to $RESULTS/callgrind.jsonl. Where the
# instructions go, function by function: `instructions.sh --annotate` (a
# dump taken after zeroing the counters attributes everything to the
# threads' entry points, so this script reports totals only).
# RUN, RESULTS, PROFILE, QUICK, BUILD, SYSTEMS: see lib.sh.
set -euo pipefail
shopt -s inherit_errexit
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$QUICK" = 1 ]; then requests=${1:-200}; else requests=${1:-2000}; fi
connections=50
[ "$requests" -ge "$connections" ] || { echo "callgrind: at least $connections requests" >&2; exit 2; }
per_connection=$((requests / connections))
requests=$((per_connection * connections))
out=callgrind.jsonl
# The -untraced systems have no trace exporter, which also shows what
# exporting traces at 10 % costs every request, sampled or not.
default_systems="courtside courtside-untraced courtside-all-in-one courtside-all-in-one-untraced bare-axum"
# In a quick run (a debug build, 200 requests) the all-in-one's own
# background work outweighs the requests: the figure would be noise.
[ "$QUICK" = 1 ] && default_systems="courtside courtside-untraced bare-axum"
command -v valgrind >/dev/null || { echo "callgrind: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
build gateway loadtest courtside

tmp=$(mktemp -d)
server_pid=""
sink_pid=""
cleanup() {
  # A server under valgrind may not stop on SIGTERM while callgrind holds it.
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2>/dev/null || true
  [ -n "$sink_pid" ] && stop_tree "$sink_pid"
  rm -rf "$tmp"
}
trap cleanup EXIT

port_free 14328 || exit 1
$PIN_CLIENT "$LT" otlp-sink --addr 127.0.0.1:14328 >"$LOGS/callgrind-otlp-sink.json" 2>>"$LOGS/callgrind-servers.log" &
sink_pid=$!
observed=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14328 OTEL_TRACES_SAMPLER=parentbased_traceidratio
  OTEL_TRACES_SAMPLER_ARG=0.1 COURTSIDE_LOG_FORMAT=json RUST_LOG=info COURTSIDE_RATE_LIMIT=on)
# Configuration (a): every default; lib.sh turned rate limits off for load
# from one address, and /slow spends from no lane, so on costs it nothing
# but is what a newcomer runs.
defaults=(COURTSIDE_RATE_LIMIT=on)

# callgrind reads its commands only while the program runs; a server idle
# in epoll never would, so each command is sent with a health check behind
# it to wake the server (one request against thousands: noise).
control() { # pid option
  (sleep 0.3; curl -s -o /dev/null --max-time 30 "http://127.0.0.1:$port/healthz" || true) &
  timeout 120 callgrind_control "$2" "$1" >/dev/null 2>&1
  wait $!
}
# The instructions of the newest dump.
dumped() { # pid
  local file
  file=$(ls -t "$tmp"/cg."$1".* | head -1)
  sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' "$file" | head -1
}

for system in $default_systems; do
  want "$system" "$default_systems" || continue
  case $system in
    courtside)
      port=18120
      vars=("${observed[@]}" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_WORKER_URL=http://127.0.0.1:15120)
      cmd=("$BIN/courtside-gateway")
      path=/v1/bench/slow ;;
    courtside-untraced)
      port=18125
      vars=("${defaults[@]}" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_WORKER_URL=http://127.0.0.1:15125)
      cmd=("$BIN/courtside-gateway")
      path=/v1/bench/slow ;;
    courtside-all-in-one)
      port=18130
      # Its demo feed publishes all the while, measured in both windows
      # and so subtracted.
      vars=("${observed[@]}" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15130)
      cmd=("$BIN/courtside")
      path=/v1/bench/slow ;;
    courtside-all-in-one-untraced)
      port=18135
      vars=("${defaults[@]}" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_ANALYTICS_ADDR=127.0.0.1:15135)
      cmd=("$BIN/courtside")
      path=/v1/bench/slow ;;
    bare-axum)
      port=18140
      vars=()
      cmd=("$LT" bare-axum --addr 127.0.0.1:$port)
      path=/slow ;;
  esac
  port_free "$port" || exit 1
  # The environment first: valgrind follows no exec, so `env` under it
  # would run the server natively.
  env "${vars[@]}" $PIN_SERVER valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.%p" "${cmd[@]}" \
    >>"$LOGS/callgrind-servers.log" 2>&1 &
  server_pid=$!
  wait_http "http://127.0.0.1:$port/healthz" 1200
  url=http://127.0.0.1:$port$path
  urls=$(printf "$url %.0s" $(seq "$per_connection"))
  send() { # every connection's requests, all at once
    seq "$connections" | $PIN_CLIENT xargs -P "$connections" -I{} sh -c "curl -s $urls >/dev/null"
  }
  send # warm-up: allocator pools, lazily built state

  control "$server_pid" -z
  started=$(date +%s.%N)
  send
  control "$server_pid" -d
  serving_s=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
  serving=$(dumped "$server_pid")

  control "$server_pid" -z
  sleep "$serving_s"
  control "$server_pid" -d
  idle=$(dumped "$server_pid")

  kill -9 "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
  # Background work larger than the requests' own leaves no figure worth
  # reporting: an error, not a number.
  line=$(awk -v s="$serving" -v i="$idle" -v n="$requests" 'BEGIN {
    printf "\"instructions_per_request\":%.0f,\"serving_instructions\":%d,\"idle_instructions\":%d,\"errors\":%d",
      (s - i) / n, s, i, (i * 2 > s) ? 1 : 0 }')
  emit $out "{$(common_fields callgrind-slow "$system"),$line,\"requests\":$requests,\"connections\":$connections,\"serving_seconds\":$serving_s}"
done
