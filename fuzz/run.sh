#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/fuzz_targets) for a bounded time each, from
# their committed seed corpora (fuzz/corpus/<target>). .ci/run calls it.
#
#   fuzz/run.sh                            every target, 60 s each
#   fuzz/run.sh bulk_body                  the targets named
#   COURTSIDE_FUZZ_SECONDS=600 fuzz/run.sh longer runs
#
# Each run starts from a scratch copy of the committed corpus, so what
# libFuzzer adds on the way stays out of the checkout: the committed seeds
# are a dozen meaningful inputs per target, not a fuzzer's leftovers. To keep
# an input worth having, copy it into fuzz/corpus/<target>/ by hand.
#
# A crash (a panic, a failed assertion in a target, a sanitizer report, an
# input running over 10 s) fails the run. libFuzzer's log says where it saved
# the input (`Test unit written to fuzz/artifacts/<target>/crash-...`) and,
# for a short one, prints it (`Base64: ...`), so a CI log is enough to
# reproduce it: save it to a file and run
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>` in fuzz/.
#
# Toolchain: cargo fuzz needs unstable compiler flags (the address sanitizer,
# coverage instrumentation). A machine of this project has the pinned
# toolchain (rust-toolchain.toml) and can fetch no other, so the targets are
# built with that one and RUSTC_BOOTSTRAP=1, which lets it take unstable
# flags; `cargo +nightly fuzz ...` works too where a nightly is installed.
# cargo-fuzz itself comes from crates.io (.ci/run installs it if missing).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root/fuzz"

seconds=${COURTSIDE_FUZZ_SECONDS:-60}
case $seconds in
  '' | *[!0-9]* | 0)
    echo "COURTSIDE_FUZZ_SECONDS must be a positive whole number of seconds, got '$seconds'" >&2
    exit 2
    ;;
esac
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "cargo-fuzz is not installed: cargo install --locked cargo-fuzz@0.13.2" >&2
  exit 1
fi
export RUSTC_BOOTSTRAP=1
export CARGO_INCREMENTAL=0
# Instrumented builds of their own: sharing a target directory with the
# workspace's ordinary builds (a CARGO_TARGET_DIR set for those) would make
# each rebuild what the other built, as the flags differ.
export CARGO_TARGET_DIR="${COURTSIDE_FUZZ_TARGET_DIR:-$root/fuzz/target}"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# cargo fuzz has no --locked: check the committed lockfile first, so a
# dependency change that forgot fuzz/Cargo.lock fails here instead of
# building with whatever resolves today.
cargo fetch --locked --quiet
# One build of every target before any clock starts.
cargo fuzz build

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
for target in "${targets[@]}"; do
  printf '\n--- fuzz target %s, %s s\n' "$target" "$seconds"
  corpus="$scratch/corpus/$target"
  mkdir -p "$corpus"
  cp -R "corpus/$target/." "$corpus/"
  log="$scratch/$target.log"
  # libFuzzer logs a line per new input, thousands a minute: keep those in
  # a file and show the start, the end and the figures, or on a crash the
  # report, whose last lines name the saved input.
  if cargo fuzz run "$target" "$corpus" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    grep -E 'INITED|DONE|^stat::' "$log" || true
    execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log")
    rate=$(awk '/stat::average_exec_per_sec/ {print $NF}' "$log")
    echo "fuzz target $target: no crash in ${execs:-?} runs (${rate:-?} per second)"
  else
    tail -n 80 "$log"
    echo "fuzz target $target FAILED: the input is under fuzz/artifacts/$target/ (path above)"
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${seconds} s each, no crash"
