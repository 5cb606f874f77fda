#!/usr/bin/env bash
# The guard that keeps the gateway's hot paths cheap: counts the CPU
# instructions of one operation of each (crates/hotpaths) under valgrind's
# callgrind and compares them with the committed baseline,
# loadtest/instructions.baseline. Fails when a count rises more than 10 %
# above its baseline.
#
#   loadtest/instructions.sh                      check against the baseline
#   loadtest/instructions.sh --update "reason"    write the counts as the new
#                                                 baseline (commit it, with the
#                                                 reason, in the change that
#                                                 moved them)
#   loadtest/instructions.sh --annotate PATH      the functions one run of PATH
#                                                 spends its instructions in
#
# Why instructions and not time: on a shared machine wall-clock figures move
# by tens of percent from one run to the next; an instruction count repeats
# for the same binary and input to within about one percent (start-up
# differs a little between runs: hash seeds, request ids; a clock
# calibration that depends on wall-clock time is subtracted). Each figure is
# (run with N operations - run with none) / N, the median of three pairs.
set -euo pipefail
# A failed run inside $(...) must stop the script, not yield an empty count.
shopt -s inherit_errexit

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
baseline=$root/loadtest/instructions.baseline
# slow-request-traced: the same request with traces exported as deployments
# export them (parent-based, 10 %; crates/hotpaths drops what it exports).
paths="slow-request slow-request-traced ingest fanout"
# Reported beside the gateway's figure, not guarded: the same request to a
# bare axum router, the ceiling the gateway is compared with.
reference=bare-slow-request
count=2000
limit_percent=10

mode=check
reason=""
annotate=""
case ${1:-} in
  --update) mode=update; reason=${2:-}; [ -n "$reason" ] || { echo "--update needs a reason" >&2; exit 2; } ;;
  --annotate) mode=annotate; annotate=${2:-slow-request} ;;
  "") ;;
  *) echo "usage: loadtest/instructions.sh [--update REASON | --annotate PATH]" >&2; exit 2 ;;
esac

command -v valgrind >/dev/null || { echo "valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
cd "$root"
# CI sets CARGO_INCREMENTAL=0; release builds never use incremental state.
cargo build --release --locked -q -p hotpaths
bin=$root/target/release/courtside-hotpaths
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# The defaults, not whatever this shell has set.
run_env=(env -u RUST_LOG -u OTEL_EXPORTER_OTLP_ENDPOINT -u COURTSIDE_REDIS_URL)

instructions() { # path count -> total instructions of one run
  if ! "${run_env[@]}" valgrind --tool=callgrind --error-exitcode=1 --callgrind-out-file="$scratch/out" \
    "$bin" "$1" "$2" >"$scratch/run.log" 2>"$scratch/valgrind.log"; then
    { echo "$1 $2 failed:"; grep -v '^==' "$scratch/valgrind.log" | tail -20; } >&2
    return 1
  fi
  # quanta (behind the metrics exporter and the rate limiter) calibrates
  # its clock once, in a loop that runs for a stretch of wall-clock time:
  # its count follows how busy the machine is, so it is left out.
  local total calibration
  total=$(sed -n 's/^summary: //p' "$scratch/out")
  calibration=$(callgrind_annotate --inclusive=yes --threshold=100 "$scratch/out" 2>/dev/null |
    awk '/quanta::Calibration::calibrate/ { gsub(",", "", $1); sum += $1 } END { print sum + 0 }')
  echo $((total - calibration))
}

if [ "$mode" = annotate ]; then
  "${run_env[@]}" valgrind --tool=callgrind --callgrind-out-file="$scratch/out" "$bin" "$annotate" "$count" >/dev/null 2>&1
  callgrind_annotate --inclusive=no "$scratch/out" 2>/dev/null | sed -n '1,60p'
  exit 0
fi

per_operation() { # path -> instructions per operation, median of three
  local path=$1 figures=()
  for _ in 1 2 3; do
    local none all
    none=$(instructions "$path" 0)
    all=$(instructions "$path" "$count")
    figures+=($(((all - none) / count)))
  done
  printf '%s\n' "${figures[@]}" | sort -n | sed -n 2p
}

declare -A now
for path in $paths $reference; do now[$path]=$(per_operation "$path"); done

if [ "$mode" = update ]; then
  {
    echo "# Instructions per operation of the gateway's hot paths (loadtest/instructions.sh)."
    echo "# path	instructions	why it last changed"
    for path in $paths; do printf '%s\t%s\t%s\n' "$path" "${now[$path]}" "$reason"; done
  } >"$baseline"
  echo "baseline written to loadtest/instructions.baseline:"
  grep -v '^#' "$baseline"
  exit 0
fi

failed=0
printf '%-19s %12s %12s %8s\n' path baseline now ratio
for path in $paths; do
  base=$(awk -v p="$path" -F'\t' '$1 == p {print $2}' "$baseline")
  [ -n "$base" ] || { echo "no baseline for $path in $baseline" >&2; exit 1; }
  ratio=$(awk -v n="${now[$path]}" -v b="$base" 'BEGIN {printf "%.3f", n / b}')
  verdict=ok
  if awk -v n="${now[$path]}" -v b="$base" -v l="$limit_percent" 'BEGIN {exit !(n > b * (1 + l / 100))}'; then
    verdict="FAILED: more than ${limit_percent} % above the baseline"
    failed=1
  fi
  printf '%-19s %12s %12s %8s  %s\n' "$path" "$base" "${now[$path]}" "$ratio" "$verdict"
done
ratio_to_bare() { awk -v g="${now[$1]}" -v b="${now[$reference]}" 'BEGIN {printf "%.2f", g / b}'; }
printf '%-19s %12s %12s %8s  %s\n' "$reference" - "${now[$reference]}" - \
  "reference: slow-request is $(ratio_to_bare slow-request)x bare axum, slow-request-traced $(ratio_to_bare slow-request-traced)x"
if [ "$failed" = 1 ]; then
  echo "a hot path got more expensive; find where with: loadtest/instructions.sh --annotate PATH"
  echo "if the cost is deliberate, update the baseline with the reason: loadtest/instructions.sh --update \"...\""
  exit 1
fi
