//! The event stream's edge: decodes the protobuf `courtside.v1.MatchEvent`
//! of each stream entry into what the analytics need, and turns a match's
//! events into SPADL actions.
//!
//! Like `service`, this is a wire boundary, so it is the only other module
//! that names generated types; everything behind it sees [`StreamEvent`] and
//! `domain::xt::Action`.

use contracts::v1 as pb;
use domain::xt::{Action, ActionError, ActionResult, ActionType, PlayerId, Point};
use prost::Message as _;
use store::StreamEntry;

/// One decoded stream entry, reduced to what rating and fitting use.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    pub match_id: String,
    pub seq: u64,
    pub team: u32,
    pub detail: StreamDetail,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StreamDetail {
    /// A pass, cross or dribble, as a SPADL action.
    Move(Action),
    /// A shot from `start`.
    Shot { player: PlayerId, start: Point },
    /// A goal for `team`; an own goal has no scorer. `before` is the score
    /// line just before it, when the stream entry carries it.
    Goal { scorer: Option<PlayerId>, before: Option<GoalContext> },
    /// Anything xT does not count.
    Other,
}

/// The match as it stood when a goal was scored, from the scorer's point of
/// view: enough to value the goal (win probability added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoalContext {
    pub minute: u16,
    pub home_goals: u16,
    pub away_goals: u16,
    pub home_red_cards: u16,
    pub away_red_cards: u16,
    /// Whether the scoring team plays at home.
    pub scored_by_home: bool,
}

/// Why a stream entry could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EntryError {
    #[error("stream entry {id} is not a match event: {reason}")]
    Undecodable { id: String, reason: String },
    #[error("stream entry {id}: `{field}` is missing")]
    Missing { id: String, field: &'static str },
    #[error("stream entry {id}: {source}")]
    Invalid { id: String, source: ActionError },
    /// Written by a newer release (a rolling deploy upgraded the gateway
    /// first). Not an error of the entry: a newer replica can read it, so it
    /// must be neither counted nor acknowledged here.
    #[error("stream entry {id} has format {format}, newer than this worker reads ({known})", known = contracts::STREAM_ENTRY_FORMAT)]
    NewerFormat { id: String, format: u32 },
}

/// The W3C trace context the gateway stored with an entry, if any.
pub fn traceparent(entry: &StreamEntry) -> Option<String> {
    let event = pb::MatchEvent::decode(entry.entry.as_ref()).ok()?;
    (!event.traceparent.is_empty()).then_some(event.traceparent)
}

/// Decodes one stream entry.
pub fn decode(entry: &StreamEntry) -> Result<StreamEvent, EntryError> {
    let id = || entry.id.clone();
    let event = pb::MatchEvent::decode(entry.entry.as_ref())
        .map_err(|err| EntryError::Undecodable { id: id(), reason: err.to_string() })?;
    // 0 is an entry from before the field existed: the layout of format 1.
    if event.format > contracts::STREAM_ENTRY_FORMAT {
        return Err(EntryError::NewerFormat { id: id(), format: event.format });
    }
    let point = |p: Option<pb::Point>, field: &'static str| {
        let p = p.ok_or(EntryError::Missing { id: id(), field })?;
        Point::new(p.x, p.y).map_err(|source| EntryError::Invalid { id: id(), source })
    };
    let player =
        |p: Option<u32>| p.map(PlayerId::new).ok_or(EntryError::Missing { id: id(), field: "player_id" });
    let move_kind = match event.kind() {
        pb::EventKind::Pass => Some(ActionType::Pass),
        pb::EventKind::Cross => Some(ActionType::Cross),
        pb::EventKind::Dribble => Some(ActionType::Dribble),
        _ => None,
    };
    let detail = match (event.kind(), move_kind) {
        (_, Some(kind)) => {
            let result = if event.success { ActionResult::Success } else { ActionResult::Fail };
            StreamDetail::Move(Action::new(
                kind,
                result,
                point(event.start, "start")?,
                point(event.end, "end")?,
                player(event.player_id)?,
            ))
        }
        (pb::EventKind::Shot, None) => {
            StreamDetail::Shot { player: player(event.player_id)?, start: point(event.start, "start")? }
        }
        (pb::EventKind::Goal, None) => StreamDetail::Goal {
            scorer: event.player_id.map(PlayerId::new),
            before: event.before.as_ref().and_then(|b| {
                let narrow = |v: u32| u16::try_from(v).ok();
                let scored_by_home = if event.team_id == b.home_team_id {
                    true
                } else if event.team_id == b.away_team_id {
                    false
                } else {
                    return None;
                };
                Some(GoalContext {
                    minute: narrow(event.minute)?,
                    home_goals: narrow(b.home_goals)?,
                    away_goals: narrow(b.away_goals)?,
                    home_red_cards: narrow(b.home_red_cards)?,
                    away_red_cards: narrow(b.away_red_cards)?,
                    scored_by_home,
                })
            }),
        },
        _ => StreamDetail::Other,
    };
    Ok(StreamEvent { match_id: event.match_id, seq: event.seq, team: event.team_id, detail })
}

/// Turns decoded events into SPADL actions for fitting, one match at a time
/// in sequence order (the stream's order within a match). A shot followed
/// directly by a goal of the same team is a successful shot; every other
/// shot failed. Feed events in stream order; call [`ActionBuilder::finish`]
/// at the end for shots still waiting for their next event.
#[derive(Debug, Default)]
pub struct ActionBuilder {
    /// The last shot of each match, until the match's next event says
    /// whether it scored: `(seq, team, action)`.
    pending_shots: std::collections::HashMap<String, (u64, u32, Action)>,
}

impl ActionBuilder {
    /// The actions `event` completes, appended to `out`, each with the
    /// match it belongs to.
    pub fn push(&mut self, event: &StreamEvent, out: &mut Vec<(String, Action)>) {
        if let Some((seq, team, shot)) = self.pending_shots.remove(&event.match_id) {
            let scored = matches!(event.detail, StreamDetail::Goal { .. })
                && event.team == team
                && event.seq == seq + 1;
            let result = if scored { ActionResult::Success } else { ActionResult::Fail };
            out.push((
                event.match_id.clone(),
                Action::new(ActionType::Shot, result, shot.start(), shot.end(), shot.player()),
            ));
        }
        match &event.detail {
            StreamDetail::Move(action) => out.push((event.match_id.clone(), *action)),
            StreamDetail::Shot { player, start } => {
                let shot = Action::new(ActionType::Shot, ActionResult::Fail, *start, *start, *player);
                self.pending_shots.insert(event.match_id.clone(), (event.seq, event.team, shot));
            }
            StreamDetail::Goal { .. } | StreamDetail::Other => {}
        }
    }

    /// The shots still pending, as failed shots.
    pub fn finish(self, out: &mut Vec<(String, Action)>) {
        let mut rest: Vec<_> = self.pending_shots.into_iter().collect();
        rest.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(rest.into_iter().map(|(match_id, (_, _, shot))| (match_id, shot)));
    }
}

/// Encodes a move as the gateway would append it to the stream; for tests
/// in this and other crates, so they need not build protobuf themselves.
#[allow(clippy::too_many_arguments)]
pub fn encode_move(
    match_id: &str,
    seq: u64,
    team: u32,
    player: u32,
    start: (f64, f64),
    end: (f64, f64),
    success: bool,
) -> Vec<u8> {
    pb::MatchEvent {
        match_id: match_id.to_owned(),
        seq,
        team_id: team,
        kind: pb::EventKind::Pass as i32,
        player_id: Some(player),
        start: Some(pb::Point { x: start.0, y: start.1 }),
        end: Some(pb::Point { x: end.0, y: end.1 }),
        success,
        format: contracts::STREAM_ENTRY_FORMAT,
        ..Default::default()
    }
    .encode_to_vec()
}

/// Encodes a shot (and the goal that may follow it) as the gateway would.
pub fn encode_shot(match_id: &str, seq: u64, team: u32, player: u32, start: (f64, f64)) -> Vec<u8> {
    pb::MatchEvent {
        match_id: match_id.to_owned(),
        seq,
        team_id: team,
        kind: pb::EventKind::Shot as i32,
        player_id: Some(player),
        start: Some(pb::Point { x: start.0, y: start.1 }),
        on_target: true,
        format: contracts::STREAM_ENTRY_FORMAT,
        ..Default::default()
    }
    .encode_to_vec()
}

pub fn encode_goal(match_id: &str, seq: u64, team: u32, player: u32) -> Vec<u8> {
    pb::MatchEvent {
        match_id: match_id.to_owned(),
        seq,
        team_id: team,
        kind: pb::EventKind::Goal as i32,
        player_id: Some(player),
        format: contracts::STREAM_ENTRY_FORMAT,
        ..Default::default()
    }
    .encode_to_vec()
}

/// A goal entry with the score line before it, as the gateway writes one;
/// team 1 plays at home, team 2 away.
pub fn encode_goal_in_context(
    match_id: &str,
    seq: u64,
    team: u32,
    player: u32,
    minute: u32,
    score_before: (u32, u32),
) -> Vec<u8> {
    pb::MatchEvent {
        match_id: match_id.to_owned(),
        seq,
        minute,
        team_id: team,
        kind: pb::EventKind::Goal as i32,
        player_id: Some(player),
        before: Some(pb::MatchContext {
            home_team_id: 1,
            away_team_id: 2,
            home_goals: score_before.0,
            away_goals: score_before.1,
            ..Default::default()
        }),
        format: contracts::STREAM_ENTRY_FORMAT,
        ..Default::default()
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn entry(bytes: Vec<u8>) -> StreamEntry {
        StreamEntry { id: "1-0".into(), log: "m".into(), seq: 1, entry: Bytes::from(bytes) }
    }

    #[test]
    fn a_move_decodes_to_a_spadl_action() {
        let event =
            decode(&entry(encode_move("m", 3, 1, 9, (10.0, 20.0), (50.0, 30.0), true))).expect("decodes");
        assert_eq!((event.match_id.as_str(), event.seq, event.team), ("m", 3, 1));
        let StreamDetail::Move(action) = event.detail else { panic!("not a move: {event:?}") };
        assert!(action.is_successful_move());
        assert_eq!(action.player(), PlayerId::new(9));
        assert_eq!((action.end().x(), action.end().y()), (50.0, 30.0));
    }

    #[test]
    fn bad_entries_are_reported_not_guessed() {
        assert!(matches!(decode(&entry(vec![0xff, 0xff])), Err(EntryError::Undecodable { .. })));
        let no_start =
            pb::MatchEvent { kind: pb::EventKind::Pass as i32, player_id: Some(1), ..Default::default() };
        assert!(matches!(
            decode(&entry(no_start.encode_to_vec())),
            Err(EntryError::Missing { field: "start", .. })
        ));
        let off_pitch = encode_move("m", 1, 1, 1, (1e6, 0.0), (0.0, 0.0), true);
        assert!(matches!(decode(&entry(off_pitch)), Err(EntryError::Invalid { .. })));
    }

    #[test]
    fn entries_from_before_the_format_field_still_decode() {
        let current = encode_move("m", 3, 1, 9, (10.0, 20.0), (50.0, 30.0), true);
        let mut previous = pb::MatchEvent::decode(current.as_slice()).expect("decodes");
        assert_eq!(previous.format, contracts::STREAM_ENTRY_FORMAT, "helpers write the current format");
        // What a release without the field wrote: the same entry, format unset.
        previous.format = 0;
        let from_previous = decode(&entry(previous.encode_to_vec())).expect("the previous format decodes");
        assert_eq!(from_previous, decode(&entry(current)).expect("the current format decodes"));
    }

    #[test]
    fn entries_newer_than_the_reader_are_refused_not_guessed() {
        let mut newer =
            pb::MatchEvent::decode(encode_move("m", 3, 1, 9, (10.0, 20.0), (50.0, 30.0), true).as_slice())
                .expect("decodes");
        newer.format = contracts::STREAM_ENTRY_FORMAT + 1;
        let err = decode(&entry(newer.encode_to_vec())).expect_err("a newer format");
        assert_eq!(
            err,
            EntryError::NewerFormat { id: "1-0".into(), format: contracts::STREAM_ENTRY_FORMAT + 1 }
        );
        assert!(err.to_string().contains("newer than this worker reads"), "{err}");
    }

    #[test]
    fn a_shot_scores_only_when_its_goal_follows_it() {
        let events: Vec<StreamEvent> = [
            encode_shot("a", 1, 1, 7, (95.0, 34.0)),
            encode_goal("a", 2, 1, 7),
            encode_shot("a", 3, 2, 8, (90.0, 30.0)),
            encode_shot("b", 1, 1, 5, (90.0, 30.0)),
            encode_move("a", 4, 2, 8, (10.0, 10.0), (20.0, 10.0), true),
        ]
        .into_iter()
        .map(|bytes| decode(&entry(bytes)).expect("decodes"))
        .collect();
        let mut builder = ActionBuilder::default();
        let mut actions = Vec::new();
        for event in &events {
            builder.push(event, &mut actions);
        }
        builder.finish(&mut actions);
        let summary: Vec<(&str, ActionType, ActionResult)> =
            actions.iter().map(|(m, a)| (m.as_str(), a.kind(), a.result())).collect();
        assert_eq!(
            summary,
            vec![
                ("a", ActionType::Shot, ActionResult::Success),
                ("a", ActionType::Shot, ActionResult::Fail),
                ("a", ActionType::Pass, ActionResult::Success),
                ("b", ActionType::Shot, ActionResult::Fail),
            ]
        );
    }
}
