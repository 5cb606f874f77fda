//! Pure valuations of stream events, shared by the stream consumer (one
//! event at a time) and the batch recompute (the whole stream): no I/O, no
//! store, so both count a goal the same way.

use domain::winprob::{ScoreState, Side, WinProbModel};

use crate::stream::GoalContext;

/// How much a goal raised its team's chance of winning, from the score line
/// just before it (closed form: microseconds, so it runs with the rating).
/// `None` when the entry does not say, or the state is out of the model's
/// range.
pub fn win_probability_added(before: &GoalContext) -> Option<f64> {
    let state = ScoreState::new(
        before.minute,
        before.home_goals,
        before.away_goals,
        u8::try_from(before.home_red_cards).ok()?,
        u8::try_from(before.away_red_cards).ok()?,
    )
    .ok()?;
    let side = if before.scored_by_home { Side::Home } else { Side::Away };
    WinProbModel::default().win_probability_added(&state, side).ok()
}
