//! The synthetic season: deterministic for a seed, match by match, and
//! realistic enough in its mix of actions, positions, scores and minutes for
//! the models and benchmarks that use it.

use std::collections::BTreeMap;

use domain::season::{Season, SeasonConfig};
use domain::winprob::{ScoreEvent, Side};
use domain::xt::{ActionResult, ActionType, PITCH_LENGTH, PITCH_WIDTH, PlayerId};

fn small_season(seed: u64) -> Season {
    Season::new(SeasonConfig::new(6, 30, 2_000, seed).expect("valid config"))
}

#[test]
fn the_same_seed_gives_the_same_season_and_matches_stand_alone() {
    let a = small_season(7).play_all();
    let b = small_season(7).play_all();
    assert_eq!(a, b);
    assert_ne!(small_season(8).play_all().actions, a.actions);

    // Match 12 played on its own is the same as inside the season.
    let season = small_season(7);
    let alone = season.play(12);
    assert_eq!(alone.actions.as_slice(), &a.actions[12 * 2_000..13 * 2_000]);
    assert_eq!(alone.home_goals, a.results[12].home_goals);
}

#[test]
fn actions_are_on_the_pitch_in_time_order_and_credited_to_the_right_players() {
    let season = small_season(3);
    for index in 0..season.config().matches() {
        let played = season.play(index);
        assert_eq!(played.actions.len(), 2_000);
        let teams = [played.fixture.home(), played.fixture.away()];
        let mut last = 0;
        for action in &played.actions {
            assert_eq!(action.game(), Some(played.fixture.game()));
            let second = action.second().expect("timed");
            assert!(second >= last && second < 90 * 60);
            last = second;
            for p in [action.start(), action.end()] {
                assert!((0.0..=PITCH_LENGTH).contains(&p.x()) && (0.0..=PITCH_WIDTH).contains(&p.y()));
            }
            let player = season.player(action.player()).expect("a squad member");
            assert!(teams.contains(&player.team()), "{:?} is not in match {index}", action.player());
            // Everyone who acts is on the match's minutes sheet.
            assert!(played.minutes.iter().any(|(id, _)| *id == action.player()));
        }
    }
}

#[test]
fn the_action_mix_and_scores_look_like_football() {
    let record = small_season(7).play_all();
    let total = record.actions.len() as f64;
    let count = |kind: ActionType| record.actions.iter().filter(|a| a.kind() == kind).count() as f64;
    let passes = count(ActionType::Pass);
    let successful_passes = record
        .actions
        .iter()
        .filter(|a| a.kind() == ActionType::Pass && a.result() == ActionResult::Success)
        .count() as f64;
    let matches = record.results.len() as f64;

    assert!((0.5..0.75).contains(&(passes / total)), "passes {:.3}", passes / total);
    assert!(
        (0.7..0.9).contains(&(successful_passes / passes)),
        "pass success {:.3}",
        successful_passes / passes
    );
    assert!((0.05..0.2).contains(&(count(ActionType::Dribble) / total)), "dribbles");
    let crosses = count(ActionType::Cross) / matches;
    assert!((5.0..40.0).contains(&crosses), "crosses per match {crosses}");
    let shots = count(ActionType::Shot) / matches;
    assert!((10.0..35.0).contains(&shots), "shots per match {shots}");
    // The types xT must ignore are there too.
    for kind in
        [ActionType::ShotPenalty, ActionType::ThrowIn, ActionType::CornerCrossed, ActionType::Interception]
    {
        assert!(count(kind) > 0.0, "no {kind}");
    }

    let goals: f64 = record.results.iter().map(|r| f64::from(r.home_goals) + f64::from(r.away_goals)).sum();
    assert!((1.5..4.5).contains(&(goals / matches)), "goals per match {}", goals / matches);
}

#[test]
fn scores_events_and_minutes_agree() {
    let season = small_season(21);
    let record = season.play_all();
    let mut minutes_by_player: BTreeMap<PlayerId, u32> = BTreeMap::new();
    for index in 0..season.config().matches() {
        let played = season.play(index);
        let goals = |side: Side| {
            played
                .events
                .iter()
                .filter(|e| matches!(e, ScoreEvent::Goal { side: s, .. } if *s == side))
                .count()
        };
        assert_eq!(goals(Side::Home), usize::from(played.home_goals));
        assert_eq!(goals(Side::Away), usize::from(played.away_goals));
        assert!(played.events.windows(2).all(|w| w[0].minute() <= w[1].minute()));

        // Eleven players a side for 90 minutes, less the time of anyone
        // sent off.
        let reds: u32 =
            played.events.iter().filter(|e| matches!(e, ScoreEvent::RedCard { .. })).count() as u32;
        let played_minutes: u32 = played.minutes.iter().map(|(_, m)| m).sum();
        assert!(played_minutes <= 22 * 90 && played_minutes + reds * 90 >= 22 * 90, "match {index}");
        assert!(played.minutes.iter().all(|(_, m)| *m <= 90));
        for (player, m) in played.minutes {
            *minutes_by_player.entry(player).or_default() += m;
        }
    }
    assert_eq!(minutes_by_player, record.minutes);
}
