//! What the fuzz targets share: the publisher's JSON for a parsed event, and
//! the comparison the round trips use.
//!
//! The targets assert more than "does not panic": an event the gateway
//! accepted, written back as a publisher would send it, must parse to the
//! same event. The JSON is built from the gateway's own `EventView` (what
//! subscribers receive), so the check also holds the subscriber's shape and
//! the publisher's schema together.

use domain::live::{EventDetail, MatchEvent, Point};
use gateway::live::wire::EventView;
use serde_json::{Value, json};

/// The clock the targets parse with, so a run is repeatable.
pub const NOW_MS: i64 = 1_700_000_000_000;

/// `event` as a publisher sends it: the subscriber's view of it plus the
/// fields only a publisher sends (match id, sequence number, the teams of a
/// kickoff).
pub fn publisher_json(event: &MatchEvent) -> Value {
    let mut value = serde_json::to_value(EventView::from(event)).expect("an event view serialises");
    let object = value.as_object_mut().expect("an event view is an object");
    object.insert("match_id".into(), json!(event.match_id().as_str()));
    object.insert("seq".into(), json!(event.seq()));
    if let EventDetail::Kickoff { home, away } = event.detail() {
        object.insert("home".into(), json!({ "id": home.id, "name": home.name }));
        object.insert("away".into(), json!({ "id": away.id, "name": away.name }));
    }
    value
}

/// Whether two events are the same, coordinates within a rounding error:
/// serde_json parses floats fast rather than exactly (its `float_roundtrip`
/// feature is off), so a coordinate written and read back may move by a unit
/// in the last place. Anything more is a real difference.
pub fn same_event(a: &MatchEvent, b: &MatchEvent) -> bool {
    let near = |p: &Point, q: &Point| {
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
        close(p.x(), q.x()) && close(p.y(), q.y())
    };
    let details = match (a.detail(), b.detail()) {
        (
            EventDetail::Move { kind, team, player, start, end, success },
            EventDetail::Move {
                kind: kind_b,
                team: team_b,
                player: player_b,
                start: start_b,
                end: end_b,
                success: success_b,
            },
        ) => {
            (kind, team, player, success) == (kind_b, team_b, player_b, success_b)
                && near(start, start_b)
                && near(end, end_b)
        }
        (
            EventDetail::Shot { team, player, start, on_target },
            EventDetail::Shot { team: team_b, player: player_b, start: start_b, on_target: on_target_b },
        ) => (team, player, on_target) == (team_b, player_b, on_target_b) && near(start, start_b),
        (detail, detail_b) => detail == detail_b,
    };
    details
        && a.match_id() == b.match_id()
        && (a.seq(), a.minute(), a.timestamp_ms()) == (b.seq(), b.minute(), b.timestamp_ms())
}
