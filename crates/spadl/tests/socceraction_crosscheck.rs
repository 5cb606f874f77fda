//! Cross-checks `domain::xt` against socceraction 1.5.3 itself: the same
//! synthetic actions go through both, and the fitted surfaces and every
//! action's rating must agree within 1e-6 (in practice they agree to the
//! last bit, since the Rust model repeats socceraction's arithmetic in the
//! same order).
//!
//! The Python side is `loadtest/baselines/python/xt_crosscheck.py`, run with
//! the interpreter named by `COURTSIDE_SOCCERACTION_PYTHON` (a virtualenv
//! with `loadtest/baselines/python/requirements.txt` installed). Without it
//! the test says so and passes on a developer machine, but fails under CI,
//! where `.ci/run` sets the variable up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};
use std::{env, fs};

use domain::season::{Season, SeasonConfig};
use domain::xt::{Action, FitConfig, GRID_LENGTH, GRID_WIDTH, XtCounts, XtModel};
use serde_json::Value;

const PYTHON_ENV: &str = "COURTSIDE_SOCCERACTION_PYTHON";
const TOLERANCE: f64 = 1e-6;

#[test]
fn xt_agrees_with_socceraction() {
    let Some(python) = env::var_os(PYTHON_ENV) else {
        assert!(!running_in_ci(), "{PYTHON_ENV} must name a python with socceraction under CI");
        eprintln!(
            "skipping the socceraction cross-check: set {PYTHON_ENV} to a python with socceraction installed"
        );
        return;
    };

    // Arrange: about 20,000 actions from 12 matches of a seeded season.
    let season = Season::new(SeasonConfig::new(8, 12, 1_700, 90_210).expect("valid config"));
    let actions = season.play_all().actions;
    let dir = scratch_dir();
    let csv = dir.join("actions.csv");
    let json = dir.join("socceraction.json");
    fs::write(&csv, spadl_csv(&season, &actions)).expect("write actions csv");

    // Act: socceraction in Python, our model in Rust.
    let output = Command::new(&python)
        .arg(script())
        .arg(&csv)
        .arg(&json)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", Path::new(&python).display()));
    assert!(
        output.status.success(),
        "xt_crosscheck.py failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let reference: Value =
        serde_json::from_str(&fs::read_to_string(&json).expect("read json")).expect("valid json");
    let model = XtModel::fit(&XtCounts::from_actions(&actions), FitConfig::default()).expect("converges");

    // Assert: surfaces, iteration count and ratings.
    assert_eq!(reference["socceraction_version"], "1.5.3");
    assert_eq!(reference["iterations"].as_u64(), Some(u64::from(model.iterations())));
    let mut worst = Worst::default();
    for (name, ours) in [
        ("xT", model.grid()),
        ("shot_prob", model.shot_probability()),
        ("move_prob", model.move_probability()),
        ("scoring_prob", model.scoring_probability()),
    ] {
        let theirs = &reference[name];
        assert_eq!(theirs.as_array().map(Vec::len), Some(GRID_WIDTH), "{name} rows");
        for (row, our_row) in ours.iter().enumerate() {
            assert_eq!(theirs[row].as_array().map(Vec::len), Some(GRID_LENGTH), "{name} row {row} columns");
            for (column, ours) in our_row.iter().enumerate() {
                let theirs = theirs[row][column].as_f64().expect("a number");
                worst.compare(&format!("{name}[{row}][{column}]"), *ours, theirs);
            }
        }
    }
    assert!(model.grid().iter().flatten().any(|v| *v > 0.0), "a real surface, not all zeros");

    let ratings = reference["ratings"].as_array().expect("ratings");
    assert_eq!(ratings.len(), actions.len());
    let mut rated = 0;
    for (i, (action, theirs)) in actions.iter().zip(ratings).enumerate() {
        match (model.rate(action), theirs.as_f64()) {
            (Some(ours), Some(theirs)) => {
                worst.compare(&format!("rating of action {i}"), ours, theirs);
                rated += 1;
            }
            (None, None) => assert!(theirs.is_null(), "action {i}: {theirs}"),
            (ours, _) => panic!("action {i} ({:?}): we rate {ours:?}, socceraction {theirs}", action.kind()),
        }
    }
    assert!(rated > actions.len() / 3, "most passes and dribbles are rated: {rated}");

    eprintln!(
        "socceraction cross-check: {} actions, {rated} rated, {} values compared, max abs difference {:e} ({}), {} not bit-identical",
        actions.len(),
        worst.compared,
        worst.difference,
        worst.at,
        worst.inexact
    );
    assert!(worst.difference <= TOLERANCE, "{} differs by {}", worst.at, worst.difference);
    fs::remove_dir_all(&dir).ok();
}

#[derive(Debug, Default)]
struct Worst {
    difference: f64,
    at: String,
    compared: usize,
    inexact: usize,
}

impl Worst {
    fn compare(&mut self, what: &str, ours: f64, theirs: f64) {
        let difference = (ours - theirs).abs();
        self.compared += 1;
        if ours.to_bits() != theirs.to_bits() {
            self.inexact += 1;
        }
        if difference > self.difference || self.at.is_empty() {
            self.difference = difference;
            self.at = what.to_owned();
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtest/baselines/python/xt_crosscheck.py")
}

fn scratch_dir() -> PathBuf {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let dir = env::temp_dir().join(format!("courtside-xt-crosscheck-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn running_in_ci() -> bool {
    env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// The actions as a SPADL CSV, each with its player's team.
fn spadl_csv(season: &Season, actions: &[Action]) -> Vec<u8> {
    let mut csv = Vec::new();
    spadl::write_actions(&mut csv, actions, |a| {
        season.player(a.player()).map_or(0, |p| u32::from(p.team().get()))
    })
    .expect("writing to memory");
    csv
}
