//! The durable event stream's entry for one football event: the protobuf
//! `courtside.v1.MatchEvent` the worker consumes. The one place the live
//! feed names generated types.

use domain::live::{CardColor, EventDetail, MatchEvent, MatchState, MoveKind, Team};

/// The protobuf entry of the durable event stream. `before` is the match's
/// state before the event (none for a kickoff).
pub(super) fn stream_entry(
    event: &MatchEvent,
    before: Option<&MatchState>,
    traceparent: String,
) -> contracts::v1::MatchEvent {
    use contracts::v1 as pb;
    let point = |p: domain::live::Point| pb::Point { x: p.x(), y: p.y() };
    let team = |t: &Team| pb::Team { id: t.id, name: t.name.clone() };
    let mut entry = pb::MatchEvent {
        match_id: event.match_id().to_string(),
        seq: event.seq(),
        minute: u32::from(event.minute()),
        timestamp_ms: event.timestamp_ms(),
        team_id: event.detail().team().unwrap_or(0),
        traceparent,
        format: contracts::STREAM_ENTRY_FORMAT,
        before: before.map(|state| pb::MatchContext {
            home_team_id: state.home.id,
            away_team_id: state.away.id,
            home_goals: u32::from(state.home_goals),
            away_goals: u32::from(state.away_goals),
            home_red_cards: u32::from(state.home_red_cards),
            away_red_cards: u32::from(state.away_red_cards),
        }),
        ..Default::default()
    };
    let kind = match event.detail() {
        EventDetail::Kickoff { home, away } => {
            entry.home = Some(team(home));
            entry.away = Some(team(away));
            pb::EventKind::Kickoff
        }
        EventDetail::Move { kind, player, start, end, success, .. } => {
            entry.player_id = Some(*player);
            entry.start = Some(point(*start));
            entry.end = Some(point(*end));
            entry.success = *success;
            match kind {
                MoveKind::Pass => pb::EventKind::Pass,
                MoveKind::Cross => pb::EventKind::Cross,
                MoveKind::Dribble => pb::EventKind::Dribble,
            }
        }
        EventDetail::Shot { player, start, on_target, .. } => {
            entry.player_id = Some(*player);
            entry.start = Some(point(*start));
            entry.on_target = *on_target;
            pb::EventKind::Shot
        }
        EventDetail::Goal { player, .. } => {
            entry.player_id = *player;
            pb::EventKind::Goal
        }
        EventDetail::Foul { player, .. } => {
            entry.player_id = Some(*player);
            pb::EventKind::Foul
        }
        EventDetail::Card { player, color, .. } => {
            entry.player_id = Some(*player);
            entry.card = match color {
                CardColor::Yellow => pb::CardColor::Yellow,
                CardColor::Red => pb::CardColor::Red,
            } as i32;
            pb::EventKind::Card
        }
        EventDetail::Substitution { player_in, player_out, .. } => {
            entry.player_in = *player_in;
            entry.player_out = *player_out;
            pb::EventKind::Substitution
        }
        EventDetail::PeriodEnd { period } => {
            entry.period = u32::from(*period);
            pb::EventKind::PeriodEnd
        }
    };
    entry.kind = kind as i32;
    entry
}
