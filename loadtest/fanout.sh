#!/usr/bin/env bash
# The fan-out benchmark: courtside's gateway against the Node.js `ws` peer and
# the FastAPI peer on uvicorn, same subscribers, channels and publish rate,
# measured in one run.
#
#   loadtest/fanout.sh [subscribers] [channels] [seconds]
#       subscribers may be a list ("1000 5000"); default 1000, 5000 and
#       15,000 per system, then 30,000 over two courtside replicas;
#       100 channels, 30 s of publishing (QUICK=1: 500, 10, 5 s, courtside)
#   REPLICAS=2 loadtest/fanout.sh 30000      only courtside over two gateways
#                                            sharing one Redis (the peers have
#                                            no cross-process fan-out)
#   SYSTEMS="courtside node-ws" ...          a subset (courtside, courtside-memory,
#                                            node-ws, fastapi-ws,
#                                            courtside-2-replicas)
#   BURST=1 loadtest/fanout.sh 15000         each second's publishes back to
#                                            back (a goal in every match at
#                                            once): per-event latency and each
#                                            round's completion, first publish
#                                            to last delivery, in
#                                            $RESULTS/fanout-burst.jsonl
#   REDIS_CLUSTER_URL=... REPLICAS=2 loadtest/fanout.sh 30000
#                                            the gateways on a Redis Cluster
#                                            (seed nodes, as .ci/redis-cluster
#                                            start DIR prints them):
#                                            courtside-cluster-2-replicas
#
# courtside runs with the Redis backend (`courtside`) and with the in-process
# one (`courtside-memory`, one process, nothing stored outside it), in its
# default configuration (log level and format, metrics, the runtime-fit
# monitor) plus traces exported at 10 % to a stand-in collector, as in
# `http.sh`; only the connection cap is raised.
# The server under test is pinned to core 0, subscribers and the publisher to
# core 1 (taskset); Redis, a service already running, stays unpinned.
# Subscribers are spread over processes (a process may open at most 20,000
# files) and 127.0.0.x source addresses.
# RUN, RESULTS, PROFILE, QUICK, BUILD: see lib.sh. Loopback only; every loop
# is bounded. One JSON line per point goes to $RESULTS/fanout.jsonl: the
# common fields (x = subscribers, errors = gaps + duplicates + disconnects +
# publish errors + deliveries lost after a subscriber's last event) and,
# after them, every field `courtside-loadtest fanout` reports.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

replicas=${REPLICAS:-1}
if [ "$QUICK" = 1 ]; then
  subscriber_counts=${1:-500}; channels=${2:-10}; seconds=${3:-5}
  default_systems="courtside"
  replica_point=""
else
  subscriber_counts=${1:-"1000 5000 15000"}; channels=${2:-100}; seconds=${3:-30}
  default_systems="courtside courtside-memory node-ws fastapi-ws courtside-2-replicas"
  # The two-replica point belongs to the default ramp only: an explicit
  # subscriber count asks for that count alone.
  replica_point=$([ -z "${1:-}" ] && echo 30000 || true)
fi
if [ "$replicas" -gt 1 ]; then
  default_systems="courtside-${REDIS_CLUSTER_URL:+cluster-}${replicas}-replicas"
  [ -z "${1:-}" ] && subscriber_counts=$((15000 * replicas))
  replica_point=""
fi
out=fanout.jsonl
scenario=fanout
burst=()
if [ "${BURST:-0}" = 1 ]; then
  out=fanout-burst.jsonl scenario=fanout-burst burst=(--burst)
fi

raise_fd_limit
build gateway loadtest
if want node-ws "$default_systems"; then node_peers; fi
if want fastapi-ws "$default_systems"; then python_peers; fi

observed=()
if want courtside "$default_systems" || want courtside-memory "$default_systems" ||
  want "courtside-${REDIS_CLUSTER_URL:+cluster-}${replicas}-replicas" "$default_systems"; then
  port_free 14328 || exit 1
  $PIN_CLIENT "$LT" otlp-sink --addr 127.0.0.1:14328 >"$LOGS/fanout-otlp-sink.json" 2>>"$LOGS/fanout-servers.log" &
  observed=(OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:14328 OTEL_TRACES_SAMPLER=parentbased_traceidratio
    OTEL_TRACES_SAMPLER_ARG=0.1)
fi

server_pids=""
cleanup() {
  [ -n "$server_pids" ] && stop_tree $server_pids
  for p in $(jobs -p); do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
failures=0

failed_line() { # system subscribers message
  failures=$((failures + 1))
  echo "$1: $3 (servers' output: $LOGS/fanout-servers.log)" >&2
  emit $out "{$(common_fields $scenario "$1"),\"x\":$2,\"errors\":1,\"failed\":true,\"error\":$(json_str "$3")}"
}

# The tool's nested report, flattened onto the common fields
# (loadtest/fanout_fields.py).
normalize() { # report common-fields
  python3 loadtest/fanout_fields.py "$1" "{$2}"
}

measure() { # system subscribers ws-args... -- publish-url token server-pid...
  local system=$1 subs=$2; shift 2
  local ws=() pids=() publish token report
  while [ "$1" != -- ]; do ws+=(--ws "$1"); shift; done
  shift; publish=$1; token=$2; shift 2
  for p in "$@"; do pids+=(--server-pid "$p"); done
  local processes=$(((subs + 7999) / 8000))
  # shellcheck disable=SC2086
  if report=$(timeout $((seconds + 300)) $PIN_CLIENT "$LT" fanout --label "$system" "${ws[@]}" --publish "$publish" \
    ${token:+--token "$token"} --subscribers "$subs" --channels "$channels" --duration "$seconds" \
    --processes "$processes" "${burst[@]}" "${pids[@]}") && [ -n "$report" ] &&
    line=$(normalize "$report" "$(common_fields $scenario "$system"),\"secs\":$seconds"); then
    emit $out "$line"
  else
    failed_line "$system" "$subs" "the fan-out client failed"
  fi
}

redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }

courtside() { # replicas subscribers [memory]
  local n=$1 subs=$2 system=courtside i port ws=() token=fanout-benchmark-token-0123456789
  local redis_env=(COURTSIDE_REDIS_URL=redis://127.0.0.1:6379) redis_ports=6379
  if [ "${3:-}" = memory ]; then
    system=courtside-memory redis_env=() redis_ports=""
  elif [ -n "${REDIS_CLUSTER_URL:-}" ]; then
    system=courtside-cluster
    redis_env=(COURTSIDE_REDIS_CLUSTER=true "COURTSIDE_REDIS_URL=$REDIS_CLUSTER_URL")
    redis_ports=$(tr ',' '\n' <<<"$REDIS_CLUSTER_URL" | sed -E 's#.*:([0-9]+)/?$#\1#')
  fi
  [ "$n" -gt 1 ] && system="${system}-${n}-replicas"
  want "$system" "$default_systems" || return 0
  if [ -n "$redis_ports" ] && [ -z "${REDIS_CLUSTER_URL:-}" ] && ! redis_up; then
    failed_line "$system" "$subs" "no Redis at 127.0.0.1:6379"
    return
  fi
  local prefix
  prefix="fanout-$(date +%s%N):"
  server_pids=""
  for ((i = 0; i < n; i++)); do
    port=$((18080 + i))
    if ! port_free $port; then stop_system; failed_line "$system" "$subs" "port $port in use"; return; fi
    env "${observed[@]}" "${redis_env[@]}" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_REDIS_PREFIX="$prefix" \
      COURTSIDE_PUBLISH_TOKENS=$token COURTSIDE_MAX_CONNECTIONS=40000 \
      $PIN_SERVER "$BIN/courtside-gateway" >>"$LOGS/fanout-servers.log" 2>&1 &
    server_pids="$server_pids $!"
    ws+=("ws://127.0.0.1:$port/v1/live")
  done
  for ((i = 0; i < n; i++)); do
    wait_http "http://127.0.0.1:$((18080 + i))/healthz" || { stop_system; failed_line "$system" "$subs" "did not start"; return; }
  done
  # shellcheck disable=SC2086
  measure "$system" "$subs" "${ws[@]}" -- http://127.0.0.1:18080/v1/events "$token" $server_pids
  stop_system
  for p in $redis_ports; do
    redis-cli -p "$p" --scan --pattern "${prefix}*" | xargs -r -n 500 redis-cli -p "$p" del >/dev/null 2>&1 || true
  done
}

peer() { # system port command...
  local system=$1 port=$2 subs=$3; shift 3
  want "$system" "$default_systems" || return 0
  if ! port_free "$port"; then failed_line "$system" "$subs" "port $port in use"; return; fi
  $PIN_SERVER "$@" "$port" >>"$LOGS/fanout-servers.log" 2>&1 &
  server_pids=$!
  if ! wait_http "http://127.0.0.1:$port/healthz"; then stop_system; failed_line "$system" "$subs" "did not start"; return; fi
  measure "$system" "$subs" "ws://127.0.0.1:$port/v1/live" -- "http://127.0.0.1:$port/v1/events" "" $server_pids
  stop_system
}

stop_system() {
  [ -n "$server_pids" ] && stop_tree $server_pids
  server_pids=""
}

echo "fanout: $(nproc) cores, $(uname -sr); subscribers $subscriber_counts, $channels channels, 1 event/channel/s, ${seconds}s; run $RUN; $PROFILE build; results in $RESULTS"
for subs in $subscriber_counts; do
  courtside "$replicas" "$subs"
  [ "$replicas" -gt 1 ] && continue
  courtside 1 "$subs" memory
  peer node-ws 13001 "$subs" node loadtest/baselines/node/fanout.js
  peer fastapi-ws 13002 "$subs" "$VENV/bin/python" loadtest/baselines/python/fanout.py
done
if [ -n "$replica_point" ]; then courtside 2 "$replica_point"; fi
[ "$failures" = 0 ] || { echo "fanout: $failures points failed" >&2; exit 1; }
