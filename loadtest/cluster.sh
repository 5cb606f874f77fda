#!/usr/bin/env bash
# The Redis Cluster scenario: what an operator sees when a shard has lost
# its replica, what an idle worker costs the cluster, and how fast the
# leaderboards catch up after a worker dies. On a six-node cluster of its
# own (`.ci/redis-cluster`, `cluster-require-full-coverage no` as the
# deploy docs advise), with the release binaries:
#
# 1. shard: one master's replica is shut down, so that shard has none. A
#    gateway with COURTSIDE_REDIS_WAIT_REPLICAS=1 takes one event per match
#    per second for 160 matches over 30 s (`courtside-loadtest fanout`,
#    10 subscribers); each publish's answer time is grouped by whether its
#    match lives on the shard without a replica. Target: its p99 < 50 ms
#    and within 1.5x the other shards'.
# 2. idle: a worker with nothing to consume, 60 s: commands per second it
#    sends to the cluster (INFO commandstats on every node, less the
#    replicas' own REPLCONF and the script's INFO). Target: <= 20.
# 3. catch-up: two workers under the same ingest; one is killed holding a
#    batch (SIGKILL; the batch is read as its consumer while the other
#    worker is held for a second, so it dies with entries pending), and the
#    time until the survivor has applied them all is measured. Target:
#    <= 10 s. Three runs.
#
#   loadtest/cluster.sh
#
# One JSON line per figure goes to $RESULTS/cluster.jsonl. RESULTS, RUN,
# BUILD: see lib.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=cluster.jsonl
build gateway analytics loadtest
dir=$(mktemp -d)
pids=()
cleanup() {
  stop_tree "${pids[@]}" 2>/dev/null || true
  "$LOADTEST_ROOT/.ci/redis-cluster" stop "$dir" >/dev/null 2>&1 || true
}
trap cleanup EXIT
urls=$("$LOADTEST_ROOT/.ci/redis-cluster" start "$dir")
ports=$(tr ',' '\n' <<<"$urls" | sed -E 's#.*:([0-9]+)/?$#\1#')
for p in $ports; do redis-cli -p "$p" config set cluster-require-full-coverage no >/dev/null; done
partitions=16
token=cluster-benchmark-token-0123456789
first_port=$(head -1 <<<"$ports")

# The master serving `key`, as CLUSTER NODES says.
master_of() { # key
  local slot
  slot=$(redis-cli -p "$first_port" cluster keyslot "$1")
  redis-cli -p "$first_port" cluster nodes | awk -v slot="$slot" '
    $3 ~ /master/ && $3 !~ /fail/ {
      for (i = 9; i <= NF; i++) {
        n = split($i, r, "-"); lo = r[1]; hi = (n > 1 ? r[2] : r[1])
        if (slot >= lo && slot <= hi) { split($2, a, "[:@]"); print a[2]; exit }
      }
    }'
}

start_gateway() { # prefix wait-replicas
  env COURTSIDE_REDIS_URL="$urls" COURTSIDE_REDIS_CLUSTER=true COURTSIDE_REDIS_PREFIX="$1" \
    COURTSIDE_REDIS_PARTITIONS=$partitions COURTSIDE_REDIS_WAIT_REPLICAS="$2" \
    COURTSIDE_GATEWAY_ADDR=127.0.0.1:18180 COURTSIDE_ADMIN_ADDR=127.0.0.1:18181 \
    COURTSIDE_PUBLISH_TOKENS=$token COURTSIDE_RATE_LIMIT=off RUST_LOG=warn \
    "$BIN/courtside-gateway" >>"$LOGS/cluster-gateway.log" 2>&1 &
  gateway=$!
  pids+=("$gateway")
  wait_http http://127.0.0.1:18180/healthz 200 || { echo "cluster: the gateway did not start" >&2; exit 1; }
}

start_worker() { # prefix name port
  env COURTSIDE_REDIS_URL="$urls" COURTSIDE_REDIS_CLUSTER=true COURTSIDE_REDIS_PREFIX="$1" \
    COURTSIDE_REDIS_PARTITIONS=$partitions COURTSIDE_ANALYTICS_CONSUMER="$2" RUST_LOG=warn \
    "$BIN/courtside-analytics" --analytics-addr "127.0.0.1:$3" --metrics-addr "127.0.0.1:$(($3 + 1))" \
    >>"$LOGS/cluster-worker.log" 2>&1 &
  worker=$!
  pids+=("$worker")
}

publish_for() { # seconds matches [latency log]
  local log=()
  [ -n "${3:-}" ] && log=(--publish-latency-log "$3")
  "$LT" fanout --label cluster --ws ws://127.0.0.1:18180/v1/live --publish http://127.0.0.1:18180/v1/events \
    --token $token --subscribers 10 --channels "$2" --duration "$1" --processes 1 "${log[@]}"
}

# Calls of every command on every node, less what is not the workload's.
commands() {
  # The replica shut down in 1. answers nothing.
  for p in $ports; do redis-cli -p "$p" info commandstats 2>/dev/null || true; done |
    sed -nE 's/^cmdstat_([a-z|]+):calls=([0-9]+).*/\1 \2/p' |
    awk '$1 != "replconf" && $1 != "info" { s += $2 } END { print s + 0 }'
}

# 1. A shard without a replica.
prefix="shard-$(date +%s%N):"
alone=$(master_of "${prefix}{p0}events")
replica=$(redis-cli -p "$first_port" cluster nodes |
  awk -v m="$alone" '{ split($2, a, "[:@]"); port[$1] = a[2] } $3 ~ /slave/ { master[$1] = $4; p[$1] = a[2] }
    END { for (id in master) if (port[master[id]] == m) print p[id] }' | head -1)
redis-cli -p "$replica" shutdown nosave >/dev/null 2>&1 || true
sleep 2
start_gateway "$prefix" 1
report=$(publish_for 30 160 "$dir/publish.csv")
stop_tree "$gateway"
shard_line=$(python3 - "$dir/publish.csv" "$prefix" "$partitions" "$alone" "$first_port" <<'EOF'
import csv, subprocess, sys
path, prefix, partitions, alone, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def fnv1a(text):
    h = 0x811c9dc5
    for b in text.encode():
        h = ((h ^ b) * 0x01000193) & 0xffffffff
    return h
nodes = subprocess.run(["redis-cli", "-p", port, "cluster", "nodes"], capture_output=True, text=True).stdout
def master(key):
    slot = int(subprocess.run(["redis-cli", "-p", port, "cluster", "keyslot", key], capture_output=True, text=True).stdout)
    for line in nodes.splitlines():
        f = line.split()
        if "master" in f[2] and "fail" not in f[2]:
            for r in f[8:]:
                lo, _, hi = r.partition("-")
                if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                    return f[1].split(":")[1].split("@")[0]
groups, masters = {"alone": [], "others": []}, {}
for row in csv.DictReader(open(path)):
    k = fnv1a(row["match_id"]) % partitions
    if k not in masters:
        masters[k] = master(f"{prefix}{{p{k}}}events")
    groups["alone" if masters[k] == alone else "others"].append(int(row["micros"]) / 1000)
def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else None
a, o = groups["alone"], groups["others"]
print(f'"publishes_alone":{len(a)},"publishes_others":{len(o)},"alone_p50_ms":{q(a, .5):.2f},"alone_p99_ms":{q(a, .99):.2f},'
      f'"others_p50_ms":{q(o, .5):.2f},"others_p99_ms":{q(o, .99):.2f},"p99_ratio":{q(a, .99) / q(o, .99):.2f}')
EOF
)
errors=$(sed -nE 's/.*"publish_errors":([0-9]+).*/\1/p' <<<"$report")
emit $out "{$(common_fields cluster-shard-without-replica courtside-cluster),$shard_line,\"publish_errors\":$errors,\"wait_replicas\":1}"

# 2. An idle worker.
start_worker "idle-$(date +%s%N):" idle 18190
sleep 10
before=$(commands)
sleep 60
after=$(commands)
stop_tree "$worker"
emit $out "{$(common_fields cluster-idle-worker courtside-cluster),\"partitions\":$partitions,\"commands_per_second\":$(awk -v a="$before" -v b="$after" 'BEGIN { printf "%.1f", (b - a) / 60 }')}"

# 3. Catch-up after a worker dies.
pending_of() { # prefix consumer: its pending entries over every partition
  local total=0 k key n
  for k in $(seq 0 $((partitions - 1))); do
    key="$1{p$k}events"
    n=$(redis-cli -p "$(master_of "$key")" xpending "$key" analytics 2>/dev/null |
      awk -v c="$2" 'prev == c { print; exit } { prev = $0 }')
    total=$((total + ${n:-0}))
  done
  echo $total
}
for run in 1 2 3; do
  prefix="catch-$run-$(date +%s%N):"
  start_gateway "$prefix" 0
  start_worker "$prefix" doomed 18192; doomed=$worker
  start_worker "$prefix" survivor 18194; survivor=$worker
  sleep 3
  publish_for 25 200 >/dev/null & publisher=$!
  sleep 10
  kill -9 "$doomed"
  kill -STOP "$survivor"
  sleep 1
  for k in $(seq 0 $((partitions - 1))); do
    key="${prefix}{p$k}events"
    redis-cli -p "$(master_of "$key")" xreadgroup group analytics doomed count 100000 streams "$key" '>' >/dev/null
  done
  died=$(date +%s.%N)
  kill -CONT "$survivor"
  held=$(pending_of "$prefix" doomed)
  while :; do
    left=$(pending_of "$prefix" doomed)
    waited=$(awk -v d="$died" -v n="$(date +%s.%N)" 'BEGIN { printf "%.2f", n - d }')
    [ "$left" = 0 ] && break
    awk -v w="$waited" 'BEGIN { exit !(w > 60) }' && break
    sleep 0.2
  done
  wait "$publisher" || true
  stop_tree "$gateway" "$survivor"
  emit $out "{$(common_fields cluster-worker-death courtside-cluster),\"run_of_3\":$run,\"pending_at_death\":$held,\"left\":$left,\"caught_up_seconds\":$waited}"
done
