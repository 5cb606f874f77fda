//! The top ten of a fixed small season's xT leaderboard, kept as a JSON
//! snapshot: any change to the season generator, the model or the ranking
//! shows up as a diff to review (`INSTA_UPDATE=always cargo test -p domain`
//! rewrites it; commit the new file only when the change is intended).
//!
//! The season and the fit use only exactly rounded float operations, so the
//! snapshot is the same on every platform.

use domain::season::{Season, SeasonConfig};
use domain::xt::{FitConfig, XtTally, leaderboard};
use serde_json::json;

/// Nine decimal places: far finer than any real difference between players,
/// coarse enough to read.
fn round9(value: f64) -> f64 {
    (value * 1e9).round() / 1e9
}

#[test]
fn top_ten_of_a_fixed_season() {
    let season = Season::new(SeasonConfig::new(6, 30, 2_000, 2024).expect("valid config"));
    let record = season.play_all();
    let tally = XtTally::from_actions(&record.actions);
    let (model, impacts) = tally.evaluate(FitConfig::default(), &record.minutes).expect("converges");

    let rows: Vec<_> = leaderboard(impacts, 10)
        .iter()
        .enumerate()
        .map(|(rank, impact)| {
            let player = season.player(impact.player()).expect("a squad member");
            json!({
                "rank": rank + 1,
                "player": impact.player().get(),
                "team": player.team().get(),
                "role": format!("{:?}", player.role()),
                "xt": round9(impact.xt()),
                "successful_moves": impact.moves(),
                "minutes": impact.minutes(),
                "xt_per_90": impact.per_90().map(round9),
            })
        })
        .collect();
    let snapshot = json!({
        "actions": record.actions.len(),
        "value_iterations": model.iterations(),
        "leaderboard": rows,
    });
    insta::assert_json_snapshot!("xt_leaderboard_top10", snapshot);
}
