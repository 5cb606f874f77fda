//! Expected Threat: a fit small enough to check by hand, socceraction's
//! conventions one by one, and the map-reduce promise that chunking, merge
//! order and input order never change a count, a surface or a player total.

use std::collections::BTreeMap;

use domain::rng::Rng;
use domain::season::{Season, SeasonConfig};
use domain::xt::{
    Action, ActionResult, ActionType, FitConfig, FitError, PlayerId, PlayerMoves, Point, XtCounts, XtModel,
    XtTally, leaderboard, player_totals,
};
use proptest::prelude::*;

const A: (f64, f64) = (5.0, 30.0);
const B: (f64, f64) = (100.0, 34.5);

fn action(kind: ActionType, result: ActionResult, start: (f64, f64), end: (f64, f64), player: u32) -> Action {
    let start = Point::new(start.0, start.1).expect("valid start");
    let end = Point::new(end.0, end.1).expect("valid end");
    Action::new(kind, result, start, end, PlayerId::new(player))
}

/// Cell B: four shots, one goal, nothing else. Cell A: three passes (two
/// reach B, one fails) and one missed shot, plus actions xT must ignore.
fn hand_checked_actions() -> Vec<Action> {
    use ActionResult::{Fail, Offside, Success};
    use ActionType::{Pass, Shot, ShotFreekick, ShotPenalty, TakeOn, ThrowIn};
    vec![
        action(Shot, Success, B, B, 9),
        action(Shot, Fail, B, B, 9),
        action(Shot, Fail, B, B, 9),
        action(Shot, Fail, B, B, 9),
        action(Pass, Success, A, B, 1),
        action(Pass, Success, A, B, 2),
        action(Pass, Fail, A, B, 1),
        action(Shot, Fail, A, B, 1),
        // Neither shots nor moves for xT.
        action(ShotPenalty, Success, A, B, 1),
        action(ShotFreekick, Success, B, B, 9),
        action(TakeOn, Success, A, A, 1),
        action(ThrowIn, Success, A, B, 2),
        // A pass flagged offside is a move attempt that did not succeed:
        // socceraction counts it in the denominator only. Placed in a third
        // cell so it does not disturb the arithmetic above.
        action(Pass, Offside, (50.0, 10.0), B, 3),
    ]
}

fn small_season(seed: u64) -> (Vec<Action>, BTreeMap<PlayerId, u32>) {
    let season = Season::new(SeasonConfig::new(4, 4, 300, seed).expect("valid config"));
    let record = season.play_all();
    (record.actions, record.minutes)
}

#[test]
fn fit_matches_the_hand_computed_surface() {
    let counts = XtCounts::from_actions(&hand_checked_actions());
    assert_eq!((counts.move_count(), counts.shot_count(), counts.goal_count()), (4, 5, 1));

    let model = XtModel::fit(&counts, FitConfig::default()).expect("converges");
    let value = |p: (f64, f64)| model.value_at(Point::new(p.0, p.1).expect("valid"));
    // B: always shoots, scores one in four.
    assert_eq!(value(B), 0.25);
    // A: moves 3 times in 4, and 2 of 3 moves reach B: 0.75 * 2/3 * 0.25.
    assert_eq!(value(A), 0.75 * (2.0 / 3.0) * 0.25);
    // Iteration 1 values B, iteration 2 passes it on to A, iteration 3
    // changes nothing and stops.
    assert_eq!(model.iterations(), 3);
    // Everything else is zero, including the offside pass's cell.
    let nonzero = model.grid().iter().flatten().filter(|v| **v != 0.0).count();
    assert_eq!(nonzero, 2);
}

#[test]
fn only_successful_moves_are_rated() {
    let actions = hand_checked_actions();
    let model = XtModel::fit(&XtCounts::from_actions(&actions), FitConfig::default()).expect("converges");
    let ratings = model.rate_all(&actions);
    let rated: Vec<(usize, f64)> =
        ratings.iter().enumerate().filter_map(|(i, r)| r.map(|r| (i, r))).collect();
    let gain = 0.25 - 0.75 * (2.0 / 3.0) * 0.25;
    assert_eq!(rated, vec![(4, gain), (5, gain)]);

    // Every type other than pass, dribble and cross goes unrated, whatever
    // its result; those three are rated only on success.
    for kind in ActionType::ALL {
        for result in ActionResult::ALL {
            let rating = model.rate(&action(kind, result, A, B, 1));
            let expected = kind.is_move() && result == ActionResult::Success;
            assert_eq!(rating.is_some(), expected, "{kind} {result}");
        }
    }
    assert_eq!(
        ActionType::ALL.iter().filter(|k| k.is_move()).map(|k| k.name()).collect::<Vec<_>>(),
        ["pass", "cross", "dribble"]
    );
}

#[test]
fn the_grid_is_ordered_like_socceractions_matrix() {
    // One goal-scoring shot in the bottom-right corner cell (high x, low y).
    let actions = vec![action(ActionType::Shot, ActionResult::Success, (104.0, 1.0), (105.0, 34.0), 1)];
    let model = XtModel::fit(&XtCounts::from_actions(&actions), FitConfig::default()).expect("converges");
    let grid = model.grid();
    assert_eq!(grid[11][15], 1.0, "last row is the bottom (low y), last column the far goal line");
    assert_eq!(grid.iter().flatten().sum::<f64>(), 1.0);
    assert_eq!(model.shot_probability()[11][15], 1.0);
    assert_eq!(model.scoring_probability()[11][15], 1.0);
    assert_eq!(model.move_probability()[11][15], 0.0);
}

#[test]
fn eps_of_one_or_more_means_no_iteration_like_socceraction() {
    let counts = XtCounts::from_actions(&hand_checked_actions());
    let model = XtModel::fit(&counts, FitConfig::new(1.0, 10).expect("valid")).expect("fits");
    assert_eq!(model.iterations(), 0);
    assert!(model.grid().iter().flatten().all(|v| *v == 0.0));
}

#[test]
fn a_fit_that_needs_more_iterations_than_allowed_fails() {
    let counts = XtCounts::from_actions(&hand_checked_actions());
    let result = XtModel::fit(&counts, FitConfig::new(1e-5, 2).expect("valid"));
    assert_eq!(result, Err(FitError::NotConverged(2)));
}

#[test]
fn player_totals_equal_the_sum_of_their_ratings() {
    let (actions, minutes) = small_season(11);
    let model = XtModel::fit(&XtCounts::from_actions(&actions), FitConfig::default()).expect("converges");
    let totals = player_totals(&model, &actions, &minutes);
    let mut summed: BTreeMap<PlayerId, (f64, u64)> = BTreeMap::new();
    for a in &actions {
        if let Some(rating) = model.rate(a) {
            let entry = summed.entry(a.player()).or_default();
            entry.0 += rating;
            entry.1 += 1;
        }
    }
    assert_eq!(totals.len(), summed.len());
    for impact in &totals {
        let (sum, moves) = summed[&impact.player()];
        assert!((impact.xt() - sum).abs() < 1e-12, "{}: {} vs {sum}", impact.player(), impact.xt());
        assert_eq!(impact.moves(), moves);
        let minutes = minutes[&impact.player()];
        assert_eq!(impact.minutes(), Some(minutes));
        assert_eq!(impact.per_90(), Some(impact.xt() * 90.0 / f64::from(minutes)));
    }
}

#[test]
fn leaderboard_is_highest_first_with_ties_by_player_id() {
    let (actions, minutes) = small_season(5);
    let model = XtModel::fit(&XtCounts::from_actions(&actions), FitConfig::default()).expect("converges");
    let totals = player_totals(&model, &actions, &minutes);
    let board = leaderboard(totals.clone(), 5);
    assert_eq!(board.len(), 5);
    assert!(board.windows(2).all(|w| w[0].xt() >= w[1].xt()));
    let best = totals.iter().map(|i| i.xt()).fold(f64::MIN, f64::max);
    assert_eq!(board[0].xt(), best);

    // Equal totals: the lower id first.
    let one = action(ActionType::Pass, ActionResult::Success, A, B, 7);
    let other = action(ActionType::Pass, ActionResult::Success, A, B, 3);
    let tied = player_totals(&model, &[one, other], &BTreeMap::new());
    let board = leaderboard(tied, 10);
    assert_eq!(board.iter().map(|i| i.player().get()).collect::<Vec<_>>(), [3, 7]);
    assert_eq!(board[0].per_90(), None, "no minutes, no per-90");
}

/// Splits `actions` at the given cut points (taken modulo the length).
fn chunks(actions: &[Action], cuts: &[usize]) -> Vec<Vec<Action>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (actions.len() + 1)).collect();
    cuts.push(0);
    cuts.push(actions.len());
    cuts.sort_unstable();
    cuts.windows(2).map(|w| actions[w[0]..w[1]].to_vec()).collect()
}

fn shuffled(actions: &[Action], seed: u64) -> Vec<Action> {
    let mut out = actions.to_vec();
    let mut rng = Rng::new(seed);
    for i in (1..out.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        out.swap(i, j);
    }
    out
}

/// Merges tallies pairwise, like a parallel reduce tree, rather than left
/// to right.
fn tree_merge(mut tallies: Vec<XtTally>) -> XtTally {
    while tallies.len() > 1 {
        let mut next = Vec::with_capacity(tallies.len().div_ceil(2));
        let mut iter = tallies.into_iter();
        while let Some(left) = iter.next() {
            next.push(match iter.next() {
                Some(right) => right.merge(left),
                None => left,
            });
        }
        tallies = next;
    }
    tallies.pop().unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn chunking_merge_order_and_input_order_change_nothing(
        season_seed in 0u64..1_000,
        shuffle_seed in any::<u64>(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let (actions, minutes) = small_season(season_seed);
        let whole = XtTally::from_actions(&actions);
        let (model, impacts) = whole.evaluate(FitConfig::default(), &minutes).expect("converges");

        // Shuffled input, cut anywhere, merged as a tree.
        let reordered = shuffled(&actions, shuffle_seed);
        let pieces = chunks(&reordered, &cuts);
        let tree = tree_merge(pieces.iter().map(|c| XtTally::from_actions(c)).collect());
        prop_assert_eq!(tree.counts(), whole.counts());
        let (tree_model, tree_impacts) = tree.evaluate(FitConfig::default(), &minutes).expect("converges");
        prop_assert_eq!(tree_model.grid(), model.grid());
        // Bit-identical totals, not merely close ones.
        let bits = |v: &[domain::xt::PlayerImpact]| -> Vec<(u32, u64)> {
            v.iter().map(|i| (i.player().get(), i.xt().to_bits())).collect()
        };
        prop_assert_eq!(bits(&tree_impacts), bits(&impacts));

        // The separate halves merge the same way, left to right too.
        let counts = pieces.iter().map(|c| XtCounts::from_actions(c)).fold(XtCounts::default(), XtCounts::merge);
        prop_assert_eq!(&counts, whole.counts());
        let moves = pieces.iter().map(|c| PlayerMoves::from_actions(c)).fold(PlayerMoves::default(), PlayerMoves::merge);
        prop_assert_eq!(bits(&moves.impacts(&model, &minutes)), bits(&impacts));
    }
}
