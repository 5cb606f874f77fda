//! Live matches and their events: the data the score feed carries.
//!
//! Events arrive from publishers as loosely typed records ([`RawEvent`]) and
//! are parsed once, at the boundary, into [`MatchEvent`]: a match id that is
//! a safe slug, a sequence number of at least 1, and a [`EventDetail`] per
//! kind that holds exactly the fields that kind needs, with pitch
//! coordinates checked against the pitch. Every rejection names the field.
//!
//! Coordinates follow the SPADL convention the analytics models use: metres
//! on a 105 × 68 pitch, origin at the bottom-left corner, every team
//! attacking left to right.
//!
//! [`MatchState::apply`] folds an event into the state of its match. It is a
//! pure function; ordering and idempotency (by match id and sequence number)
//! are enforced by whoever stores the state, see `livefeed::ingest`.

use std::fmt;

/// Pitch length (x axis) in metres.
pub const PITCH_LENGTH: f64 = 105.0;
/// Pitch width (y axis) in metres.
pub const PITCH_WIDTH: f64 = 68.0;

/// Why an event or one of its fields was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("`{field}` is required for a {kind} event")]
    Missing { field: &'static str, kind: &'static str },
    #[error("`{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("unknown event kind {0:?}, expected one of {KINDS}")]
    UnknownKind(String),
}

/// Why an event cannot apply to the current state of its match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("match {0} has no kickoff yet: send its kickoff event first")]
    NotStarted(String),
    #[error("match {0} has already kicked off")]
    AlreadyStarted(String),
    #[error("match {0} is finished")]
    Finished(String),
    #[error("team {team} does not play in match {match_id}")]
    UnknownTeam { team: u32, match_id: String },
    /// Limits every match keeps; win probability values any state within
    /// them.
    #[error("a side can score at most {limit} goals in match {match_id}", limit = MAX_GOALS)]
    TooManyGoals { match_id: String },
    #[error(
        "a side can have at most {limit} players sent off in match {match_id}: with one more the match is abandoned",
        limit = MAX_RED_CARDS
    )]
    TooManyRedCards { match_id: String },
}

/// The latest minute an event may carry: regulation, extra time and a
/// generous allowance for added time.
pub const MAX_MINUTE: u16 = 150;
/// Red cards a side can have: with a fifth the side has fewer than seven
/// players and the match is abandoned (Law 3).
pub const MAX_RED_CARDS: u8 = 4;
/// Goals a side can have; far above any real score.
pub const MAX_GOALS: u16 = 50;

const KINDS: &str = "kickoff, pass, cross, dribble, shot, goal, foul, card, substitution, period_end";

/// A match identifier: 1 to 64 characters of `a-z`, `0-9`, `-` and `_`, so it
/// is safe in URLs, Redis keys and log lines without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MatchId(String);

impl MatchId {
    pub fn parse(raw: &str) -> Result<Self, EventError> {
        let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if raw.is_empty() || raw.len() > 64 || !raw.chars().all(valid_char) {
            return Err(EventError::Invalid {
                field: "match_id",
                reason: format!("must be 1 to 64 characters of a-z, 0-9, '-' or '_', got {:?}", clip(raw)),
            });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point on the pitch, in metres, inside the 105 × 68 rectangle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    x: f64,
    y: f64,
}

impl Point {
    /// `field` names the point (`"start"`, `"end"`) in error messages.
    pub fn parse(field: &'static str, x: f64, y: f64) -> Result<Self, EventError> {
        let check = |axis: &'static str, value: f64, max: f64| {
            if value.is_finite() && (0.0..=max).contains(&value) {
                Ok(value)
            } else {
                Err(EventError::Invalid {
                    field: axis,
                    reason: format!("must be between 0 and {max} metres, got {value}"),
                })
            }
        };
        let (x_field, y_field) = match field {
            "start" => ("start.x", "start.y"),
            _ => ("end.x", "end.y"),
        };
        Ok(Self { x: check(x_field, x, PITCH_LENGTH)?, y: check(y_field, y, PITCH_WIDTH)? })
    }

    pub fn x(self) -> f64 {
        self.x
    }

    pub fn y(self) -> f64 {
        self.y
    }
}

/// A team taking part in a match, as announced by its kickoff event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    pub id: u32,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardColor {
    Yellow,
    Red,
}

/// What happened, with exactly the fields each kind needs.
#[derive(Debug, Clone, PartialEq)]
pub enum EventDetail {
    /// Starts the match and names its teams.
    Kickoff {
        home: Team,
        away: Team,
    },
    /// A move of the ball: pass, cross or dribble. `success` says whether a
    /// team-mate (or the dribbler) kept the ball at `end`.
    Move {
        kind: MoveKind,
        team: u32,
        player: u32,
        start: Point,
        end: Point,
        success: bool,
    },
    Shot {
        team: u32,
        player: u32,
        start: Point,
        on_target: bool,
    },
    /// A goal for `team`. `player` is the scorer, absent for an own goal.
    Goal {
        team: u32,
        player: Option<u32>,
    },
    Foul {
        team: u32,
        player: u32,
    },
    Card {
        team: u32,
        player: u32,
        color: CardColor,
    },
    Substitution {
        team: u32,
        player_in: u32,
        player_out: u32,
    },
    /// End of a period: 1 is half time, 2 full time.
    PeriodEnd {
        period: u8,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    Pass,
    Cross,
    Dribble,
}

impl EventDetail {
    /// The kind's name on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Kickoff { .. } => "kickoff",
            Self::Move { kind: MoveKind::Pass, .. } => "pass",
            Self::Move { kind: MoveKind::Cross, .. } => "cross",
            Self::Move { kind: MoveKind::Dribble, .. } => "dribble",
            Self::Shot { .. } => "shot",
            Self::Goal { .. } => "goal",
            Self::Foul { .. } => "foul",
            Self::Card { .. } => "card",
            Self::Substitution { .. } => "substitution",
            Self::PeriodEnd { .. } => "period_end",
        }
    }

    /// The team the event belongs to, for kinds that have one.
    pub fn team(&self) -> Option<u32> {
        match self {
            Self::Move { team, .. }
            | Self::Shot { team, .. }
            | Self::Goal { team, .. }
            | Self::Foul { team, .. }
            | Self::Card { team, .. }
            | Self::Substitution { team, .. } => Some(*team),
            Self::Kickoff { .. } | Self::PeriodEnd { .. } => None,
        }
    }
}

/// One event of one match, parsed and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchEvent {
    match_id: MatchId,
    seq: u64,
    minute: u16,
    timestamp_ms: i64,
    detail: EventDetail,
}

impl MatchEvent {
    pub fn match_id(&self) -> &MatchId {
        &self.match_id
    }

    /// Position of the event in its match, from 1 with no gaps.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Match clock, in minutes.
    pub fn minute(&self) -> u16 {
        self.minute
    }

    /// When it happened, milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    pub fn detail(&self) -> &EventDetail {
        &self.detail
    }

    /// Parses a loosely typed record. `now_ms` stands in for a missing
    /// timestamp; the caller passes the clock so this stays pure.
    pub fn parse(raw: RawEvent, now_ms: i64) -> Result<Self, EventError> {
        let match_id = MatchId::parse(
            raw.match_id.as_deref().ok_or(EventError::Missing { field: "match_id", kind: "any" })?,
        )?;
        let seq = raw.seq.ok_or(EventError::Missing { field: "seq", kind: "any" })?;
        if seq == 0 {
            return Err(EventError::Invalid { field: "seq", reason: "must be at least 1".into() });
        }
        let minute = raw.minute.unwrap_or(0);
        if minute > MAX_MINUTE {
            return Err(EventError::Invalid {
                field: "minute",
                reason: format!("must be at most {MAX_MINUTE}, got {minute}"),
            });
        }
        let timestamp_ms = raw.timestamp_ms.unwrap_or(now_ms);
        if timestamp_ms < 0 {
            return Err(EventError::Invalid { field: "ts", reason: "must not be negative".into() });
        }
        let kind = raw.kind.as_deref().ok_or(EventError::Missing { field: "kind", kind: "any" })?;
        let detail = parse_detail(kind, &raw)?;
        Ok(Self { match_id, seq, minute, timestamp_ms, detail })
    }
}

/// An event as publishers send it: every field optional and loosely typed.
/// [`MatchEvent::parse`] decides what is required for which kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawEvent {
    pub match_id: Option<String>,
    pub seq: Option<u64>,
    pub minute: Option<u16>,
    pub timestamp_ms: Option<i64>,
    pub kind: Option<String>,
    pub team: Option<u32>,
    pub player: Option<u32>,
    pub start: Option<(f64, f64)>,
    pub end: Option<(f64, f64)>,
    pub success: Option<bool>,
    pub on_target: Option<bool>,
    pub card: Option<String>,
    pub player_in: Option<u32>,
    pub player_out: Option<u32>,
    pub period: Option<u8>,
    pub home: Option<(u32, String)>,
    pub away: Option<(u32, String)>,
}

fn parse_detail(kind: &str, raw: &RawEvent) -> Result<EventDetail, EventError> {
    let name: &'static str = match kind {
        "kickoff" => "kickoff",
        "pass" => "pass",
        "cross" => "cross",
        "dribble" => "dribble",
        "shot" => "shot",
        "goal" => "goal",
        "foul" => "foul",
        "card" => "card",
        "substitution" => "substitution",
        "period_end" => "period_end",
        other => return Err(EventError::UnknownKind(clip(other))),
    };
    let need = |field: &'static str| EventError::Missing { field, kind: name };
    let team = || raw.team.ok_or(need("team"));
    let player = || raw.player.ok_or(need("player"));
    let point = |field: &'static str, value: Option<(f64, f64)>| {
        let (x, y) = value.ok_or(need(field))?;
        Point::parse(field, x, y)
    };

    Ok(match name {
        "kickoff" => {
            let team_of = |field: &'static str, value: &Option<(u32, String)>| {
                let (id, team_name) = value.clone().ok_or(need(field))?;
                let team_name = team_name.trim().to_owned();
                if team_name.is_empty() || team_name.chars().count() > 64 {
                    return Err(EventError::Invalid {
                        field: if field == "home" { "home.name" } else { "away.name" },
                        reason: "must be 1 to 64 characters".into(),
                    });
                }
                Ok(Team { id, name: team_name })
            };
            let home = team_of("home", &raw.home)?;
            let away = team_of("away", &raw.away)?;
            if home.id == away.id {
                return Err(EventError::Invalid {
                    field: "away.id",
                    reason: "must differ from home.id".into(),
                });
            }
            EventDetail::Kickoff { home, away }
        }
        "pass" | "cross" | "dribble" => EventDetail::Move {
            kind: match name {
                "pass" => MoveKind::Pass,
                "cross" => MoveKind::Cross,
                _ => MoveKind::Dribble,
            },
            team: team()?,
            player: player()?,
            start: point("start", raw.start)?,
            end: point("end", raw.end)?,
            success: raw.success.ok_or(need("success"))?,
        },
        "shot" => EventDetail::Shot {
            team: team()?,
            player: player()?,
            start: point("start", raw.start)?,
            on_target: raw.on_target.ok_or(need("on_target"))?,
        },
        "goal" => EventDetail::Goal { team: team()?, player: raw.player },
        "foul" => EventDetail::Foul { team: team()?, player: player()? },
        "card" => EventDetail::Card {
            team: team()?,
            player: player()?,
            color: match raw.card.as_deref().ok_or(need("card"))? {
                "yellow" => CardColor::Yellow,
                "red" => CardColor::Red,
                other => {
                    return Err(EventError::Invalid {
                        field: "card",
                        reason: format!("must be \"yellow\" or \"red\", got {:?}", clip(other)),
                    });
                }
            },
        },
        "substitution" => EventDetail::Substitution {
            team: team()?,
            player_in: raw.player_in.ok_or(need("player_in"))?,
            player_out: raw.player_out.ok_or(need("player_out"))?,
        },
        _ => {
            let period = raw.period.ok_or(need("period"))?;
            if !(1..=2).contains(&period) {
                return Err(EventError::Invalid {
                    field: "period",
                    reason: format!("must be 1 or 2, got {period}"),
                });
            }
            EventDetail::PeriodEnd { period }
        }
    })
}

/// Where a match stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchStatus {
    FirstHalf,
    HalfTime,
    SecondHalf,
    Finished,
}

impl MatchStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstHalf => "first_half",
            Self::HalfTime => "half_time",
            Self::SecondHalf => "second_half",
            Self::Finished => "finished",
        }
    }
}

/// The state of one match after its events up to [`MatchState::seq`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchState {
    pub id: MatchId,
    pub home: Team,
    pub away: Team,
    pub status: MatchStatus,
    pub minute: u16,
    pub home_goals: u16,
    pub away_goals: u16,
    pub home_red_cards: u8,
    pub away_red_cards: u8,
    /// Sequence number of the last event applied.
    pub seq: u64,
    /// Timestamp of the last event applied, ms since the Unix epoch.
    pub updated_ms: i64,
}

impl MatchState {
    /// The state a kickoff event creates.
    pub fn kickoff(event: &MatchEvent) -> Result<Self, ApplyError> {
        let EventDetail::Kickoff { home, away } = event.detail() else {
            return Err(ApplyError::NotStarted(event.match_id.to_string()));
        };
        Ok(Self {
            id: event.match_id.clone(),
            home: home.clone(),
            away: away.clone(),
            status: MatchStatus::FirstHalf,
            minute: event.minute,
            home_goals: 0,
            away_goals: 0,
            home_red_cards: 0,
            away_red_cards: 0,
            seq: event.seq,
            updated_ms: event.timestamp_ms,
        })
    }

    /// Folds the event into the state. The caller has checked that
    /// `event.seq() == self.seq + 1` (the live-feed engine checks it).
    pub fn apply(&self, event: &MatchEvent) -> Result<Self, ApplyError> {
        let match_id = || self.id.to_string();
        if self.status == MatchStatus::Finished {
            return Err(ApplyError::Finished(match_id()));
        }
        let mut next = self.clone();
        if let Some(team) = event.detail.team()
            && team != self.home.id
            && team != self.away.id
        {
            return Err(ApplyError::UnknownTeam { team, match_id: match_id() });
        }
        let is_home = event.detail.team() == Some(self.home.id);
        match &event.detail {
            EventDetail::Kickoff { .. } => return Err(ApplyError::AlreadyStarted(match_id())),
            EventDetail::Goal { .. } => {
                let goals = if is_home { &mut next.home_goals } else { &mut next.away_goals };
                if *goals >= MAX_GOALS {
                    return Err(ApplyError::TooManyGoals { match_id: match_id() });
                }
                *goals += 1;
            }
            EventDetail::Card { color: CardColor::Red, .. } => {
                let cards = if is_home { &mut next.home_red_cards } else { &mut next.away_red_cards };
                if *cards >= MAX_RED_CARDS {
                    return Err(ApplyError::TooManyRedCards { match_id: match_id() });
                }
                *cards += 1;
            }
            EventDetail::PeriodEnd { period: 1 } => next.status = MatchStatus::HalfTime,
            EventDetail::PeriodEnd { .. } => next.status = MatchStatus::Finished,
            EventDetail::Move { .. }
            | EventDetail::Shot { .. }
            | EventDetail::Foul { .. }
            | EventDetail::Card { .. }
            | EventDetail::Substitution { .. } => {}
        }
        // Play after half time means the second half has started.
        if next.status == MatchStatus::HalfTime && !matches!(event.detail, EventDetail::PeriodEnd { .. }) {
            next.status = MatchStatus::SecondHalf;
        }
        next.minute = next.minute.max(event.minute);
        next.seq = event.seq;
        next.updated_ms = event.timestamp_ms;
        Ok(next)
    }
}

/// Keeps messages short when a client sends something huge.
fn clip(raw: &str) -> String {
    raw.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(kind: &str, seq: u64) -> RawEvent {
        RawEvent {
            match_id: Some("m1".into()),
            seq: Some(seq),
            minute: Some(10),
            kind: Some(kind.into()),
            team: Some(1),
            player: Some(9),
            start: Some((50.0, 30.0)),
            end: Some((70.0, 40.0)),
            success: Some(true),
            on_target: Some(true),
            card: Some("red".into()),
            player_in: Some(12),
            player_out: Some(9),
            period: Some(1),
            home: Some((1, "Rovers".into())),
            away: Some((2, "United".into())),
            ..RawEvent::default()
        }
    }

    fn event(kind: &str, seq: u64) -> MatchEvent {
        MatchEvent::parse(raw(kind, seq), 1_000).expect("valid event")
    }

    #[test]
    fn every_kind_parses_from_a_complete_record() {
        for kind in KINDS.split(", ") {
            let parsed = MatchEvent::parse(raw(kind, 1), 0).expect(kind);
            assert_eq!(parsed.detail().kind(), kind);
        }
    }

    #[test]
    fn rejections_name_the_field() {
        let cases: Vec<(RawEvent, &str)> = vec![
            (
                RawEvent { start: Some((130.0, 30.0)), ..raw("pass", 1) },
                "`start.x` must be between 0 and 105 metres, got 130",
            ),
            (
                RawEvent { end: Some((50.0, -1.0)), ..raw("pass", 1) },
                "`end.y` must be between 0 and 68 metres, got -1",
            ),
            (
                RawEvent { start: Some((f64::NAN, 1.0)), ..raw("shot", 1) },
                "`start.x` must be between 0 and 105 metres, got NaN",
            ),
            (RawEvent { success: None, ..raw("dribble", 1) }, "`success` is required for a dribble event"),
            (RawEvent { kind: Some("dance".into()), ..raw("pass", 1) }, "unknown event kind \"dance\""),
            (RawEvent { seq: Some(0), ..raw("pass", 1) }, "`seq` must be at least 1"),
            (
                RawEvent { match_id: Some("Bad Id!".into()), ..raw("pass", 1) },
                "`match_id` must be 1 to 64 characters",
            ),
            (
                RawEvent { card: Some("green".into()), ..raw("card", 1) },
                "`card` must be \"yellow\" or \"red\", got \"green\"",
            ),
            (RawEvent { period: Some(3), ..raw("period_end", 1) }, "`period` must be 1 or 2, got 3"),
            (
                RawEvent { away: Some((1, "Rovers B".into())), ..raw("kickoff", 1) },
                "`away.id` must differ from home.id",
            ),
        ];
        for (raw, expected) in cases {
            let err = MatchEvent::parse(raw, 0).expect_err(expected).to_string();
            assert!(err.starts_with(expected), "expected {expected:?}, got {err:?}");
        }
    }

    #[test]
    fn a_match_plays_out_from_kickoff_to_full_time() {
        let mut state = MatchState::kickoff(&event("kickoff", 1)).expect("kickoff");
        assert_eq!((state.status, state.seq), (MatchStatus::FirstHalf, 1));

        state = state.apply(&event("goal", 2)).expect("home goal");
        let away_goal = MatchEvent::parse(RawEvent { team: Some(2), ..raw("goal", 3) }, 0).expect("event");
        state = state.apply(&away_goal).expect("away goal");
        state = state.apply(&event("card", 4)).expect("red card");
        state = state.apply(&event("period_end", 5)).expect("half time");
        assert_eq!(state.status, MatchStatus::HalfTime);
        state = state.apply(&event("pass", 6)).expect("second half play");
        assert_eq!(state.status, MatchStatus::SecondHalf);
        let full_time =
            MatchEvent::parse(RawEvent { period: Some(2), ..raw("period_end", 7) }, 0).expect("event");
        state = state.apply(&full_time).expect("full time");

        assert_eq!((state.home_goals, state.away_goals), (1, 1));
        assert_eq!((state.home_red_cards, state.away_red_cards), (1, 0));
        assert_eq!((state.status, state.seq), (MatchStatus::Finished, 7));
        assert_eq!(state.apply(&event("pass", 8)), Err(ApplyError::Finished("m1".into())));
    }

    #[test]
    fn events_need_a_kickoff_and_a_team_of_the_match() {
        assert_eq!(MatchState::kickoff(&event("pass", 1)), Err(ApplyError::NotStarted("m1".into())));
        let state = MatchState::kickoff(&event("kickoff", 1)).expect("kickoff");
        let stranger = MatchEvent::parse(RawEvent { team: Some(77), ..raw("foul", 2) }, 0).expect("event");
        assert_eq!(state.apply(&stranger), Err(ApplyError::UnknownTeam { team: 77, match_id: "m1".into() }));
        assert_eq!(state.apply(&event("kickoff", 2)), Err(ApplyError::AlreadyStarted("m1".into())));
    }
}
