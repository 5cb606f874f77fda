# Shared by the load-test scripts (sourced, never run on its own): where
# results go, which build is measured, which systems a run includes, and the
# helpers that start, sample and stop servers the same way in every scenario,
# so that a difference between two systems is never a difference between two
# scripts.
#
# Environment, read by every scenario script:
#   RESULTS  directory of the JSON lines (default loadtest/results/<UTC date>;
#            a relative path is taken from where the script was started)
#   RUN      run number written into every line (default 1)
#   PROFILE  release (default) or debug: which target/ binaries, which build
#   QUICK    1 for the smoke-test scale the CI uses
#   SYSTEMS  a subset of systems; a family name (courtside, node, fastapi)
#            also selects its variants (node-blocking, node-ws, ...)
#   BUILD    0 to measure the binaries already built (run.sh builds once)

# Taken before the cd below so that RESULTS=some/dir means what the caller sees.
if [ -n "${RESULTS:-}" ] && [[ "$RESULTS" != /* ]]; then RESULTS="$PWD/$RESULTS"; fi

cd "$(dirname "${BASH_SOURCE[0]}")/.."
LOADTEST_ROOT=$PWD

# The harness sends tens of thousands of requests from a few loopback
# addresses, which the gateway's per-address rate limits (on by default)
# would refuse, and the peers have no such limits: every courtside process
# a scenario starts inherits this.
export COURTSIDE_RATE_LIMIT=off

QUICK=${QUICK:-0}
[ "$QUICK" = 1 ] || QUICK=0
RUN=${RUN:-1}
[[ "$RUN" =~ ^[0-9]+$ ]] || { echo "RUN must be a whole number, not '$RUN'" >&2; exit 2; }
PROFILE=${PROFILE:-release}
case "$PROFILE" in
  release | debug) ;;
  *) echo "PROFILE must be release or debug, not '$PROFILE'" >&2; exit 2 ;;
esac
BIN=${CARGO_TARGET_DIR:-$LOADTEST_ROOT/target}/$PROFILE
RESULTS=${RESULTS:-$LOADTEST_ROOT/loadtest/results/$(date -u +%Y-%m-%d)}
# Servers' own output, kept for when a point fails; raw/ stays out of git.
LOGS=$RESULTS/raw
mkdir -p "$RESULTS" "$LOGS"
LT=$BIN/courtside-loadtest
VENV=loadtest/baselines/python/.server-venv

# The server under test gets core 0 and the load generator core 1, so neither
# steals the other's CPU; on one core that split is impossible and both share.
if [ "$(nproc)" -ge 2 ]; then PIN_SERVER="taskset -c 0"; PIN_CLIENT="taskset -c 1"; else PIN_SERVER=""; PIN_CLIENT=""; fi

# SYSTEMS lists names; `node` stands for node, node-blocking and node-ws alike,
# so one list serves every scenario script.
want() { # system default-systems
  local entry
  for entry in ${SYSTEMS:-$2}; do
    [ "$entry" = "$1" ] && return 0
    [[ "$1" == "$entry"-* ]] && return 0
  done
  return 1
}

build() { # package...
  [ "${BUILD:-1}" = 0 ] && return 0
  local args=(--locked) log
  [ "$PROFILE" = release ] && args+=(--release)
  for p in "$@"; do args+=(-p "$p"); done
  log=$(mktemp)
  if ! cargo build "${args[@]}" >"$log" 2>&1; then
    tail -40 "$log" >&2; rm -f "$log"
    echo "cargo build ${args[*]} failed" >&2
    return 1
  fi
  tail -1 "$log"; rm -f "$log"
}

# npm ci wipes and reinstalls node_modules; the stamp skips that when the
# lockfile has not changed since the last install.
node_peers() {
  local dir=loadtest/baselines/node
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.courtside-lock.json"; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$dir/package-lock.json" "$dir/node_modules/.courtside-lock.json"
  fi
}

# The pinned FastAPI peers' venv, rebuilt when the requirements change, as
# .ci/run does for the socceraction venv.
python_peers() {
  local req=loadtest/baselines/python/server-requirements.txt
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  if ! cmp -s "$req" "$VENV/server-requirements.txt"; then
    "$VENV/bin/pip" install -q -r "$req"
    cp "$req" "$VENV/server-requirements.txt"
  fi
}

# oha, the open-loop load generator: ensure_oha sets OHA.
source loadtest/oha.sh

# The hard limit may be lower than the 20,000 the big scenarios need (CI
# containers); take what is allowed and let the scenario fail loudly if short.
raise_fd_limit() {
  local hard
  hard=$(ulimit -Hn)
  if [ "$hard" = unlimited ] || [ "$hard" -ge 20000 ]; then ulimit -n 20000; else ulimit -n "$hard"; fi
}

wait_http() { # url [tries of 50 ms]
  local i
  for ((i = 0; i < ${2:-300}; i++)); do
    curl -sf -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2
  return 1
}

# A stale listener on the port would answer for the system under test and
# fake every figure.
port_free() { # port
  if [ -n "$(ss -Htln "sport = :$1")" ]; then
    echo "port $1 is in use: stop whatever listens there first" >&2
    return 1
  fi
}

# A server and all its descendants (a process pool's workers, worker threads
# live in the same process): memory and shutdown concern all of them.
tree_pids() { # pid...
  local p c
  for p in "$@"; do
    [ -d "/proc/$p" ] || continue
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null); do tree_pids "$c"; done
  done
}

rss_kib() { # pid... (each with its descendants)
  local total=0 p v
  for p in $(tree_pids "$@"); do
    v=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

hwm_kib() { # pid: its peak RSS so far
  awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0
}

# A zombie still has its /proc entry but holds nothing: it counts as gone.
alive() { # pid
  local state
  state=$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

# Every process of the tree is signalled: a process pool's workers inherit
# the listening socket and would keep the port after their parent is gone.
# Forked from uvicorn they also inherit its SIGTERM handler and ignore the
# signal, hence SIGKILL for whatever is still there after a short grace.
# Returns once all are gone, so the next server finds its port free.
stop_tree() { # pid...
  local pids p i left
  pids=$(tree_pids "$@" | tac)
  for p in $pids; do kill "$p" 2>/dev/null || true; done
  for ((i = 0; i < 200; i++)); do
    left=""
    for p in $pids; do alive "$p" && left="$left $p"; done
    [ -z "$left" ] && break
    # After 2 s of grace, SIGKILL, then wait for the kernel to finish.
    [ "$i" = 40 ] && for p in $left; do kill -9 "$p" 2>/dev/null || true; done
    sleep 0.05
  done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
}

cpu_ticks() { # pid... (each with its descendants): user + system time so far
  local total=0 p v
  for p in $(tree_pids "$@"); do
    v=$(sed -E 's/.*\) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# A client that gives up does not stop the work it started: a process pool
# or a worker thread finishes the queued requests anyway. Waiting until the
# server is idle (under 5% of a core over half a second, for at most a
# minute) keeps one point's backlog out of the next point's figures.
wait_idle() { # pid...
  local i before after limit
  limit=$(($(getconf CLK_TCK) / 40 + 1))
  for ((i = 0; i < 120; i++)); do
    before=$(cpu_ticks "$@")
    sleep 0.5
    after=$(cpu_ticks "$@")
    [ $((after - before)) -lt "$limit" ] && return 0
  done
  echo "server still busy after a minute; measuring anyway" >&2
}

open_connections() { # port: established TCP connections the server holds
  ss -Htn state established "sport = :$1" 2>/dev/null | wc -l
}

# Values go into JSON written by hand; strings from the outside world
# (error text, CPU names) need their quotes and backslashes escaped.
json_str() {
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\n'/ }
  s=${s//$'\t'/ }
  printf '"%s"' "$s"
}

# The fields every line carries, without braces: scenario, system, run.
common_fields() { # scenario system
  printf '"scenario":"%s","system":"%s","run":%d,"profile":"%s","quick":%s' \
    "$1" "$2" "$RUN" "$PROFILE" "$([ "$QUICK" = 1 ] && echo true || echo false)"
}

emit() { # file line: one measured point, appended and shown
  echo "$2" | tee -a "$RESULTS/$1"
}
