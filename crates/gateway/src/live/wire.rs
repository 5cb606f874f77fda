//! The JSON shapes of the live feed: what publishers send (parsed strictly:
//! objects only, unknown fields refused), what readers and subscribers
//! receive, and the stored match state with its format number. Conversions
//! to and from `domain` types live here, so handlers never build JSON by
//! hand and the domain never sees serde.

use anyhow::Context as _;
use domain::live::{CardColor, EventDetail, MatchEvent, MatchId, MatchState, MatchStatus, RawEvent, Team};
use serde::{Deserialize, Serialize};

use super::strict::{objects_only, serialize_as_derived};

serialize_as_derived!(PointBody);
serialize_as_derived!(TeamBody);
objects_only!(EventBody, "an event object");
objects_only!(PointBody, "a point object, {\"x\": .., \"y\": ..}");
objects_only!(TeamBody, "a team object, {\"id\": .., \"name\": ..}");

/// An event as a publisher sends it. Unknown fields are rejected, so a typo
/// (`sucess`) is an error rather than a silently missing value.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct EventBody {
    pub match_id: Option<String>,
    pub seq: Option<u64>,
    pub minute: Option<u16>,
    /// Milliseconds since the Unix epoch; the gateway's clock if absent.
    pub ts: Option<i64>,
    pub kind: Option<String>,
    pub team: Option<u32>,
    pub player: Option<u32>,
    pub start: Option<PointBody>,
    pub end: Option<PointBody>,
    pub success: Option<bool>,
    pub on_target: Option<bool>,
    pub card: Option<String>,
    pub player_in: Option<u32>,
    pub player_out: Option<u32>,
    pub period: Option<u8>,
    pub home: Option<TeamBody>,
    pub away: Option<TeamBody>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct PointBody {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(remote = "Self", deny_unknown_fields)]
pub struct TeamBody {
    pub id: u32,
    pub name: String,
}

/// A `POST /v1/events` body, parsed: one event, or a JSON array of them.
#[derive(Debug, Clone, PartialEq)]
pub enum Publication {
    One(MatchEvent),
    Many(Vec<MatchEvent>),
}

/// Parses a `POST /v1/events` body. A body whose first non-blank byte is `[`
/// is an array, parsed whole: its first malformed element fails it, named by
/// position. `now_ms` stands in for a missing timestamp. The error is the
/// message for the client.
///
/// The handler calls this and nothing else to read the body, so the fuzz
/// target `publish_body` exercises exactly what a publisher reaches.
pub fn parse_publication(body: &[u8], now_ms: i64) -> Result<Publication, String> {
    let is_array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
    if !is_array {
        return parse_event(body, now_ms).map(Publication::One);
    }
    let bodies: Vec<EventBody> = deserialize(body)?;
    bodies
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            MatchEvent::parse(body.into(), now_ms).map_err(|err| format!("event [{index}]: {err}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Publication::Many)
}

/// Parses one event object: a single-event body, or one NDJSON line.
pub fn parse_event(body: &[u8], now_ms: i64) -> Result<MatchEvent, String> {
    let body: EventBody = deserialize(body)?;
    MatchEvent::parse(body.into(), now_ms).map_err(|err| err.to_string())
}

/// Parses one line of a `POST /v1/events/bulk` body (without its `\n`):
/// `None` for a blank line, which is skipped rather than reported.
pub fn parse_line(line: &[u8], now_ms: i64) -> Option<Result<MatchEvent, String>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(parse_event(line, now_ms))
}

/// JSON with the path of the offending field in the message.
fn deserialize<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    // Tracking the path cost a sixth of a bulk line's CPU, so it is paid
    // only for a body that fails: the second pass finds the same error.
    if let Ok(value) = serde_json::from_slice(body) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() || matches!(path.as_str(), "" | "." | "?") {
            format!("invalid JSON: {inner}")
        } else {
            format!("`{path}`: {inner}")
        }
    })?;
    deserializer.end().map_err(|err| format!("invalid JSON: {err}"))?;
    Ok(value)
}

impl From<EventBody> for RawEvent {
    fn from(body: EventBody) -> Self {
        Self {
            match_id: body.match_id,
            seq: body.seq,
            minute: body.minute,
            timestamp_ms: body.ts,
            kind: body.kind,
            team: body.team,
            player: body.player,
            start: body.start.map(|p| (p.x, p.y)),
            end: body.end.map(|p| (p.x, p.y)),
            success: body.success,
            on_target: body.on_target,
            card: body.card,
            player_in: body.player_in,
            player_out: body.player_out,
            period: body.period,
            home: body.home.map(|t| (t.id, t.name)),
            away: body.away.map(|t| (t.id, t.name)),
        }
    }
}

/// An accepted event, as subscribers receive it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub kind: &'static str,
    pub minute: u16,
    pub ts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub player: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<PointBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<PointBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on_target: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub player_in: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub player_out: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<u8>,
}

impl From<&MatchEvent> for EventView {
    fn from(event: &MatchEvent) -> Self {
        let point = |p: domain::live::Point| PointBody { x: p.x(), y: p.y() };
        let mut view = Self {
            kind: event.detail().kind(),
            minute: event.minute(),
            ts: event.timestamp_ms(),
            team: event.detail().team(),
            player: None,
            start: None,
            end: None,
            success: None,
            on_target: None,
            card: None,
            player_in: None,
            player_out: None,
            period: None,
        };
        match event.detail() {
            EventDetail::Kickoff { .. } => {}
            EventDetail::Move { player, start, end, success, .. } => {
                view.player = Some(*player);
                view.start = Some(point(*start));
                view.end = Some(point(*end));
                view.success = Some(*success);
            }
            EventDetail::Shot { player, start, on_target, .. } => {
                view.player = Some(*player);
                view.start = Some(point(*start));
                view.on_target = Some(*on_target);
            }
            EventDetail::Goal { player, .. } => view.player = *player,
            EventDetail::Foul { player, .. } => view.player = Some(*player),
            EventDetail::Card { player, color, .. } => {
                view.player = Some(*player);
                view.card = Some(match color {
                    CardColor::Yellow => "yellow",
                    CardColor::Red => "red",
                });
            }
            EventDetail::Substitution { player_in, player_out, .. } => {
                view.player_in = Some(*player_in);
                view.player_out = Some(*player_out);
            }
            EventDetail::PeriodEnd { period } => view.period = Some(*period),
        }
        view
    }
}

/// The layout of [`MatchView`] that this release writes to the store.
/// States stored before the layout carried a number read as 0: they had no
/// red cards, which then count as none.
pub const STATE_FORMAT: u32 = 1;

/// A match as readers see it, and as the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MatchView {
    pub id: String,
    pub home: TeamView,
    pub away: TeamView,
    pub status: String,
    pub minute: u16,
    pub score: Score,
    /// Absent from states stored by releases before format 1.
    #[serde(default)]
    pub red_cards: Score,
    /// Sequence number of the last event applied.
    pub seq: u64,
    pub updated_ms: i64,
    /// The layout of this document as stored (see `STATE_FORMAT`); 0 for
    /// one stored before the field existed. A gateway refuses to build on a
    /// state newer than it knows rather than drop what it cannot read.
    #[serde(default)]
    pub format: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TeamView {
    pub id: u32,
    pub name: String,
}

/// A count for each side: goals, or red cards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Score {
    pub home: u16,
    pub away: u16,
}

/// One update on the live feed, as `/v1/live` and `/v1/matches/{id}/live`
/// send it (documentation only; the engine writes it from [`EventView`]
/// and [`MatchView`], see [`Football`]).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UpdateMessage {
    /// Always `"event"`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "match")]
    pub match_id: String,
    pub seq: u64,
    pub event: EventView,
    pub state: MatchView,
}

/// The first message of a subscription (`subscribed`), and the one that
/// replaces missed events history no longer holds (`resync`)
/// (documentation only; `subscription.rs` writes it).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SubscribedMessage {
    /// `"subscribed"` or `"resync"`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "match")]
    pub match_id: String,
    /// Sequence number of `state`: the match's head.
    pub seq: u64,
    /// The sequence number the client resumes after, when it gave one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    /// With `since`: whether every missed event follows (`true`), or
    /// history no longer has them and `state` replaces them (`false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// How many missed events follow this message.
    pub replayed: u64,
    pub state: MatchView,
}

/// Any message of a live subscription: a [`SubscribedMessage`] first, then
/// [`UpdateMessage`]s (documentation only).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum LiveMessage {
    Subscribed(SubscribedMessage),
    Update(UpdateMessage),
}

impl From<&MatchState> for MatchView {
    fn from(state: &MatchState) -> Self {
        let team = |t: &Team| TeamView { id: t.id, name: t.name.clone() };
        Self {
            id: state.id.to_string(),
            home: team(&state.home),
            away: team(&state.away),
            status: state.status.as_str().to_owned(),
            minute: state.minute,
            score: Score { home: state.home_goals, away: state.away_goals },
            red_cards: Score { home: u16::from(state.home_red_cards), away: u16::from(state.away_red_cards) },
            seq: state.seq,
            updated_ms: state.updated_ms,
            format: STATE_FORMAT,
        }
    }
}

impl TryFrom<MatchView> for MatchState {
    type Error = anyhow::Error;

    fn try_from(view: MatchView) -> Result<Self, Self::Error> {
        if view.format > STATE_FORMAT {
            return Err(livefeed::NewerFormat {
                what: "match state",
                format: view.format,
                known: STATE_FORMAT,
            }
            .into());
        }
        let status = match view.status.as_str() {
            "first_half" => MatchStatus::FirstHalf,
            "half_time" => MatchStatus::HalfTime,
            "second_half" => MatchStatus::SecondHalf,
            "finished" => MatchStatus::Finished,
            other => anyhow::bail!("stored match has unknown status {other:?}"),
        };
        Ok(Self {
            id: MatchId::parse(&view.id)?,
            home: Team { id: view.home.id, name: view.home.name },
            away: Team { id: view.away.id, name: view.away.name },
            status,
            minute: view.minute,
            home_goals: view.score.home,
            away_goals: view.score.away,
            home_red_cards: u8::try_from(view.red_cards.home).context("stored red cards out of range")?,
            away_red_cards: u8::try_from(view.red_cards.away).context("stored red cards out of range")?,
            seq: view.seq,
            updated_ms: view.updated_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Football;

    /// A state as releases before the format number stored it: no
    /// `format`, no `red_cards`.
    const PREVIOUS_STATE: &str = r#"{"id":"legacy","home":{"id":1,"name":"Rovers"},
        "away":{"id":2,"name":"United"},"status":"first_half","minute":3,
        "score":{"home":1,"away":0},"seq":4,"updated_ms":0}"#;

    #[test]
    fn a_state_stored_in_the_previous_format_is_read() {
        use livefeed::Domain as _;
        let state = Football::state_from_json(PREVIOUS_STATE.as_bytes()).expect("the previous format reads");
        assert_eq!((state.home_goals, state.home_red_cards, state.seq), (1, 0, 4));
        let rewritten: MatchView =
            serde_json::from_slice(&Football::state_json(&state).expect("encodes")).expect("json");
        assert_eq!(rewritten.format, STATE_FORMAT, "written back in the current format");
    }

    #[test]
    fn a_state_newer_than_this_release_is_refused_not_guessed() {
        use livefeed::Domain as _;
        let newer =
            PREVIOUS_STATE.replace(r#""seq":4"#, &format!(r#""seq":4,"format":{}"#, STATE_FORMAT + 1));
        let err = Football::state_from_json(newer.as_bytes()).expect_err("a newer format");
        let newer_format = err.downcast_ref::<livefeed::NewerFormat>().expect("says why");
        assert_eq!(newer_format.format, STATE_FORMAT + 1);
    }

    const PASS: &str = r#"{"match_id":"m1","seq":2,"kind":"pass","team":1,"player":9,
        "start":{"x":50,"y":34},"end":{"x":70,"y":40},"success":true}"#;

    #[test]
    fn a_body_is_one_event_or_an_array_whose_bad_element_is_named() {
        let one = parse_publication(PASS.as_bytes(), 5).expect("one event");
        let Publication::One(event) = one else { panic!("expected one event, got {one:?}") };
        assert_eq!((event.seq(), event.timestamp_ms()), (2, 5));

        let array = format!(" \n[{PASS}, {PASS}]");
        let many = parse_publication(array.as_bytes(), 5).expect("an array");
        assert!(matches!(&many, Publication::Many(events) if events.len() == 2), "{many:?}");

        let bad = format!(r#"[{PASS}, {{"match_id":"m1","seq":3,"kind":"goal"}}]"#);
        let err = parse_publication(bad.as_bytes(), 5).expect_err("a goal without a team");
        assert_eq!(err, "event [1]: `team` is required for a goal event");
    }

    #[test]
    fn a_blank_line_is_skipped_and_any_other_parsed() {
        assert!(parse_line(b" \r\t", 0).is_none());
        assert!(matches!(parse_line(PASS.as_bytes(), 0), Some(Ok(_))));
        assert!(
            matches!(parse_line(b"{\"seq\":", 0), Some(Err(message)) if message.starts_with("invalid JSON"))
        );
    }
}
