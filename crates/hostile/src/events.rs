//! Valid events, as a publisher sends them, for the cases to build on (and
//! to break one field at a time).

use serde_json::{Value, json};

pub(crate) fn kickoff(match_id: &str) -> Value {
    json!({
        "match_id": match_id, "seq": 1, "kind": "kickoff", "minute": 0,
        "home": {"id": 1, "name": "Rovers"}, "away": {"id": 2, "name": "United"}
    })
}

pub(crate) fn pass(match_id: &str, seq: u64) -> Value {
    json!({
        "match_id": match_id, "seq": seq, "kind": "pass", "minute": 3, "team": 1, "player": 7,
        "start": {"x": 40.0, "y": 30.0}, "end": {"x": 60.5, "y": 20.0}, "success": true
    })
}

pub(crate) fn foul(match_id: &str, seq: u64) -> Value {
    json!({"match_id": match_id, "seq": seq, "kind": "foul", "minute": 20, "team": 2, "player": 4})
}

pub(crate) fn goal(match_id: &str, seq: u64, team: u32) -> Value {
    json!({"match_id": match_id, "seq": seq, "kind": "goal", "minute": 12, "team": team, "player": 9})
}

pub(crate) fn red_card(match_id: &str, seq: u64, player: u32) -> Value {
    json!({"match_id": match_id, "seq": seq, "kind": "card", "minute": 30, "team": 2, "player": player, "card": "red"})
}

/// `event` with `field` set to `value`.
pub(crate) fn with(mut event: Value, field: &str, value: Value) -> Value {
    if let Some(object) = event.as_object_mut() {
        object.insert(field.to_owned(), value);
    }
    event
}
