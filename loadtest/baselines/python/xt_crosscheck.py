"""Fit socceraction's Expected Threat model on an actions CSV and write the
fitted surfaces and per-action ratings as JSON.

This is the reference the Rust `domain::xt` model is checked against
(crates/domain/tests/socceraction_crosscheck.rs), and the Python peer for
timing. It calls socceraction 1.5.3 as a user would, with nothing
reimplemented here, so any disagreement is a difference in the models.

Input: a CSV with SPADL column names. Required: start_x, start_y, end_x,
end_y (metres, 105 x 68, attacking left to right), type_name and
result_name. Optional: type_id and result_id, which are then checked
against socceraction's own numbering; any other SPADL columns (game_id,
player_id, ...) are carried along and ignored, as xT ignores them.

Output (JSON): the socceraction version, eps, the number of value-iteration
steps, the fitted `xT` matrix and the shot, move and scoring probability
matrices (each 12 rows from the top of the pitch, high y, down, and 16
columns from the own goal line), one rating per input row in input order
(null where socceraction gives NaN), and the seconds spent fitting and
rating.

Usage: python xt_crosscheck.py ACTIONS_CSV OUTPUT_JSON [--eps 1e-5]
"""

import argparse
import contextlib
import io
import json
import math
import sys
import time

import pandas as pd
import socceraction
import socceraction.spadl.config as spadlconfig
from socceraction import xthreat

REQUIRED = ["start_x", "start_y", "end_x", "end_y", "type_name", "result_name"]


def load_actions(path: str) -> pd.DataFrame:
    # round_trip parsing: pandas' default float parser can be one unit in the
    # last place off, which would move points lying on a cell border.
    actions = pd.read_csv(path, float_precision="round_trip")
    missing = [column for column in REQUIRED if column not in actions.columns]
    if missing:
        sys.exit(f"{path}: missing columns {missing}")
    for column in ["start_x", "start_y", "end_x", "end_y"]:
        actions[column] = actions[column].astype("float64")

    # xT selects actions by type_id and result_id; derive them from the
    # names with socceraction's own tables.
    for kind, names in [("type", spadlconfig.actiontypes), ("result", spadlconfig.results)]:
        ids = {name: index for index, name in enumerate(names)}
        unknown = sorted(set(actions[f"{kind}_name"]) - set(ids))
        if unknown:
            sys.exit(f"{path}: unknown {kind}_name values {unknown}")
        derived = actions[f"{kind}_name"].map(ids).astype("int64")
        if f"{kind}_id" in actions.columns:
            mismatched = actions[f"{kind}_id"].astype("int64") != derived
            if mismatched.any():
                row = int(mismatched.idxmax())
                sys.exit(f"{path}: row {row}: {kind}_id disagrees with {kind}_name for socceraction")
        actions[f"{kind}_id"] = derived
    return actions


def matrix(values) -> list:
    return [[float(v) for v in row] for row in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("actions_csv")
    parser.add_argument("output_json")
    parser.add_argument("--eps", type=float, default=1e-5)
    args = parser.parse_args()

    actions = load_actions(args.actions_csv)

    model = xthreat.ExpectedThreat(eps=args.eps)
    started = time.perf_counter()
    # fit() prints its iteration count; keep stdout for our own use.
    with contextlib.redirect_stdout(io.StringIO()):
        model.fit(actions)
    fitted = time.perf_counter()
    ratings = model.rate(actions)
    rated = time.perf_counter()

    result = {
        "socceraction_version": socceraction.__version__,
        "eps": args.eps,
        # heatmaps holds the starting surface plus one per iteration.
        "iterations": len(model.heatmaps) - 1,
        "xT": matrix(model.xT),
        "shot_prob": matrix(model.shot_prob_matrix),
        "move_prob": matrix(model.move_prob_matrix),
        "scoring_prob": matrix(model.scoring_prob_matrix),
        "ratings": [None if math.isnan(r) else float(r) for r in ratings],
        "actions": len(actions),
        "fit_seconds": fitted - started,
        "rate_seconds": rated - fitted,
    }
    with open(args.output_json, "w") as out:
        json.dump(result, out, allow_nan=False)
    print(
        f"socceraction {socceraction.__version__}: {len(actions)} actions, "
        f"{result['iterations']} iterations, fit {result['fit_seconds']:.3f} s, "
        f"rate {result['rate_seconds']:.3f} s"
    )


if __name__ == "__main__":
    main()
