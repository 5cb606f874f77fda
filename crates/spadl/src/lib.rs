//! SPADL actions as CSV, in socceraction's column names and units: a reader,
//! a writer, and `courtside xt` (Expected Threat fitted on your own file), so
//! anyone can reproduce the worker's numbers and compare them with
//! `socceraction`.
//!
//! Columns read: `type_name`, `result_name`, `start_x`, `start_y`, `end_x`,
//! `end_y`, `player_id` (others are ignored). Coordinates in metres on the
//! 105 × 68 pitch, each team attacking left to right, as SPADL stores them.
//! Counting and rating run as a map-reduce on a rayon pool of the chosen
//! size; the result does not depend on it.

use std::{
    io::{self, Read, Write},
    num::NonZeroUsize,
    path::Path,
};

use anyhow::{Context as _, bail};
use domain::xt::{Action, ActionResult, ActionType, FitConfig, PlayerId, Point, XtModel, XtTally};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Actions per parallel chunk.
const CHUNK: usize = 64 * 1024;

/// Stands in for a missing `player_id`: the action still counts for the
/// model, but no player is credited.
const NO_PLAYER: u32 = u32::MAX;

#[derive(Debug, Deserialize)]
struct Row {
    type_name: String,
    result_name: String,
    start_x: f64,
    start_y: f64,
    end_x: f64,
    end_y: f64,
    #[serde(default)]
    player_id: Option<String>,
}

/// What `courtside xt` writes.
#[derive(Debug, Serialize)]
pub struct XtReport {
    pub actions: usize,
    pub rated_moves: usize,
    pub iterations: u32,
    /// The xT surface, 12 rows of 16 cells, row 0 at the top of the pitch
    /// (high y), as socceraction's `xT` matrix.
    pub grid: Vec<Vec<f64>>,
    /// Players by xT added, best first.
    pub players: Vec<PlayerTotal>,
}

#[derive(Debug, Serialize)]
pub struct PlayerTotal {
    pub player: u32,
    pub xt: f64,
    pub moves: u64,
}

/// Reads SPADL actions from CSV. Errors name the line and column.
pub fn read_actions(input: impl Read) -> anyhow::Result<Vec<Action>> {
    let mut reader = csv::Reader::from_reader(input);
    let mut actions = Vec::new();
    for (index, row) in reader.deserialize::<Row>().enumerate() {
        // Line 1 is the header.
        let line = index + 2;
        let row = row.with_context(|| format!("line {line}"))?;
        let kind = ActionType::parse(&row.type_name).with_context(|| format!("line {line}: `type_name`"))?;
        let result =
            ActionResult::parse(&row.result_name).with_context(|| format!("line {line}: `result_name`"))?;
        let start = Point::new(row.start_x, row.start_y).with_context(|| format!("line {line}: start"))?;
        let end = Point::new(row.end_x, row.end_y).with_context(|| format!("line {line}: end"))?;
        let player = match row.player_id.as_deref().map(str::trim) {
            None | Some("" | "nan" | "NaN") => NO_PLAYER,
            Some(raw) => parse_player(raw).with_context(|| format!("line {line}: `player_id` {raw:?}"))?,
        };
        actions.push(Action::new(kind, result, start, end, PlayerId::new(player)));
    }
    Ok(actions)
}

/// SPADL exports written through pandas may carry ids as floats (`123.0`).
fn parse_player(raw: &str) -> anyhow::Result<u32> {
    if let Ok(id) = raw.parse::<u32>() {
        return Ok(id);
    }
    let value: f64 = raw.parse().context("not a number")?;
    if value.fract() != 0.0 || !(0.0..f64::from(NO_PLAYER)).contains(&value) {
        bail!("not a non-negative integer id");
    }
    Ok(value as u32)
}

/// Fits xT on `actions` and rates them, on a pool of `threads` threads.
pub fn fit(actions: &[Action], threads: NonZeroUsize, config: FitConfig) -> anyhow::Result<XtReport> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads.get()).build().context("cpu pool")?;
    pool.install(|| {
        let tally =
            actions.par_chunks(CHUNK).map(XtTally::from_actions).reduce(XtTally::default, XtTally::merge);
        let model = XtModel::fit(tally.counts(), config).context("xT value iteration")?;
        let rated_moves: usize =
            actions.par_chunks(CHUNK).map(|chunk| model.rate_all(chunk).iter().flatten().count()).sum();
        let mut players: Vec<PlayerTotal> = tally
            .players()
            .impacts(&model, &Default::default())
            .into_iter()
            .filter(|impact| impact.player() != PlayerId::new(NO_PLAYER))
            .map(|impact| PlayerTotal {
                player: player_number(impact.player()),
                xt: impact.xt(),
                moves: impact.moves(),
            })
            .collect();
        players.sort_by(|a, b| b.xt.total_cmp(&a.xt).then(a.player.cmp(&b.player)));
        Ok(XtReport {
            actions: actions.len(),
            rated_moves,
            iterations: model.iterations(),
            grid: model.grid().iter().map(|row| row.to_vec()).collect(),
            players,
        })
    })
}

/// The columns [`write_actions`] writes: socceraction's, in its order.
pub const COLUMNS: &str = "game_id,period_id,time_seconds,team_id,player_id,start_x,start_y,end_x,end_y,type_id,type_name,result_id,result_name";

/// Seconds in a half: an action's second of the match becomes SPADL's
/// period and time within it.
const HALF: u32 = 45 * 60;

/// Writes `actions` as a SPADL CSV with a header line. `team_of` names each
/// action's team (actions carry only the player). Floats are written with
/// Rust's shortest round-trip formatting, so a reader gets back the exact
/// doubles: socceraction's results can then match bit for bit.
pub fn write_actions(
    out: impl Write,
    actions: &[Action],
    team_of: impl Fn(&Action) -> u32,
) -> io::Result<()> {
    let mut out = io::BufWriter::new(out);
    writeln!(out, "{COLUMNS}")?;
    for action in actions {
        let (period, time) = match action.second() {
            Some(second) if second >= HALF => (2, second - HALF),
            Some(second) => (1, second),
            None => (1, 0),
        };
        writeln!(
            out,
            "{},{period},{time},{},{},{},{},{},{},{},{},{},{}",
            action.game().map_or(0, |g| g.get()),
            team_of(action),
            action.player(),
            action.start().x(),
            action.start().y(),
            action.end().x(),
            action.end().y(),
            action.kind().spadl_id(),
            action.kind().name(),
            action.result().spadl_id(),
            action.result().name(),
        )?;
    }
    out.flush()
}

fn player_number(id: PlayerId) -> u32 {
    // PlayerId displays as its number.
    id.to_string().parse().unwrap_or(NO_PLAYER)
}

/// `courtside xt --actions FILE --out FILE`.
pub fn run(actions: &Path, out: &Path, threads: NonZeroUsize) -> anyhow::Result<XtReport> {
    let file = std::fs::File::open(actions).with_context(|| format!("cannot open {}", actions.display()))?;
    let actions = read_actions(std::io::BufReader::new(file))?;
    let report = fit(&actions, threads, FitConfig::default())?;
    let json = serde_json::to_vec_pretty(&report).context("encode the report")?;
    std::fs::write(out, json).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use domain::season::{Season, SeasonConfig};

    use super::*;

    const CSV: &str = "game_id,type_name,result_name,start_x,start_y,end_x,end_y,player_id\n\
        1,pass,success,30.0,34.0,60.0,30.0,7\n\
        1,dribble,success,60.0,30.0,80.0,30.0,7.0\n\
        1,shot,success,95.0,34.0,105.0,34.0,9\n\
        1,pass,fail,50.0,20.0,70.0,20.0,\n";

    #[test]
    fn reads_spadl_rows_including_float_and_missing_player_ids() {
        let actions = read_actions(CSV.as_bytes()).expect("valid csv");
        assert_eq!(actions.len(), 4);
        assert_eq!(actions[1].player(), PlayerId::new(7));
        assert_eq!(actions[3].player(), PlayerId::new(NO_PLAYER));
    }

    #[test]
    fn bad_rows_are_reported_with_their_line() {
        let bad = "type_name,result_name,start_x,start_y,end_x,end_y,player_id\npass,success,30,34,60,30,7\nmoonwalk,success,1,1,2,2,7\n";
        let err = read_actions(bad.as_bytes()).expect_err("unknown type").to_string();
        assert!(err.starts_with("line 3: `type_name`"), "{err}");
        let bad =
            "type_name,result_name,start_x,start_y,end_x,end_y,player_id\npass,success,30,34,60,30,7.5\n";
        let err = format!("{:#}", read_actions(bad.as_bytes()).expect_err("fractional id"));
        assert!(err.contains("line 2: `player_id`"), "{err}");
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let season = Season::new(SeasonConfig::new(2, 4, 500, 3).expect("config")).play_all();
        let mut csv = Vec::new();
        write_actions(&mut csv, &season.actions, |_| 1).expect("write");
        assert!(csv.starts_with(COLUMNS.as_bytes()));
        let read = read_actions(csv.as_slice()).expect("read back");
        assert_eq!(read.len(), season.actions.len());
        for (read, written) in read.iter().zip(&season.actions) {
            assert_eq!(read.player(), written.player());
            assert_eq!(read.kind(), written.kind());
            assert_eq!(read.result(), written.result());
            assert_eq!(read.start().x().to_bits(), written.start().x().to_bits());
            assert_eq!(read.end().y().to_bits(), written.end().y().to_bits());
        }
    }

    #[test]
    fn the_result_does_not_depend_on_the_thread_count() {
        let season = Season::new(SeasonConfig::new(4, 6, 2_000, 11).expect("config")).play_all();
        let one = fit(&season.actions, NonZeroUsize::MIN, FitConfig::default()).expect("fit");
        let two =
            fit(&season.actions, NonZeroUsize::new(2).expect("two"), FitConfig::default()).expect("fit");
        assert_eq!(one.grid, two.grid);
        assert_eq!(one.rated_moves, two.rated_moves);
        let totals =
            |r: &XtReport| r.players.iter().map(|p| (p.player, p.xt.to_bits(), p.moves)).collect::<Vec<_>>();
        assert_eq!(totals(&one), totals(&two));
        assert!(!one.players.is_empty());
    }
}
