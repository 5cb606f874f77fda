//! One simulated match as a sequence of ingest events (JSON, as a publisher
//! sends them). Pure and seeded: the same seed always plays the same match.
//!
//! The match runs on a compressed clock: three to four events per match
//! minute, so a whole match is a few hundred events. Both teams attack left
//! to right in their own frame, as SPADL coordinates do.

use domain::rng::Rng;
use serde_json::{Value, json};

const TEAMS: [&str; 12] = [
    "Harbour Rovers",
    "Northgate United",
    "Riverside Athletic",
    "Old Mill Town",
    "Castle Wanderers",
    "Seaview City",
    "Ironbridge FC",
    "Lakeshore Albion",
    "Hillcrest Rangers",
    "Westfield Orient",
    "Marsh Lane",
    "Copperfield Villa",
];

/// The events of one match, generated on demand.
#[derive(Debug)]
pub struct MatchScript {
    match_id: String,
    rng: Rng,
    teams: [u32; 2],
    names: [&'static str; 2],
    seq: u64,
    minute: u16,
    events_this_minute: u8,
    possession: usize,
    /// Queued events that must follow the last one (a goal after its shot).
    pending: Option<Value>,
    substitutions: [u8; 2],
    period: u8,
    finished: bool,
}

impl MatchScript {
    /// `slot` picks the pairing, so matches played at once have different
    /// teams; `seed` decides everything else.
    pub fn new(match_id: &str, slot: usize, seed: u64) -> Self {
        let home = (slot * 2) % TEAMS.len();
        let away = (home + 1) % TEAMS.len();
        Self {
            match_id: match_id.to_owned(),
            rng: Rng::new(seed),
            teams: [home as u32 + 1, away as u32 + 1],
            names: [TEAMS[home], TEAMS[away]],
            seq: 0,
            minute: 0,
            events_this_minute: 0,
            possession: 0,
            pending: None,
            substitutions: [0, 0],
            period: 0,
            finished: false,
        }
    }

    pub fn match_id(&self) -> &str {
        &self.match_id
    }

    fn event(&mut self, body: Value) -> Value {
        self.seq += 1;
        let mut event = json!({"match_id": self.match_id, "seq": self.seq, "minute": self.minute});
        if let (Some(event), Value::Object(fields)) = (event.as_object_mut(), body) {
            event.extend(fields);
        }
        event
    }

    fn player(&mut self, side: usize) -> u32 {
        // Players 2..=11 of the team; the goalkeeper (1) rarely acts.
        self.teams[side] * 100 + 2 + self.rng.below(10) as u32
    }

    fn point(&mut self, x_low: f64, x_high: f64) -> Value {
        json!({"x": round(self.rng.uniform(x_low, x_high)), "y": round(self.rng.uniform(2.0, 66.0))})
    }

    fn play(&mut self) -> Value {
        let side = self.possession;
        let team = self.teams[side];
        let player = self.player(side);
        let roll = self.rng.next_f64();
        if roll < 0.62 {
            let start = self.point(15.0, 90.0);
            let sx = start["x"].as_f64().unwrap_or(50.0);
            let end = self.point((sx - 10.0).max(0.0), (sx + 25.0).min(105.0));
            let success = self.rng.chance(0.82);
            if !success {
                self.possession = 1 - side;
            }
            json!({"kind": "pass", "team": team, "player": player, "start": start, "end": end, "success": success})
        } else if roll < 0.74 {
            let start = self.point(30.0, 90.0);
            let sx = start["x"].as_f64().unwrap_or(50.0);
            let end = self.point(sx, (sx + 12.0).min(105.0));
            let success = self.rng.chance(0.7);
            if !success {
                self.possession = 1 - side;
            }
            json!({"kind": "dribble", "team": team, "player": player, "start": start, "end": end, "success": success})
        } else if roll < 0.80 {
            let start = self.point(80.0, 103.0);
            let end = self.point(90.0, 104.0);
            let success = self.rng.chance(0.3);
            self.possession = if success { side } else { 1 - side };
            json!({"kind": "cross", "team": team, "player": player, "start": start, "end": end, "success": success})
        } else if roll < 0.87 {
            let start = self.point(80.0, 100.0);
            let on_target = self.rng.chance(0.38);
            if on_target && self.rng.chance(0.3) {
                self.pending = Some(json!({"kind": "goal", "team": team, "player": player}));
            }
            self.possession = 1 - side;
            json!({"kind": "shot", "team": team, "player": player, "start": start, "on_target": on_target})
        } else if roll < 0.95 {
            self.possession = 1 - side;
            json!({"kind": "foul", "team": team, "player": player})
        } else if roll < 0.985 {
            let card = if self.rng.chance(0.08) { "red" } else { "yellow" };
            json!({"kind": "card", "team": team, "player": player, "card": card})
        } else if self.minute > 55 && self.substitutions[side] < 3 {
            self.substitutions[side] += 1;
            let player_in = team * 100 + 12 + u32::from(self.substitutions[side]);
            json!({"kind": "substitution", "team": team, "player_in": player_in, "player_out": player})
        } else {
            json!({"kind": "pass", "team": team, "player": player, "start": self.point(30.0, 60.0), "end": self.point(30.0, 70.0), "success": true})
        }
    }
}

impl Iterator for MatchScript {
    type Item = Value;

    fn next(&mut self) -> Option<Value> {
        if self.finished {
            return None;
        }
        if self.seq == 0 {
            let [home, away] = self.teams;
            let [home_name, away_name] = self.names;
            return Some(self.event(json!({
                "kind": "kickoff",
                "home": {"id": home, "name": home_name},
                "away": {"id": away, "name": away_name},
            })));
        }
        if let Some(goal) = self.pending.take() {
            return Some(self.event(goal));
        }
        self.events_this_minute += 1;
        if self.events_this_minute >= 3 + self.rng.below(2) as u8 {
            self.events_this_minute = 0;
            self.minute += 1;
            if (self.minute == 45 && self.period == 0) || self.minute == 90 {
                self.period += 1;
                self.finished = self.period == 2;
                if self.period == 1 {
                    self.possession = 1;
                }
                return Some(self.event(json!({"kind": "period_end", "period": self.period})));
            }
        }
        let play = self.play();
        Some(self.event(play))
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use domain::live::{MatchEvent, MatchState, RawEvent};

    use super::*;

    /// Runs a script through the real domain parser and fold, as the gateway
    /// would: every event must parse and apply.
    fn play_out(seed: u64) -> (Vec<Value>, MatchState) {
        let events: Vec<Value> = MatchScript::new("sim-test", 0, seed).collect();
        let mut state: Option<MatchState> = None;
        for event in &events {
            let parsed = MatchEvent::parse(raw(event), 0).unwrap_or_else(|e| panic!("{event}: {e}"));
            state = Some(match &state {
                None => MatchState::kickoff(&parsed).expect("kickoff first"),
                Some(state) => state.apply(&parsed).unwrap_or_else(|e| panic!("{event}: {e}")),
            });
        }
        (events, state.expect("a match"))
    }

    fn raw(event: &Value) -> RawEvent {
        let point = |v: &Value| {
            v.as_object().map(|_| (v["x"].as_f64().unwrap_or(-1.0), v["y"].as_f64().unwrap_or(-1.0)))
        };
        let team = |v: &Value| {
            v.as_object()
                .map(|_| (v["id"].as_u64().unwrap_or(0) as u32, v["name"].as_str().unwrap_or("").to_owned()))
        };
        RawEvent {
            match_id: event["match_id"].as_str().map(str::to_owned),
            seq: event["seq"].as_u64(),
            minute: event["minute"].as_u64().map(|m| m as u16),
            kind: event["kind"].as_str().map(str::to_owned),
            team: event["team"].as_u64().map(|t| t as u32),
            player: event["player"].as_u64().map(|p| p as u32),
            start: point(&event["start"]),
            end: point(&event["end"]),
            success: event["success"].as_bool(),
            on_target: event["on_target"].as_bool(),
            card: event["card"].as_str().map(str::to_owned),
            player_in: event["player_in"].as_u64().map(|p| p as u32),
            player_out: event["player_out"].as_u64().map(|p| p as u32),
            period: event["period"].as_u64().map(|p| p as u8),
            home: team(&event["home"]),
            away: team(&event["away"]),
            ..RawEvent::default()
        }
    }

    #[test]
    fn a_simulated_match_is_valid_from_kickoff_to_full_time() {
        let (events, state) = play_out(7);
        assert_eq!(state.status, domain::live::MatchStatus::Finished);
        assert_eq!(state.seq, events.len() as u64);
        assert!((200..600).contains(&events.len()), "{} events", events.len());
    }

    #[test]
    fn the_same_seed_plays_the_same_match() {
        assert_eq!(play_out(11).0, play_out(11).0);
        assert_ne!(play_out(11).0, play_out(12).0);
    }

    #[test]
    fn goals_happen_across_many_matches() {
        let goals: u32 = (0..20)
            .map(|seed| {
                let (_, state) = play_out(seed);
                u32::from(state.home_goals + state.away_goals)
            })
            .sum();
        // Real football averages about 2.7 goals a match.
        assert!((20..=120).contains(&goals), "{goals} goals in 20 matches");
    }
}
