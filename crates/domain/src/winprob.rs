//! Win probability for a match in progress, and the win probability a goal
//! adds, from the goals each side can still be expected to score.
//!
//! Each side scores in the time left as an independent Poisson process. The
//! rates start from a league's goals per team per 90 minutes, shift towards
//! the home side by a home-advantage factor, and change with each red card:
//! a side a player down scores less and concedes more. With the default
//! [`WinProbConfig`] the home side scores 1.35 x 1.11 = 1.50 and the away side
//! 1.35 / 1.11 = 1.22 goals per 90, close to the long-run averages of the big
//! European leagues; a red card multiplies the punished side's rate by 0.67
//! and the opponent's by 1.25, in line with published estimates of the
//! effect of a dismissal (roughly a third fewer goals scored, a quarter more
//! conceded).
//!
//! Two ways to the same answer: [`WinProbModel::closed_form`] sums the two
//! Poisson distributions (fast, exact up to float rounding), and
//! [`WinProbModel::simulate`] plays the rest of the match many times over
//! (deliberately CPU-heavy, deterministic for a seed, and split into blocks
//! with their own random streams so a parallel run gives the same counts as a
//! sequential one).
//!
//! Not modelled: extra time and penalty shoot-outs, scorelines that change
//! the rates (teams protecting a lead), and cards still to come.

use std::ops::Range;

use crate::rng::Rng;
use crate::xt::PlayerId;

/// Regulation minutes.
pub const REGULATION_MINUTES: u16 = 90;
/// The limits of a [`ScoreState`] are the live feed's, so every match state
/// the feed accepts can be valued. Past regulation no time is left, whatever
/// the minute.
pub use crate::live::{MAX_GOALS, MAX_MINUTE, MAX_RED_CARDS};
/// Samples a simulation may ask for, so one request cannot run for hours.
pub const MAX_SAMPLES: u64 = 1_000_000_000;
/// Samples per simulation block, each block drawing from its own stream.
pub const BLOCK_SAMPLES: u64 = 16_384;

/// Goal counts past which the closed form stops summing: far enough that the
/// probability left out is below 1e-18, and renormalised away in any case.
const TAIL_PROBABILITY: f64 = 1e-18;
/// Hard cap on the goal counts summed, whatever the rate.
const MAX_GOALS_SUMMED: usize = 1_000;

/// The model's parameters. Plain numbers, checked by [`WinProbModel::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WinProbConfig {
    /// Goals one side scores in 90 minutes before home advantage and red
    /// cards: a league's average. In `(0, 6]`.
    pub goals_per_90: f64,
    /// The home side's rate is multiplied by this, the away side's divided
    /// by it. In `[1, 1.5]`; 1 means a neutral ground.
    pub home_advantage: f64,
    /// Each red card multiplies the punished side's rate by this. In
    /// `(0, 1]`.
    pub red_card_own_factor: f64,
    /// Each red card multiplies the opponent's rate by this. In `[1, 1.6]`.
    pub red_card_opponent_factor: f64,
    /// Added time expected at the end of the match, in minutes: play goes on
    /// until minute 90 plus this. In `[0, 15]`.
    pub added_minutes: f64,
}

/// A validated [`WinProbConfig`], ready to evaluate match states. The
/// default uses the default configuration.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WinProbModel {
    config: WinProbConfig,
}

/// The two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Home,
    Away,
}

/// What win probability depends on: the minute, the score and the red cards
/// so far. (`live::MatchState` carries these among much else.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ScoreState {
    minute: u16,
    home_goals: u16,
    away_goals: u16,
    home_reds: u8,
    away_reds: u8,
}

/// The probabilities of the three results. They sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    home_win: f64,
    draw: f64,
    away_win: f64,
}

/// The number of samples and the seed for a Monte Carlo run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonteCarlo {
    samples: u64,
    seed: u64,
}

/// Results counted by a (partial) simulation. Merging counts from blocks
/// run anywhere gives the same total as one sequential run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimulationCounts {
    pub home_wins: u64,
    pub draws: u64,
    pub away_wins: u64,
}

/// Something that changes a match's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreEvent {
    /// `scorer` is `None` for an own goal, which earns nobody credit.
    Goal {
        minute: u16,
        side: Side,
        scorer: Option<PlayerId>,
    },
    RedCard {
        minute: u16,
        side: Side,
    },
}

/// The win probability a goal added for the side that scored it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoalCredit {
    /// `None` for an own goal.
    pub scorer: Option<PlayerId>,
    pub side: Side,
    pub minute: u16,
    /// The scoring side's win probability just after the goal minus just
    /// before it.
    pub win_probability_added: f64,
}

/// Why a configuration, state or request was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WinProbError {
    #[error("{name} must be a finite number in [{min}, {max}], got {value}")]
    ParameterOutOfRange { name: &'static str, value: f64, min: f64, max: f64 },
    #[error("minute must be at most {MAX_MINUTE}, got {0}")]
    MinuteOutOfRange(u16),
    #[error("a side can have at most {MAX_GOALS} goals, got {0}")]
    TooManyGoals(u16),
    #[error("a side can have at most {MAX_RED_CARDS} red cards, got {0}")]
    TooManyRedCards(u8),
    #[error("samples must be between 1 and {MAX_SAMPLES}, got {0}")]
    SamplesOutOfRange(u64),
    #[error("events must be in minute order: minute {later} came after minute {earlier}")]
    EventsOutOfOrder { earlier: u16, later: u16 },
}

impl Default for WinProbConfig {
    fn default() -> Self {
        Self {
            goals_per_90: 1.35,
            home_advantage: 1.11,
            red_card_own_factor: 0.67,
            red_card_opponent_factor: 1.25,
            added_minutes: 4.0,
        }
    }
}

impl WinProbModel {
    /// Accepts a configuration whose every parameter is in its documented
    /// range. The ranges keep expected goals small enough that the closed
    /// form's sums stay short and its terms never underflow.
    pub fn new(config: WinProbConfig) -> Result<Self, WinProbError> {
        check("goals_per_90", config.goals_per_90, f64::MIN_POSITIVE, 6.0)?;
        check("home_advantage", config.home_advantage, 1.0, 1.5)?;
        check("red_card_own_factor", config.red_card_own_factor, f64::MIN_POSITIVE, 1.0)?;
        check("red_card_opponent_factor", config.red_card_opponent_factor, 1.0, 1.6)?;
        check("added_minutes", config.added_minutes, 0.0, 15.0)?;
        Ok(Self { config })
    }

    pub fn config(&self) -> WinProbConfig {
        self.config
    }

    /// Minutes of play left at `state`'s minute.
    pub fn minutes_left(&self, state: &ScoreState) -> f64 {
        (f64::from(REGULATION_MINUTES) + self.config.added_minutes - f64::from(state.minute)).max(0.0)
    }

    /// The goals each side is expected to score from `state` to the end:
    /// `(home, away)`.
    pub fn expected_goals(&self, state: &ScoreState) -> (f64, f64) {
        let c = &self.config;
        let share = self.minutes_left(state) / 90.0;
        let home = c.goals_per_90
            * c.home_advantage
            * c.red_card_own_factor.powi(i32::from(state.home_reds))
            * c.red_card_opponent_factor.powi(i32::from(state.away_reds));
        let away = c.goals_per_90 / c.home_advantage
            * c.red_card_own_factor.powi(i32::from(state.away_reds))
            * c.red_card_opponent_factor.powi(i32::from(state.home_reds));
        (home * share, away * share)
    }

    /// The result probabilities from the two Poisson distributions.
    ///
    /// Each distribution is summed until its remaining tail is negligible
    /// and then renormalised, and the three results are renormalised once
    /// more, so they sum to 1 up to float rounding.
    pub fn closed_form(&self, state: &ScoreState) -> Outcome {
        let (home_rate, away_rate) = self.expected_goals(state);
        let home = poisson_pmf(home_rate);
        let away = poisson_pmf(away_rate);
        // below[k] = P(away scores fewer than k more), above[k] = P(more than k).
        let mut below = Vec::with_capacity(away.len() + 1);
        let mut running = 0.0;
        below.push(0.0);
        for p in &away {
            running += p;
            below.push(running);
        }
        let mut above = vec![0.0; away.len()];
        let mut running = 0.0;
        for k in (0..away.len()).rev() {
            above[k] = running;
            running += away[k];
        }

        let lead = i64::from(state.home_goals) - i64::from(state.away_goals);
        let (mut home_win, mut draw, mut away_win) = (0.0, 0.0, 0.0);
        for (i, p) in home.iter().enumerate() {
            // The away side needs exactly `needed` more goals to draw.
            let needed = lead + i as i64;
            if needed < 0 {
                away_win += p;
                continue;
            }
            let needed = needed as usize;
            if needed >= away.len() {
                home_win += p;
                continue;
            }
            home_win += p * below[needed];
            draw += p * away[needed];
            away_win += p * above[needed];
        }
        Outcome::normalised(home_win, draw, away_win)
    }

    /// The result probabilities from `run.samples()` simulated endings.
    pub fn simulate(&self, state: &ScoreState, run: MonteCarlo) -> Outcome {
        self.simulate_blocks(state, run, 0..block_count(run.samples)).outcome()
    }

    /// Simulates only the given blocks of `run`; see [`block_count`]. Blocks
    /// draw from their own random streams, so splitting the range across
    /// threads and merging the counts gives exactly [`WinProbModel::simulate`].
    pub fn simulate_blocks(
        &self,
        state: &ScoreState,
        run: MonteCarlo,
        blocks: Range<u64>,
    ) -> SimulationCounts {
        let (home_rate, away_rate) = self.expected_goals(state);
        let total_rate = home_rate + away_rate;
        let home_share = if total_rate > 0.0 { home_rate / total_rate } else { 0.0 };
        let lead = i64::from(state.home_goals) - i64::from(state.away_goals);
        let last = block_count(run.samples);
        let mut counts = SimulationCounts::default();
        for block in blocks.start..blocks.end.min(last) {
            let mut rng = Rng::stream(run.seed, block);
            let first = block * BLOCK_SAMPLES;
            let samples = BLOCK_SAMPLES.min(run.samples - first);
            for _ in 0..samples {
                let margin = lead + simulate_goals(&mut rng, total_rate, home_share);
                match margin.cmp(&0) {
                    std::cmp::Ordering::Greater => counts.home_wins += 1,
                    std::cmp::Ordering::Equal => counts.draws += 1,
                    std::cmp::Ordering::Less => counts.away_wins += 1,
                }
            }
        }
        counts
    }

    /// How much `scorer`'s win probability rises when it scores at
    /// `before`: after minus before, from the closed form.
    pub fn win_probability_added(&self, before: &ScoreState, scorer: Side) -> Result<f64, WinProbError> {
        let after = before.with_goal(scorer)?;
        Ok(self.closed_form(&after).win(scorer) - self.closed_form(before).win(scorer))
    }

    /// Credits each goal in a match with the win probability it added.
    /// `events` must be in minute order; red cards change the state for the
    /// goals after them.
    pub fn goal_credits(&self, events: &[ScoreEvent]) -> Result<Vec<GoalCredit>, WinProbError> {
        let mut state = ScoreState::kick_off();
        let mut credits = Vec::new();
        let mut previous_minute = 0;
        for event in events {
            let minute = event.minute();
            if minute < previous_minute {
                return Err(WinProbError::EventsOutOfOrder { earlier: previous_minute, later: minute });
            }
            previous_minute = minute;
            state = state.at_minute(minute)?;
            match *event {
                ScoreEvent::Goal { side, scorer, .. } => {
                    let added = self.win_probability_added(&state, side)?;
                    credits.push(GoalCredit { scorer, side, minute, win_probability_added: added });
                    state = state.with_goal(side)?;
                }
                ScoreEvent::RedCard { side, .. } => state = state.with_red_card(side)?,
            }
        }
        Ok(credits)
    }
}

impl Side {
    pub fn opponent(self) -> Self {
        match self {
            Self::Home => Self::Away,
            Self::Away => Self::Home,
        }
    }
}

impl ScoreState {
    /// Accepts a minute up to [`MAX_MINUTE`], at most [`MAX_GOALS`] goals and
    /// at most [`MAX_RED_CARDS`] red cards a side.
    pub fn new(
        minute: u16,
        home_goals: u16,
        away_goals: u16,
        home_reds: u8,
        away_reds: u8,
    ) -> Result<Self, WinProbError> {
        if minute > MAX_MINUTE {
            return Err(WinProbError::MinuteOutOfRange(minute));
        }
        for goals in [home_goals, away_goals] {
            if goals > MAX_GOALS {
                return Err(WinProbError::TooManyGoals(goals));
            }
        }
        for reds in [home_reds, away_reds] {
            if reds > MAX_RED_CARDS {
                return Err(WinProbError::TooManyRedCards(reds));
            }
        }
        Ok(Self { minute, home_goals, away_goals, home_reds, away_reds })
    }

    /// Minute 0, no goals, no cards.
    pub fn kick_off() -> Self {
        Self { minute: 0, home_goals: 0, away_goals: 0, home_reds: 0, away_reds: 0 }
    }

    /// The same state at another minute.
    pub fn at_minute(self, minute: u16) -> Result<Self, WinProbError> {
        Self::new(minute, self.home_goals, self.away_goals, self.home_reds, self.away_reds)
    }

    /// The state after `side` scores.
    pub fn with_goal(self, side: Side) -> Result<Self, WinProbError> {
        let (home, away) = match side {
            Side::Home => (self.home_goals.saturating_add(1), self.away_goals),
            Side::Away => (self.home_goals, self.away_goals.saturating_add(1)),
        };
        Self::new(self.minute, home, away, self.home_reds, self.away_reds)
    }

    /// The state after `side` has a player sent off.
    pub fn with_red_card(self, side: Side) -> Result<Self, WinProbError> {
        let (home, away) = match side {
            Side::Home => (self.home_reds.saturating_add(1), self.away_reds),
            Side::Away => (self.home_reds, self.away_reds.saturating_add(1)),
        };
        Self::new(self.minute, self.home_goals, self.away_goals, home, away)
    }

    pub fn minute(&self) -> u16 {
        self.minute
    }

    pub fn goals(&self, side: Side) -> u16 {
        match side {
            Side::Home => self.home_goals,
            Side::Away => self.away_goals,
        }
    }

    pub fn red_cards(&self, side: Side) -> u8 {
        match side {
            Side::Home => self.home_reds,
            Side::Away => self.away_reds,
        }
    }
}

impl Outcome {
    fn normalised(home_win: f64, draw: f64, away_win: f64) -> Self {
        let total = home_win + draw + away_win;
        Self { home_win: home_win / total, draw: draw / total, away_win: away_win / total }
    }

    pub fn home_win(&self) -> f64 {
        self.home_win
    }

    pub fn draw(&self) -> f64 {
        self.draw
    }

    pub fn away_win(&self) -> f64 {
        self.away_win
    }

    /// The probability that `side` wins.
    pub fn win(&self, side: Side) -> f64 {
        match side {
            Side::Home => self.home_win,
            Side::Away => self.away_win,
        }
    }
}

impl MonteCarlo {
    /// Accepts between 1 and [`MAX_SAMPLES`] samples.
    pub fn new(samples: u64, seed: u64) -> Result<Self, WinProbError> {
        if samples == 0 || samples > MAX_SAMPLES {
            return Err(WinProbError::SamplesOutOfRange(samples));
        }
        Ok(Self { samples, seed })
    }

    pub fn samples(&self) -> u64 {
        self.samples
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The number of blocks the run is split into.
    pub fn blocks(&self) -> u64 {
        block_count(self.samples)
    }
}

impl SimulationCounts {
    /// Both counts together; exact, so blocks can be merged in any order.
    pub fn merge(self, other: Self) -> Self {
        Self {
            home_wins: self.home_wins + other.home_wins,
            draws: self.draws + other.draws,
            away_wins: self.away_wins + other.away_wins,
        }
    }

    pub fn samples(&self) -> u64 {
        self.home_wins + self.draws + self.away_wins
    }

    /// The counts as probabilities; all zero when there are no samples.
    pub fn outcome(&self) -> Outcome {
        let n = self.samples();
        if n == 0 {
            return Outcome { home_win: 0.0, draw: 0.0, away_win: 0.0 };
        }
        let n = n as f64;
        Outcome {
            home_win: self.home_wins as f64 / n,
            draw: self.draws as f64 / n,
            away_win: self.away_wins as f64 / n,
        }
    }
}

impl ScoreEvent {
    pub fn minute(&self) -> u16 {
        match *self {
            Self::Goal { minute, .. } | Self::RedCard { minute, .. } => minute,
        }
    }
}

/// The number of [`BLOCK_SAMPLES`]-sized blocks `samples` are split into.
pub fn block_count(samples: u64) -> u64 {
    samples.div_ceil(BLOCK_SAMPLES)
}

/// The home side's goals minus the away side's in one simulated ending.
///
/// Plays the rest of the match goal by goal: the waiting time to the next
/// goal of either side is exponential (in units of the time left, with the
/// combined expected goals as rate), and each goal is the home side's with
/// its share of the rate. This is exactly two independent Poisson counts,
/// drawn the slow way on purpose: it is the benchmark's CPU-heavy path.
fn simulate_goals(rng: &mut Rng, total_rate: f64, home_share: f64) -> i64 {
    if total_rate <= 0.0 {
        return 0;
    }
    let mut margin = 0;
    let mut clock = 0.0;
    loop {
        clock += -rng.next_f64_open_zero().ln() / total_rate;
        if clock >= 1.0 {
            return margin;
        }
        if rng.next_f64() < home_share {
            margin += 1;
        } else {
            margin -= 1;
        }
    }
}

/// The Poisson probabilities of 0, 1, 2, ... goals at `rate`, cut where the
/// tail is negligible and renormalised to sum to 1.
fn poisson_pmf(rate: f64) -> Vec<f64> {
    let mut pmf = vec![(-rate).exp()];
    let mut term = pmf[0];
    for k in 1..=MAX_GOALS_SUMMED {
        term *= rate / k as f64;
        // Past the mode the terms only shrink, and faster than
        // geometrically, so once one is negligible the rest are too.
        if k as f64 > rate && term < TAIL_PROBABILITY {
            break;
        }
        pmf.push(term);
    }
    let total: f64 = pmf.iter().sum();
    for p in &mut pmf {
        *p /= total;
    }
    pmf
}

fn check(name: &'static str, value: f64, min: f64, max: f64) -> Result<(), WinProbError> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(WinProbError::ParameterOutOfRange { name, value, min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_terms_sum_to_one_and_match_the_formula() {
        let pmf = poisson_pmf(1.5);
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((pmf[2] - 1.5f64.powi(2) / 2.0 * (-1.5f64).exp()).abs() < 1e-15);
        assert_eq!(poisson_pmf(0.0), vec![1.0]);
    }

    #[test]
    fn a_finished_match_is_decided_by_the_score() {
        let model = WinProbModel::default();
        let state = ScoreState::new(MAX_MINUTE, 2, 1, 0, 0).expect("valid state");
        let outcome = model.closed_form(&state);
        assert_eq!((outcome.home_win(), outcome.draw(), outcome.away_win()), (1.0, 0.0, 0.0));
    }

    #[test]
    fn config_and_state_reject_out_of_range_values() {
        let bad = WinProbConfig { home_advantage: 2.0, ..WinProbConfig::default() };
        let err = WinProbModel::new(bad).expect_err("out of range");
        assert_eq!(err.to_string(), "home_advantage must be a finite number in [1, 1.5], got 2");
        assert!(
            WinProbModel::new(WinProbConfig { goals_per_90: f64::NAN, ..WinProbConfig::default() }).is_err()
        );
        // The live feed's limit: every minute an event may carry can be valued.
        assert!(ScoreState::new(crate::live::MAX_MINUTE, 0, 0, 0, 0).is_ok());
        assert_eq!(ScoreState::new(151, 0, 0, 0, 0), Err(WinProbError::MinuteOutOfRange(151)));
        assert_eq!(ScoreState::new(10, 0, 0, 5, 0), Err(WinProbError::TooManyRedCards(5)));
        assert_eq!(ScoreState::new(10, 51, 0, 0, 0), Err(WinProbError::TooManyGoals(51)));
        assert_eq!(MonteCarlo::new(0, 1), Err(WinProbError::SamplesOutOfRange(0)));
    }
}
