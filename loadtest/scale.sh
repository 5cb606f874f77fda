#!/usr/bin/env bash
# The scale scenario: the seed's platform at 100,000 fans on one machine, in
# the layout that spreads over machines. A Redis Cluster of six
# (`.ci/redis-cluster`), two workers, six `courtside-gateway` processes, and
# in front of them several HAProxy processes sharing one port (SO_REUSEPORT,
# HAProxy's default on Linux) in TCP mode with leastconn, /readyz checks and
# PROXY protocol v2, the gateways trusting 127.1.0.0/16 (the balancer's
# sources).
# A process here may hold 20,000 descriptors: each gateway holds about a
# sixth of the subscribers, each HAProxy process under 9,800 connections (two
# descriptors each), the load generator's subscribers live in several
# processes, each from its own loopback source address.
#
# Three runs, each with fresh subscribers spread over 100 matches, holding
# them for HOLD seconds while the coordinator publishes:
# 1. direct: subscribers connected straight to the six gateways, one event
#    per match per second (SUBSCRIBERS deliveries/s). Target: 0 gaps, p99
#    delivery < 250 ms.
# 2. haproxy: the same through HAProxy, one event per match every 4 s.
#    Target: 0 gaps, p99 < 250 ms.
# 3. haproxy at one event per match every 2 s and every second: the highest
#    rate held with 0 gaps.
# Lines are scenario `scale`, system `direct@1s`, `haproxy@4s` and so on
# (the path and the seconds between a match's events), x the subscribers.
# Each line adds the ramp (connect time of all subscribers), every process
# group's CPU seconds and RSS (gateways, HAProxy, load generator, Redis,
# workers) and the gateways' RSS per subscriber above idle.
#
#   loadtest/scale.sh            100,000 subscribers, 300 s per run
#   loadtest/scale.sh --quick    the same layout, 3,000 subscribers, 15 s,
#                                runs 1 and 2 only: CI's proof that it works
#
# Environment: SUBSCRIBERS, HOLD (seconds), GATEWAYS (6), HAPROXIES (12),
# PROCESSES (load generator processes, 8), RAMP (connections per second,
# 4000), RUNS_TO_DO ("direct haproxy haproxy-2s haproxy-1s"); RESULTS, RUN,
# BUILD: see lib.sh. One JSON line per run goes to $RESULTS/scale.jsonl.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

quick=$QUICK
[ "${1:-}" = --quick ] && quick=1
if [ "$quick" = 1 ]; then
  subscribers=${SUBSCRIBERS:-3000} hold=${HOLD:-15} haproxies=${HAPROXIES:-2} processes=${PROCESSES:-2}
  runs_to_do=${RUNS_TO_DO:-"direct haproxy"}
else
  subscribers=${SUBSCRIBERS:-100000} hold=${HOLD:-300} haproxies=${HAPROXIES:-12} processes=${PROCESSES:-8}
  runs_to_do=${RUNS_TO_DO:-"direct haproxy haproxy-2s haproxy-1s"}
fi
gateways=${GATEWAYS:-6}
ramp=${RAMP:-4000}
channels=100
out=scale.jsonl
token=scale-benchmark-token-0123456789
gateway_port=18500 lb_port=18600 worker_port=18700

command -v haproxy >/dev/null || { echo "scale: haproxy is missing (apt-get install haproxy)" >&2; exit 1; }
build gateway analytics loadtest
raise_fd_limit
for ((g = 0; g < gateways; g++)); do port_free $((gateway_port + g)); done
port_free $lb_port

dir=$(mktemp -d)
gateway_pids=() worker_pids=() haproxy_pids=()
cleanup() {
  stop_tree "${haproxy_pids[@]}" "${gateway_pids[@]}" "${worker_pids[@]}" 2>/dev/null || true
  "$LOADTEST_ROOT/.ci/redis-cluster" stop "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
urls=$("$LOADTEST_ROOT/.ci/redis-cluster" start "$dir")
redis_pids=$(cat "$dir"/*/redis.pid)
prefix="scale-$(date +%s%N):"
store=(COURTSIDE_REDIS_URL="$urls" COURTSIDE_REDIS_CLUSTER=true COURTSIDE_REDIS_PREFIX="$prefix" RUST_LOG=warn)

worker_urls=""
for w in 0 1; do
  port=$((worker_port + 2 * w))
  env "${store[@]}" COURTSIDE_ANALYTICS_CONSUMER="scale-$w" "$BIN/courtside-analytics" \
    --analytics-addr "127.0.0.1:$port" --metrics-addr "127.0.0.1:$((port + 1))" >>"$LOGS/scale-worker.log" 2>&1 &
  worker_pids+=($!)
  worker_urls+="${worker_urls:+,}http://127.0.0.1:$port"
done
servers=""
direct=()
for ((g = 0; g < gateways; g++)); do
  port=$((gateway_port + g))
  direct+=(--ws "ws://127.0.0.1:$port/v1/live")
done
# Fresh gateways for each run, so each run's memory per subscriber is
# measured above an idle process.
start_gateways() {
  local g
  for ((g = 0; g < gateways; g++)); do
    env "${store[@]}" COURTSIDE_GATEWAY_ADDR="127.0.0.1:$((gateway_port + g))" COURTSIDE_WORKER_URL="$worker_urls" \
      COURTSIDE_PUBLISH_TOKENS=$token COURTSIDE_TRUSTED_PROXIES=127.1.0.0/16 \
      "$BIN/courtside-gateway" >>"$LOGS/scale-gateway.log" 2>&1 &
    gateway_pids+=($!)
  done
  for ((g = 0; g < gateways; g++)); do
    wait_http "http://127.0.0.1:$((gateway_port + g))/readyz" 600 || { echo "scale: gateway $g is not ready" >&2; exit 1; }
  done
}
stop_gateways() {
  stop_tree "${gateway_pids[@]}"
  gateway_pids=()
}
start_gateways

# The balancer: the compose stack's settings (deploy/haproxy/haproxy.cfg)
# with the gateways at fixed addresses, each process within its
# descriptors, and each process's connections to each gateway from a
# source address of their own (127.1.<process>.<gateway>): a connection
# whose source address is bound gets its port from half the ephemeral range
# (about 14,000 ports), fewer than one gateway's share of the subscribers.
# One config file per process; they share the port (SO_REUSEPORT).
for ((h = 0; h < haproxies; h++)); do
  servers=""
  for ((g = 0; g < gateways; g++)); do
    servers+="    server gateway$g 127.0.0.1:$((gateway_port + g)) source 127.1.$h.$((g + 1))"$'\n'
  done
  cat >"$dir/haproxy-$h.cfg" <<EOF
global
    maxconn 9800
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 2m
    timeout server 2m
    retries 3
    option redispatch
frontend live
    bind 127.0.0.1:$lb_port
    default_backend gateways
backend gateways
    balance leastconn
    option httpchk
    http-check send meth GET uri /readyz ver HTTP/1.1 hdr host gateway
    http-check expect status 200
    default-server check inter 2s fall 2 rise 2 send-proxy-v2
$servers
EOF
  haproxy -c -q -f "$dir/haproxy-$h.cfg"
done
# Started after the gateways: HAProxy takes its servers as up until its
# checks say otherwise, so a fresh balancer in front of fresh gateways
# sends to all of them from the first connection.
start_haproxy() {
  local h
  for ((h = 0; h < haproxies; h++)); do
    haproxy -db -f "$dir/haproxy-$h.cfg" >>"$LOGS/scale-haproxy.log" 2>&1 &
    haproxy_pids+=($!)
  done
  sleep 1
  wait_http "http://127.0.0.1:$lb_port/readyz" 600 || { echo "scale: HAProxy does not answer" >&2; exit 1; }
}
start_haproxy

# JSON object of every process group's CPU seconds since `mark` and RSS now.
group_pids() { # group
  case $1 in
    gateways) echo "${gateway_pids[@]}" ;;
    haproxy) echo "${haproxy_pids[@]}" ;;
    workers) echo "${worker_pids[@]}" ;;
    redis) echo "$redis_pids" ;;
  esac
}
declare -A mark
mark_cpu() { for group in gateways haproxy workers redis; do mark[$group]=$(cpu_ticks $(group_pids $group)); done; }
usage_json() { # generator-cpu-seconds generator-peak-rss-kib
  local hz group parts=()
  hz=$(getconf CLK_TCK)
  for group in gateways haproxy workers redis; do
    parts+=("\"$group\":{\"cpu_secs\":$(awk -v a="${mark[$group]}" -v b="$(cpu_ticks $(group_pids $group))" -v hz="$hz" 'BEGIN { printf "%.1f", (b - a) / hz }'),\"rss_mib\":$(($(rss_kib $(group_pids $group)) / 1024))}")
  done
  parts+=("\"load_generator\":{\"cpu_secs\":$1,\"peak_rss_mib_per_process\":$(($2 / 1024))}")
  local IFS=,
  echo "{${parts[*]}}"
}

# The tool's nested report and the usage, flattened onto the common fields
# as fanout.sh does (loadtest/fanout_fields.py).
normalize() { # report usage common-fields
  python3 loadtest/fanout_fields.py "$1" "{$3}" "$2"
}

# Every 2 s until stopped, one CSV row: seconds since the run began, the
# subscribers the gateways hold, each group's RSS (MiB) and CPU (share of
# one core over the last interval). For the report's plots over time.
sample() { # csv
  # Nothing here may end the sampling: one failed read is one odd row.
  set +e
  local t0 hz g n subs rss cpu group now previous
  t0=$(date +%s.%N) previous=$t0
  hz=$(getconf CLK_TCK)
  declare -A last
  for group in gateways haproxy load_generator redis; do last[$group]=0; done
  echo "t_secs,subscribers,gateways_rss_mib,haproxy_rss_mib,load_generator_rss_mib,redis_rss_mib,gateways_cpu,haproxy_cpu,load_generator_cpu,redis_cpu" >"$1"
  while :; do
    subs=0
    for ((g = 0; g < gateways && subs >= 0; g++)); do
      # A busy gateway may not answer in time: the sample's count is left
      # empty then, and the sampling goes on.
      n=$(curl -s -m 2 "http://127.0.0.1:$((gateway_port + g))/metrics" |
        awk '$1 == "courtside_live_connections{transport=\"websocket\"}" { printf "%d", $2 }' || true)
      if [ -n "$n" ]; then subs=$((subs + n)); else subs=-1; fi
    done
    [ "$subs" -ge 0 ] || subs=""
    rss="" cpu=""
    now=$(date +%s.%N)
    for group in gateways haproxy load_generator redis; do
      local pids
      # The coordinator; its subscriber processes are its descendants.
      if [ $group = load_generator ]; then pids=$(pgrep -f "^$LT fanout --label" | tr '\n' ' ' || true); else pids=$(group_pids $group); fi
      rss+=",$(($(rss_kib $pids) / 1024))"
      n=$(cpu_ticks $pids)
      [ "${last[$group]}" = 0 ] && last[$group]=$n
      cpu+=",$(awk -v a="${last[$group]}" -v b="$n" -v hz="$hz" -v dt="$(awk -v p="$previous" -v q="$now" 'BEGIN { print q - p }')" 'BEGIN { printf "%.2f", (dt > 0 ? (b - a) / hz / dt : 0) }')"
      last[$group]=$n
    done
    echo "$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.1f", b - a }'),$subs$rss$cpu" >>"$1"
    previous=$now
    sleep 2
  done
}

measure() { # name round-secs url-args...
  local name=$1 round=$2 report usage sampler
  shift 2
  echo "scale: $name, $subscribers subscribers, one event per match every $round s, $hold s"
  mark_cpu
  sample "$RESULTS/scale-${name/@/-}-$RUN.csv" &
  sampler=$!
  # The load generator's own CPU and peak RSS, its subscriber processes
  # included (GNU time counts waited-for children).
  if report=$(/usr/bin/time -f '%U %S %M' -o "$dir/time" "$LT" fanout --label "courtside-$name" "$@" \
    --publish "http://127.0.0.1:$lb_port/v1/events" --token $token --subscribers "$subscribers" \
    --channels $channels --duration "$hold" --round-secs "$round" --processes "$processes" \
    --ramp-per-second "$ramp" --connect-timeout-secs 600 $(for p in "${gateway_pids[@]}"; do printf -- '--server-pid %s ' "$p"; done)); then
    read -r user system peak <"$dir/time"
    usage=$(usage_json "$(awk -v u="$user" -v s="$system" 'BEGIN { printf "%.1f", u + s }')" "$peak")
    emit $out "$(normalize "$report" "$usage" "$(common_fields scale "$name"),\"gateways\":$gateways,\"haproxy_processes\":$([ "${name%%@*}" = direct ] && echo 0 || echo "$haproxies"),\"load_generator_processes\":$processes,\"store\":\"redis-cluster-3x2\",\"hold_secs\":$hold")"
  else
    emit $out "{$(common_fields scale "$name"),\"x\":$subscribers,\"errors\":1,\"failed\":true}"
  fi
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  # Connections closing take a moment; the next run starts from idle.
  sleep 5
}

first=1
for run in $runs_to_do; do
  if [ $first = 0 ]; then
    stop_tree "${haproxy_pids[@]}"
    haproxy_pids=()
    stop_gateways
    start_gateways
    start_haproxy
  fi
  first=0
  case $run in
    direct) measure direct@1s 1 "${direct[@]}" ;;
    haproxy) measure haproxy@4s 4 --ws "ws://127.0.0.1:$lb_port/v1/live" ;;
    haproxy-2s) measure haproxy@2s 2 --ws "ws://127.0.0.1:$lb_port/v1/live" ;;
    haproxy-1s) measure haproxy@1s 1 --ws "ws://127.0.0.1:$lb_port/v1/live" ;;
    *) echo "scale: unknown run '$run'" >&2; exit 2 ;;
  esac
done
