#!/usr/bin/env bash
# The start-up comparison: exec → first 200 from /healthz, each run a fresh
# process, for courtside's gateway, the all-in-one binary, the bare axum
# ceiling, the Node.js peer and the FastAPI peer on uvicorn. The argument
# credits V8 with fast start-up; this is where that claim is measured.
#
#   loadtest/startup.sh [runs]                  (default 20, QUICK=1: 3)
#   SYSTEMS="node fastapi" loadtest/startup.sh  (a subset)
#
# Every system is timed by the same prober (`courtside-loadtest startup`: a
# fresh TCP connection every 0.5 ms, the process killed once it answers), so
# the figures differ only by the server. The server is pinned to core 0 and
# the prober to core 1, as in the other comparisons; both wrappers (taskset,
# env) are exec'd for every system alike. Ports are checked free first: a
# stale listener would answer the first probe and fake a start-up of ~0 ms.
# RUN, RESULTS, PROFILE, QUICK, BUILD: see lib.sh. Loopback only; each
# start gives up after 10 s. One JSON line per system goes to
# $RESULTS/startup.jsonl (samples = starts timed), and a table is printed.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "$QUICK" = 1 ]; then runs=${1:-3}; else runs=${1:-20}; fi
out=startup.jsonl
default_systems="courtside-gateway courtside-all-in-one bare-axum node fastapi"

build gateway loadtest courtside
if want fastapi "$default_systems"; then python_peers; fi
bin=$BIN
lt=$LT
pin_server=$PIN_SERVER
pin_prober=$PIN_CLIENT
failures=0

# The first port from $1 upwards that nothing listens on.
free_port() {
  local port=$1
  while [ -n "$(ss -Htln "sport = :$port")" ]; do port=$((port + 1)); done
  echo "$port"
}

echo "startup: $(nproc) cores, $(uname -sr); $runs runs per system; run $RUN; $PROFILE build; results in $RESULTS"
rows=()
# One system: its runs through the prober, one JSON line, one table row.
measure() { # system port command...
  local system=$1 port=$2; shift 2
  local probe="http://127.0.0.1:$port/healthz" report
  if ! report=$($pin_prober $lt startup --runs "$runs" --probe "$probe" -- $pin_server env "$@" 2>&1); then
    echo "$system: $report" >&2
    failures=$((failures + 1))
    emit $out "{$(common_fields startup "$system"),\"samples\":0,\"errors\":1,\"failed\":true,\"error\":\"no healthy answer\",\"runs\":$runs}"
    rows+=("$(printf '%-22s %5s %9s %9s %9s' "$system" "-" "failed" "-" "-")")
    return 0
  fi
  # The prober prints "startup NAME: runs=N min=Xms p50=Yms max=Zms".
  local n min p50 max
  n=$(sed -E 's/.* runs=([0-9]+).*/\1/' <<<"$report")
  min=$(sed -E 's/.* min=([0-9.]+)ms.*/\1/' <<<"$report")
  p50=$(sed -E 's/.* p50=([0-9.]+)ms.*/\1/' <<<"$report")
  max=$(sed -E 's/.* max=([0-9.]+)ms.*/\1/' <<<"$report")
  emit $out "{$(common_fields startup "$system"),\"samples\":$n,\"p50_ms\":$p50,\"max_ms\":$max,\"errors\":0,\"min_ms\":$min,\"runs\":$n,\"probe\":\"$probe\"}"
  rows+=("$(printf '%-22s %5d %9s %9s %9s' "$system" "$n" "$min" "$p50" "$max")")
}

export COURTSIDE_LOG_FORMAT=json RUST_LOG=warn
if want courtside-gateway "$default_systems"; then
  port=$(free_port 18500)
  measure courtside-gateway "$port" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port $bin/courtside-gateway
fi
if want courtside-all-in-one "$default_systems"; then
  port=$(free_port 18510); grpc=$(free_port 15510)
  measure courtside-all-in-one "$port" COURTSIDE_GATEWAY_ADDR=127.0.0.1:$port COURTSIDE_ANALYTICS_ADDR=127.0.0.1:$grpc \
    $bin/courtside
fi
if want bare-axum "$default_systems"; then
  port=$(free_port 18520)
  measure bare-axum "$port" $lt bare-axum --addr 127.0.0.1:$port
fi
if want node "$default_systems"; then
  port=$(free_port 18530)
  measure node "$port" node loadtest/baselines/node/server.js "$port"
fi
if want fastapi "$default_systems"; then
  port=$(free_port 18540)
  measure fastapi "$port" "$VENV/bin/python" loadtest/baselines/python/server.py "$port"
fi

echo
printf '%-22s %5s %9s %9s %9s\n' system runs "min ms" "p50 ms" "max ms"
printf '%s\n' "${rows[@]}"
[ "$failures" = 0 ] || { echo "startup: $failures systems failed" >&2; exit 1; }
