//! Times xT on one million synthetic actions: our single-threaded Rust
//! against socceraction 1.5.3, fitting and rating the same data.
//!
//! A measurement, not a test. Run it with
//! `COURTSIDE_SOCCERACTION_PYTHON=VENV/bin/python cargo run -p domain --release --example xt_timing`
//! (without the variable it times only the Rust side). Optional first
//! argument: the number of actions (default 1,000,000).

use std::process::Command;
use std::time::Instant;
use std::{env, fs};

use domain::season::{Season, SeasonConfig};
use domain::xt::{Action, FitConfig, XtModel, XtTally};
use serde_json::Value;

fn main() {
    let total: u64 = env::args().nth(1).map(|a| a.parse().expect("a number of actions")).unwrap_or(1_000_000);
    let season = Season::new(SeasonConfig::with_total_actions(total, 1).expect("valid size"));
    let started = Instant::now();
    let record = season.play_all();
    println!("generated {} actions in {:.3} s", record.actions.len(), started.elapsed().as_secs_f64());

    // Best of three, single-threaded: counts, fit, rate every action, and
    // the player totals on top.
    let mut best = [f64::MAX; 3];
    let mut checksum = 0.0;
    for _ in 0..3 {
        let t0 = Instant::now();
        let tally = XtTally::from_actions(&record.actions);
        let model = XtModel::fit(tally.counts(), FitConfig::default()).expect("converges");
        let t1 = Instant::now();
        let ratings = model.rate_all(&record.actions);
        let t2 = Instant::now();
        let impacts = tally.players().impacts(&model, &record.minutes);
        let t3 = Instant::now();
        checksum = ratings.iter().flatten().sum::<f64>() + impacts.iter().map(|i| i.xt()).sum::<f64>();
        for (slot, took) in best.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2]) {
            *slot = slot.min(took.as_secs_f64());
        }
    }
    println!(
        "rust (1 thread): count+fit {:.4} s, rate {:.4} s, player totals {:.6} s (checksum {checksum:.6})",
        best[0], best[1], best[2]
    );

    let Some(python) = env::var_os("COURTSIDE_SOCCERACTION_PYTHON") else {
        println!("set COURTSIDE_SOCCERACTION_PYTHON to time socceraction too");
        return;
    };
    let dir = env::temp_dir().join(format!("courtside-xt-timing-{}", std::process::id()));
    fs::create_dir_all(&dir).expect("scratch dir");
    let csv = dir.join("actions.csv");
    let json = dir.join("socceraction.json");
    fs::write(&csv, spadl_csv(&season, &record.actions)).expect("write csv");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../loadtest/baselines/python/xt_crosscheck.py");
    let t0 = Instant::now();
    let status = Command::new(python).arg(script).arg(&csv).arg(&json).status().expect("run python");
    assert!(status.success(), "xt_crosscheck.py failed");
    let wall = t0.elapsed().as_secs_f64();
    let result: Value = serde_json::from_str(&fs::read_to_string(&json).expect("read json")).expect("json");
    let fit = result["fit_seconds"].as_f64().unwrap_or(f64::NAN);
    let rate = result["rate_seconds"].as_f64().unwrap_or(f64::NAN);
    println!("socceraction: fit {fit:.3} s, rate {rate:.3} s (process wall time with CSV load {wall:.1} s)");
    println!("fit+rate: socceraction / rust = {:.0}x", (fit + rate) / (best[0] + best[1]));

    // The same answers, too: the largest difference over grid and ratings.
    let model =
        XtModel::fit(XtTally::from_actions(&record.actions).counts(), FitConfig::default()).expect("fit");
    let mut worst: f64 = 0.0;
    for (row, ours) in model.grid().iter().enumerate() {
        for (column, ours) in ours.iter().enumerate() {
            worst = worst.max((ours - result["xT"][row][column].as_f64().unwrap_or(f64::NAN)).abs());
        }
    }
    let theirs = result["ratings"].as_array().expect("ratings");
    let mismatched_nulls = record
        .actions
        .iter()
        .zip(theirs)
        .filter(|(a, t)| {
            let ours = model.rate(a);
            if let (Some(o), Some(t)) = (ours, t.as_f64()) {
                worst = worst.max((o - t).abs());
            }
            ours.is_some() != t.is_number()
        })
        .count();
    println!("max abs difference {worst:e}, rated/unrated mismatches {mismatched_nulls}");
    fs::remove_dir_all(&dir).ok();
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
