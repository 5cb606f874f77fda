#!/usr/bin/env bash
# The analytics benchmark: Expected Threat fit + rating on a seeded synthetic
# season (default 10 million actions, QUICK=1 200,000), courtside on 1 and 2
# threads against socceraction 1.5.3 on the same actions, in one run.
#
#   loadtest/xt.sh [actions]
#
# Needs the socceraction venv (.ci/run builds it at
# loadtest/baselines/python/.venv). RUN, RESULTS, PROFILE, QUICK, BUILD: see
# lib.sh. One JSON line per system goes to $RESULTS/xt.jsonl (scenario "xt",
# x absent); the tool's own fields follow the common ones.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
if [ "$QUICK" = 1 ]; then actions=${1:-200000}; else actions=${1:-10000000}; fi
out=xt.jsonl
python=loadtest/baselines/python/.venv/bin/python
[ -x "$python" ] || { echo "no socceraction venv at $python (run .ci/run once, or see requirements.txt)"; exit 1; }
build loadtest
csv=$(mktemp -d)/actions.csv
trap 'rm -rf "$(dirname "$csv")"' EXIT

rust=$("$LT" xt --actions "$actions" --csv "$csv")
emit $out "{$(common_fields xt courtside),\"errors\":0,${rust#\{}"
# socceraction's own timing of fit and rate (CSV loading excluded).
"$python" loadtest/baselines/python/xt_crosscheck.py "$csv" "$csv.json" >/dev/null
peer=$(python3 - "$csv.json" "$rust" "{$(common_fields xt socceraction)}" <<'PY'
import json, sys
peer = json.load(open(sys.argv[1]))
ours = json.loads(sys.argv[2])
line = json.loads(sys.argv[3])
total = peer["fit_seconds"] + peer["rate_seconds"]
line.update({
    "errors": 0, "label": "socceraction-xt", "actions": ours["actions"],
    "fit_seconds": round(peer["fit_seconds"], 3), "rate_seconds": round(peer["rate_seconds"], 3),
    "speedup_vs_1_thread": round(total / ours["seconds_1_thread"], 1),
    "speedup_vs_2_threads": round(total / ours["seconds_2_threads"], 1),
})
print(json.dumps(line, separators=(",", ":")))
PY
)
emit $out "$peer"
