//! Win probability: the closed form is a probability distribution for every
//! state and configuration, the simulation agrees with it, and both move the
//! way football says they should.

use domain::winprob::{
    MAX_MINUTE, MonteCarlo, ScoreEvent, ScoreState, Side, WinProbConfig, WinProbError, WinProbModel,
};
use domain::xt::PlayerId;
use proptest::prelude::*;

fn state(minute: u16, home: u16, away: u16, home_reds: u8, away_reds: u8) -> ScoreState {
    ScoreState::new(minute, home, away, home_reds, away_reds).expect("valid state")
}

fn any_state() -> impl Strategy<Value = ScoreState> {
    (0..=MAX_MINUTE, 0u16..=6, 0u16..=6, 0u8..=4, 0u8..=4).prop_map(
        |(minute, home, away, home_reds, away_reds)| state(minute, home, away, home_reds, away_reds),
    )
}

fn any_model() -> impl Strategy<Value = WinProbModel> {
    (0.2f64..=6.0, 1.0f64..=1.5, 0.05f64..=1.0, 1.0f64..=1.6, 0.0f64..=15.0).prop_map(
        |(goals_per_90, home_advantage, red_card_own_factor, red_card_opponent_factor, added_minutes)| {
            WinProbModel::new(WinProbConfig {
                goals_per_90,
                home_advantage,
                red_card_own_factor,
                red_card_opponent_factor,
                added_minutes,
            })
            .expect("in range")
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn closed_form_is_a_probability_distribution(model in any_model(), state in any_state()) {
        let outcome = model.closed_form(&state);
        for p in [outcome.home_win(), outcome.draw(), outcome.away_win()] {
            prop_assert!((0.0..=1.0).contains(&p), "{p} out of [0, 1]");
        }
        let total = outcome.home_win() + outcome.draw() + outcome.away_win();
        prop_assert!((total - 1.0).abs() < 1e-9, "sum {total}");
    }

    #[test]
    fn a_goal_never_lowers_the_scorers_chances(model in any_model(), state in any_state(), home in any::<bool>()) {
        let side = if home { Side::Home } else { Side::Away };
        let added = model.win_probability_added(&state, side).expect("room for a goal");
        prop_assert!(added >= -1e-12, "{added}");
        prop_assert!(added <= 1.0);
    }
}

proptest! {
    // Each case simulates 200,000 endings; a few dozen cases cover the
    // space without slowing the suite.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The tolerance is six standard errors of a proportion estimated from
    /// n samples, sqrt(p (1 - p) / n), plus float slack: a correct simulation
    /// fails it about once in five hundred million checks.
    #[test]
    fn simulation_agrees_with_the_closed_form(model in any_model(), state in any_state(), seed in any::<u64>()) {
        let samples = 200_000;
        let exact = model.closed_form(&state);
        let simulated = model.simulate(&state, MonteCarlo::new(samples, seed).expect("valid run"));
        for (p, q) in [
            (exact.home_win(), simulated.home_win()),
            (exact.draw(), simulated.draw()),
            (exact.away_win(), simulated.away_win()),
        ] {
            let tolerance = 6.0 * (p * (1.0 - p) / samples as f64).sqrt() + 1e-9;
            prop_assert!((p - q).abs() <= tolerance, "closed form {p}, simulated {q}, tolerance {tolerance}");
        }
    }
}

#[test]
fn kick_off_odds_look_like_a_real_league() {
    // Long-run big-league shares are about 45 % home wins, 26 % draws and
    // 29 % away wins.
    let outcome = WinProbModel::default().closed_form(&ScoreState::kick_off());
    assert!((0.40..0.50).contains(&outcome.home_win()), "{outcome:?}");
    assert!((0.22..0.30).contains(&outcome.draw()), "{outcome:?}");
    assert!((0.25..0.33).contains(&outcome.away_win()), "{outcome:?}");
}

#[test]
fn on_neutral_ground_the_sides_are_mirror_images() {
    let model =
        WinProbModel::new(WinProbConfig { home_advantage: 1.0, ..WinProbConfig::default() }).expect("valid");
    let a = model.closed_form(&state(60, 2, 1, 1, 0));
    let b = model.closed_form(&state(60, 1, 2, 0, 1));
    assert!((a.home_win() - b.away_win()).abs() < 1e-12);
    assert!((a.draw() - b.draw()).abs() < 1e-12);
    assert!((a.away_win() - b.home_win()).abs() < 1e-12);
}

#[test]
fn leads_time_and_red_cards_move_the_odds_the_right_way() {
    let model = WinProbModel::default();
    let home_win = |s: ScoreState| model.closed_form(&s).home_win();
    assert!(home_win(state(30, 1, 0, 0, 0)) > home_win(state(30, 0, 0, 0, 0)));
    assert!(home_win(state(30, 2, 0, 0, 0)) > home_win(state(30, 1, 0, 0, 0)));
    // The same lead is worth more later.
    assert!(home_win(state(80, 1, 0, 0, 0)) > home_win(state(30, 1, 0, 0, 0)));
    // A red card hurts the side that gets it.
    assert!(home_win(state(30, 0, 0, 1, 0)) < home_win(state(30, 0, 0, 0, 0)));
    assert!(home_win(state(30, 0, 0, 0, 1)) > home_win(state(30, 0, 0, 0, 0)));
    // Once play is over the score decides.
    let over = model.closed_form(&state(MAX_MINUTE, 1, 1, 0, 0));
    assert_eq!((over.home_win(), over.draw(), over.away_win()), (0.0, 1.0, 0.0));
}

#[test]
fn simulation_is_deterministic_and_blocks_merge_exactly() {
    let model = WinProbModel::default();
    let s = state(55, 1, 1, 0, 1);
    let run = MonteCarlo::new(100_000, 42).expect("valid run");
    let whole = model.simulate_blocks(&s, run, 0..run.blocks());
    assert_eq!(whole.samples(), 100_000);
    assert_eq!(model.simulate(&s, run), whole.outcome());
    assert_eq!(model.simulate(&s, run), model.simulate(&s, run));

    // Any split of the blocks, merged in any order, gives the same counts.
    let split = run.blocks() / 3;
    let merged =
        model.simulate_blocks(&s, run, split..run.blocks()).merge(model.simulate_blocks(&s, run, 0..split));
    assert_eq!(merged, whole);

    let other_seed = model.simulate(&s, MonteCarlo::new(100_000, 43).expect("valid run"));
    assert_ne!(other_seed, whole.outcome(), "the seed matters");
}

#[test]
fn a_late_winner_adds_more_than_an_early_one_and_a_rout_adds_little() {
    let model = WinProbModel::default();
    let late = model.win_probability_added(&state(88, 1, 1, 0, 0), Side::Home).expect("valid");
    let early = model.win_probability_added(&state(10, 1, 1, 0, 0), Side::Home).expect("valid");
    let rout = model.win_probability_added(&state(70, 5, 0, 0, 0), Side::Home).expect("valid");
    assert!(late > early && early > 0.0, "late {late}, early {early}");
    assert!(late > 0.5, "a goal at 88 minutes from 1-1 nearly wins it: {late}");
    assert!(rout < 0.01, "{rout}");
}

#[test]
fn goal_credits_follow_the_match_and_reject_disorder() {
    let model = WinProbModel::default();
    let (striker, winger) = (PlayerId::new(9), PlayerId::new(11));
    let events = [
        ScoreEvent::Goal { minute: 20, side: Side::Away, scorer: Some(winger) },
        ScoreEvent::RedCard { minute: 50, side: Side::Away },
        ScoreEvent::Goal { minute: 70, side: Side::Home, scorer: Some(striker) },
        ScoreEvent::Goal { minute: 89, side: Side::Home, scorer: Some(striker) },
    ];
    let credits = model.goal_credits(&events).expect("in order");
    assert_eq!(credits.len(), 3);
    assert_eq!(credits[0].win_probability_added, {
        model
            .win_probability_added(&ScoreState::kick_off().at_minute(20).expect("valid"), Side::Away)
            .expect("ok")
    });
    // The last goal is credited against 1-1 at minute 89 with the away
    // side a man down.
    let expected = model.win_probability_added(&state(89, 1, 1, 0, 1), Side::Home).expect("ok");
    assert_eq!(credits[2].win_probability_added, expected);
    assert_eq!(credits[2].scorer, Some(striker));

    // An own goal changes the score but credits nobody.
    let own_goal = [ScoreEvent::Goal { minute: 5, side: Side::Home, scorer: None }];
    let credits = model.goal_credits(&own_goal).expect("in order");
    assert_eq!(credits[0].scorer, None);
    assert!(credits[0].win_probability_added > 0.0);

    let disorder = [
        ScoreEvent::Goal { minute: 30, side: Side::Home, scorer: Some(striker) },
        ScoreEvent::Goal { minute: 10, side: Side::Home, scorer: Some(striker) },
    ];
    assert_eq!(model.goal_credits(&disorder), Err(WinProbError::EventsOutOfOrder { earlier: 30, later: 10 }));
}
