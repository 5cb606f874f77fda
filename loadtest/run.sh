#!/usr/bin/env bash
# One command for the whole comparison: builds once, runs the chosen
# scenarios several times into one results folder, and turns the JSON lines
# into report.md and SVG plots (medians across runs).
#
#   loadtest/run.sh [--quick] [--runs N] [scenario ...]
#
# Scenarios: startup slow latency compute compute-small mixed fanout ingest
# callgrind (default all), and scale (100,000 subscribers through HAProxy
# on a Redis Cluster, about half an hour: only when named, or with --quick
# at its quick size). Runs: default 3; each run goes through every
# chosen scenario before the next begins, so slow drift on the machine
# spreads over all of them.
#
# --quick is the CI smoke test: courtside only, debug build, tiny scale, one
# run, results in target/loadtest-quick (emptied first), and the report's
# --check fails the command on any error in any line. It proves the harness
# and the systems work; its timings mean nothing.
#
# Environment passed on to the scenario scripts (see lib.sh): RESULTS
# (default loadtest/results/<UTC date>), PROFILE (release; debug with
# --quick), SYSTEMS (a subset; courtside with --quick), SECS (seconds per
# HTTP point). Lines an earlier invocation wrote into the same folder for a
# scenario run again are moved to RESULTS/raw/ first, so a re-measured
# scenario is never a blend of two builds.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
command_line=$(printf ' %q' loadtest/run.sh "$@")
command_line=${command_line# }
quick=0
runs=""
chosen=()
all="startup slow latency compute compute-small mixed fanout ingest callgrind"
optional="scale"
usage() { echo "usage: loadtest/run.sh [--quick] [--runs N] [scenario ...]   (scenarios: $all $optional)"; }
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --runs) runs=${2:-}; shift ;;
    --runs=*) runs=${1#--runs=} ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; exit 2 ;;
    *)
      [[ " $all $optional " == *" $1 "* ]] || { echo "unknown scenario '$1'" >&2; usage >&2; exit 2; }
      chosen+=("$1")
      ;;
  esac
  shift
done
[ -n "$runs" ] || runs=$([ $quick = 1 ] && echo 1 || echo 3)
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || { echo "--runs needs a positive whole number" >&2; exit 2; }
if [ ${#chosen[@]} = 0 ]; then
  read -ra chosen <<<"$all"
  [ $quick = 1 ] && chosen+=(scale)
fi
has() { [[ " ${chosen[*]} " == *" $1 "* ]]; }

# Only --quick makes a quick run, whatever the environment says.
export QUICK=$quick
if [ $quick = 1 ]; then
  export PROFILE=${PROFILE:-debug}
  export SYSTEMS=${SYSTEMS:-courtside}
  # The default scratch folder starts empty: the check must see this run only.
  if [ -z "${RESULTS:-}" ]; then
    RESULTS=$root/target/loadtest-quick
    rm -rf "$RESULTS"
  fi
fi
export RESULTS=${RESULTS:-}
# lib.sh settles RESULTS, PROFILE and the paths, and moves to the repository root.
source "$root/loadtest/lib.sh"
export RESULTS PROFILE
mkdir -p "$RESULTS/raw"
exec > >(tee -a "$RESULTS/raw/run.log") 2>&1
started=$(date +%s)
echo "run.sh: ${chosen[*]}; $runs run(s); $PROFILE build; systems: ${SYSTEMS:-all}; results in $RESULTS"

# --- build, once -------------------------------------------------------------
# Every scenario script would build its own packages; building here once and
# passing BUILD=0 keeps the build out of the measured runs.
BUILD=${BUILD:-1}
build gateway analytics loadtest courtside
export BUILD=0
# oha, for the open-loop scenarios, is built once here too, not mid-run.
if has latency || has mixed; then ensure_oha; export OHA; fi

# --- machine description -----------------------------------------------------
version() { "$@" 2>&1 | head -1 || true; }
python_bin=python3
[ -x "$VENV/bin/python" ] && python_bin=$VENV/bin/python
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null | head -1)" ] || commit="$commit (uncommitted changes)"
{
  printf '{\n'
  printf '  "date": %s,\n' "$(json_str "$(date -u +%Y-%m-%dT%H:%MZ)")"
  printf '  "command": %s,\n' "$(json_str "$command_line")"
  printf '  "commit": %s,\n' "$(json_str "$commit")"
  printf '  "build": %s,\n' "$(json_str "$PROFILE")"
  printf '  "runs": %d,\n' "$runs"
  printf '  "systems": %s,\n' "$(json_str "${SYSTEMS:-all}")"
  printf '  "cores": %d,\n' "$(nproc)"
  printf '  "cpu": %s,\n' "$(json_str "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)")"
  printf '  "memory_mib": %d,\n' "$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)"
  printf '  "kernel": %s,\n' "$(json_str "$(uname -sr)")"
  printf '  "os": %s,\n' "$(json_str "$(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}")")"
  printf '  "rustc": %s,\n' "$(json_str "$(version rustc --version)")"
  printf '  "node": %s,\n' "$(json_str "$(version node --version)")"
  printf '  "python": %s,\n' "$(json_str "$(version "$python_bin" --version)")"
  printf '  "wrk": %s,\n' "$(json_str "$(version wrk -v | awk '{print $2}')")"
  printf '  "oha": %s,\n' "$(json_str "$([ -n "${OHA:-}" ] && version "$OHA" --version | awk '{print $2}')")"
  printf '  "fd_limit": %s\n' "$(json_str "$(ulimit -Hn)")"
  printf '}\n'
} >"$RESULTS/machine.json"

# --- earlier lines of the scenarios about to run -----------------------------
stamp=$(date -u +%Y%m%dT%H%M%SZ)
supersede() { # file scenario...
  local file=$RESULTS/$1 patterns=() s
  shift
  [ -s "$file" ] || return 0
  for s in "$@"; do patterns+=(-e "\"scenario\":\"$s\""); done
  grep -qF "${patterns[@]}" "$file" || return 0
  grep -F "${patterns[@]}" "$file" >>"$RESULTS/raw/superseded-$stamp-$(basename "$file")"
  grep -vF "${patterns[@]}" "$file" >"$file.tmp" || true
  mv "$file.tmp" "$file"
  echo "moved earlier $* lines of $(basename "$file") to $RESULTS/raw/"
}
http_scenarios=()
for s in slow latency compute compute-small mixed; do has $s && http_scenarios+=("$s"); done
has startup && supersede startup.jsonl startup
[ ${#http_scenarios[@]} -gt 0 ] && supersede http.jsonl "${http_scenarios[@]}"
has fanout && supersede fanout.jsonl fanout && supersede fanout-burst.jsonl fanout-burst
has ingest && supersede ingest.jsonl ingest
has scale && supersede scale.jsonl scale
has callgrind && supersede callgrind.jsonl callgrind-slow

# --- the runs -----------------------------------------------------------------
failed=()
step() { # name command...
  local name=$1 t0=$(date +%s)
  shift
  if ! "$@"; then failed+=("$name (run $RUN)"); fi
  echo "-- $name, run $RUN: $(($(date +%s) - t0)) s"
}
for ((i = 1; i <= runs; i++)); do
  export RUN=$i
  echo
  echo "== run $i of $runs"
  has startup && step startup loadtest/startup.sh
  if [ ${#http_scenarios[@]} -gt 0 ]; then
    SCENARIOS="${http_scenarios[*]}" step "${http_scenarios[*]}" loadtest/http.sh
  fi
  has fanout && step fanout loadtest/fanout.sh
  # The burst mode at the issue's one point (the peers' ramp is above).
  if has fanout; then
    if [ $quick = 1 ]; then BURST=1 step fanout-burst loadtest/fanout.sh; else BURST=1 step fanout-burst loadtest/fanout.sh 15000; fi
  fi
  has ingest && step ingest loadtest/ingest.sh
  has scale && step scale loadtest/scale.sh
  has callgrind && step callgrind loadtest/callgrind.sh
done

# --- report -------------------------------------------------------------------
echo
status=0
report_args=(report --results "$RESULTS")
[ $quick = 1 ] && report_args+=(--check)
if "$LT" report --help >/dev/null 2>&1; then
  # A failed check is a finding, not a crash: no backtrace under it.
  RUST_LIB_BACKTRACE=0 "$LT" "${report_args[@]}" || status=1
else
  echo "this courtside-loadtest has no report subcommand: report.md not written"
  if [ $quick = 1 ]; then
    # Until the report exists, the smoke test still refuses errors.
    if grep -hE '"(errors|gaps)":[1-9]' "$RESULTS"/*.jsonl; then
      echo "check: the lines above report errors"
      status=1
    fi
  fi
fi
if [ ${#failed[@]} -gt 0 ]; then
  printf 'failed: %s\n' "${failed[@]}"
  status=1
fi
echo "run.sh: $(($(date +%s) - started)) s in all; results in $RESULTS"
exit $status
