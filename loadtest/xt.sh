#!/usr/bin/env bash
# The analytics benchmark: Expected Threat fit + rating on a seeded synthetic
# season (default 10 million actions), courtside on 1 and 2 threads against
# socceraction 1.5.3 on the same actions, in one run.
#
#   loadtest/xt.sh [actions]
#
# Needs the socceraction venv (.ci/run builds it at
# loadtest/baselines/python/.venv). Writes loadtest/results/<date>/xt.jsonl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
actions=${1:-10000000}
out=loadtest/results/$(date -u +%Y-%m-%d)
mkdir -p "$out"
python=loadtest/baselines/python/.venv/bin/python
[ -x "$python" ] || { echo "no socceraction venv at $python (run .ci/run once, or see requirements.txt)"; exit 1; }
cargo build --release --locked -p loadtest 2>&1 | tail -1
csv=$(mktemp -d)/actions.csv
trap 'rm -rf "$(dirname "$csv")"' EXIT

rust=$(target/release/courtside-loadtest xt --actions "$actions" --csv "$csv")
echo "$rust" | tee -a "$out/xt.jsonl"
# socceraction's own timing of fit and rate (CSV loading excluded).
"$python" loadtest/baselines/python/xt_crosscheck.py "$csv" "$csv.json" >/dev/null
python3 - "$csv.json" "$rust" <<'PY' | tee -a "$out/xt.jsonl"
import json, sys
peer = json.load(open(sys.argv[1]))
ours = json.loads(sys.argv[2])
total = peer["fit_seconds"] + peer["rate_seconds"]
print(json.dumps({
    "label": "socceraction-xt", "actions": ours["actions"],
    "fit_seconds": round(peer["fit_seconds"], 3), "rate_seconds": round(peer["rate_seconds"], 3),
    "speedup_vs_1_thread": round(total / ours["seconds_1_thread"], 1),
    "speedup_vs_2_threads": round(total / ours["seconds_2_threads"], 1),
}))
PY
