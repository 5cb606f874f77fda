//! A seeded synthetic season: teams, squads, fixtures, and for each match a
//! realistic stream of SPADL actions with the minutes each player played.
//!
//! Tests use small seasons; benchmarks use ten million actions. Everything
//! follows from the seed: the same [`SeasonConfig`] gives the same season on
//! every machine. To make that hold across platforms the generator uses only
//! IEEE arithmetic that is exactly rounded everywhere (+, -, *, /, sqrt,
//! round), never `ln`, `exp` or `powf`, whose last bits differ between math
//! libraries.
//!
//! Each match is generated from its own random stream
//! ([`Season::play`] takes the match's index), so matches can be generated
//! in parallel, or streamed one at a time, and come out the same.
//!
//! The play model is deliberately simple but keeps what xT and the
//! leaderboard care about. Coordinates are in metres on a 105 x 68 m pitch,
//! in SPADL's convention: every action is seen from its own team's side,
//! attacking left to right. A possession is a run of actions by the team on
//! the ball: mostly passes (about three in five actions), then dribbles,
//! take-ons, crosses from wide in the final third and shots, more of them the
//! closer to goal. Passes fail more often the further forward they go and
//! crosses fail three times in four. A failed action hands the ball to the
//! opponents, whose first action (an interception, tackle, clearance or
//! keeper save) is recorded at the mirrored point. Fouls give free kicks and
//! penalties, failed passes near a touchline give throw-ins, saved shots give
//! goal kicks, and a goal restarts with a kick-off at the centre spot. Set
//! pieces, free-kick shots and penalties are recorded with their own SPADL
//! types, which xT ignores, so the data exercises its conventions. Better
//! players and stronger teams pass forward more and lose the ball less.

use std::collections::BTreeMap;

use crate::rng::Rng;
use crate::winprob::{MAX_RED_CARDS, ScoreEvent, Side};
use crate::xt::{Action, ActionResult, ActionType, GameId, PITCH_LENGTH, PITCH_WIDTH, PlayerId, Point};

/// Teams in a season made by [`SeasonConfig::with_total_actions`].
pub const DEFAULT_TEAMS: u16 = 20;
/// Actions per match: real SPADL data has 1,600 to 2,000.
pub const DEFAULT_ACTIONS_PER_MATCH: u32 = 2_000;
/// Players in a squad: 2 goalkeepers, 6 defenders, 6 midfielders, 4 forwards.
pub const SQUAD_SIZE: u32 = 18;
/// The largest season accepted, in matches.
pub const MAX_MATCHES: u32 = 1_000_000;

const MATCH_SECONDS: u64 = 90 * 60;
const SQUAD: [(Role, usize); 4] =
    [(Role::Goalkeeper, 2), (Role::Defender, 6), (Role::Midfielder, 6), (Role::Forward, 4)];
const LINEUP: [(Role, usize); 4] =
    [(Role::Goalkeeper, 1), (Role::Defender, 4), (Role::Midfielder, 4), (Role::Forward, 2)];
const SUBSTITUTIONS: usize = 3;

/// The size and seed of a season.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeasonConfig {
    teams: u16,
    matches: u32,
    actions_per_match: u32,
    seed: u64,
}

/// Identifies a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TeamId(u16);

/// What a player mostly does, which decides where on the pitch he acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Goalkeeper,
    Defender,
    Midfielder,
    Forward,
}

/// A team and how good it is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Team {
    id: TeamId,
    /// Around 1; better teams lose the ball less.
    strength: f64,
}

/// A squad member.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Player {
    id: PlayerId,
    team: TeamId,
    role: Role,
    /// Around 1; better players pass forward more and fail less.
    skill: f64,
}

/// One match of the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixture {
    game: GameId,
    home: TeamId,
    away: TeamId,
}

/// A generated season's teams, squads and schedule; matches are played on
/// demand.
#[derive(Debug, Clone, PartialEq)]
pub struct Season {
    config: SeasonConfig,
    teams: Vec<Team>,
    players: Vec<Player>,
    /// One double round robin; the schedule repeats it as often as needed.
    cycle: Vec<(TeamId, TeamId)>,
}

/// One played match.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchRecord {
    pub fixture: Fixture,
    /// In time order.
    pub actions: Vec<Action>,
    /// Everyone who played, with their minutes, ordered by player id.
    pub minutes: Vec<(PlayerId, u32)>,
    pub home_goals: u8,
    pub away_goals: u8,
    /// Goals and red cards, in time order.
    pub events: Vec<ScoreEvent>,
}

/// Every match of a season, played.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonRecord {
    /// Match by match, each in time order.
    pub actions: Vec<Action>,
    /// Minutes played over the season.
    pub minutes: BTreeMap<PlayerId, u32>,
    /// Each match's fixture, score and events, without its actions.
    pub results: Vec<MatchResult>,
}

/// A match's score and events.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchResult {
    pub fixture: Fixture,
    pub home_goals: u8,
    pub away_goals: u8,
    pub events: Vec<ScoreEvent>,
}

/// Why a season configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeasonError {
    #[error("teams must be an even number between 2 and 200, got {0}")]
    Teams(u16),
    #[error("matches must be between 1 and {MAX_MATCHES}, got {0}")]
    Matches(u64),
    #[error("actions per match must be between 100 and 10000, got {0}")]
    ActionsPerMatch(u32),
}

impl SeasonConfig {
    /// Accepts an even number of teams (2 to 200), 1 to [`MAX_MATCHES`]
    /// matches and 100 to 10,000 actions per match.
    pub fn new(teams: u16, matches: u32, actions_per_match: u32, seed: u64) -> Result<Self, SeasonError> {
        if !(2..=200).contains(&teams) || !teams.is_multiple_of(2) {
            return Err(SeasonError::Teams(teams));
        }
        if !(1..=MAX_MATCHES).contains(&matches) {
            return Err(SeasonError::Matches(u64::from(matches)));
        }
        if !(100..=10_000).contains(&actions_per_match) {
            return Err(SeasonError::ActionsPerMatch(actions_per_match));
        }
        Ok(Self { teams, matches, actions_per_match, seed })
    }

    /// [`DEFAULT_TEAMS`] teams playing enough matches of
    /// [`DEFAULT_ACTIONS_PER_MATCH`] actions for at least `total` actions
    /// (exactly `total` when it is a multiple of 2,000).
    pub fn with_total_actions(total: u64, seed: u64) -> Result<Self, SeasonError> {
        let matches = total.div_ceil(u64::from(DEFAULT_ACTIONS_PER_MATCH)).max(1);
        let matches = u32::try_from(matches).map_err(|_| SeasonError::Matches(matches))?;
        Self::new(DEFAULT_TEAMS, matches, DEFAULT_ACTIONS_PER_MATCH, seed)
    }

    pub fn teams(&self) -> u16 {
        self.teams
    }

    pub fn matches(&self) -> u32 {
        self.matches
    }

    pub fn actions_per_match(&self) -> u32 {
        self.actions_per_match
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The number of actions the season has.
    pub fn total_actions(&self) -> u64 {
        u64::from(self.matches) * u64::from(self.actions_per_match)
    }
}

impl TeamId {
    pub const fn new(id: u16) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl Team {
    pub fn id(&self) -> TeamId {
        self.id
    }

    pub fn strength(&self) -> f64 {
        self.strength
    }
}

impl Player {
    pub fn id(&self) -> PlayerId {
        self.id
    }

    pub fn team(&self) -> TeamId {
        self.team
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn skill(&self) -> f64 {
        self.skill
    }
}

impl Fixture {
    pub fn game(&self) -> GameId {
        self.game
    }

    pub fn home(&self) -> TeamId {
        self.home
    }

    pub fn away(&self) -> TeamId {
        self.away
    }
}

impl Season {
    /// Draws the teams and squads and lays out the schedule.
    pub fn new(config: SeasonConfig) -> Self {
        let mut rng = Rng::stream(config.seed, 0);
        let mut teams = Vec::with_capacity(usize::from(config.teams));
        let mut players = Vec::with_capacity(usize::from(config.teams) * SQUAD_SIZE as usize);
        for t in 0..config.teams {
            let id = TeamId(t + 1);
            teams.push(Team { id, strength: rng.uniform(0.85, 1.15) });
            for (role, count) in SQUAD {
                for _ in 0..count {
                    let number = players.len() as u32 + 1;
                    // The average of two uniforms: most players near 1, a few
                    // clearly better or worse.
                    let skill = 0.8 + 0.2 * (rng.next_f64() + rng.next_f64());
                    players.push(Player { id: PlayerId::new(number), team: id, role, skill });
                }
            }
        }
        Self { config, teams, players, cycle: double_round_robin(config.teams) }
    }

    pub fn config(&self) -> SeasonConfig {
        self.config
    }

    pub fn teams(&self) -> &[Team] {
        &self.teams
    }

    pub fn players(&self) -> &[Player] {
        &self.players
    }

    /// The player with `id`, if the season has one.
    pub fn player(&self, id: PlayerId) -> Option<&Player> {
        let index = usize::try_from(id.get()).ok()?.checked_sub(1)?;
        self.players.get(index)
    }

    /// The fixture of match `index` (0-based); its game id is `index + 1`.
    pub fn fixture(&self, index: u32) -> Fixture {
        let (home, away) = self.cycle[index as usize % self.cycle.len()];
        Fixture { game: GameId::new(index + 1), home, away }
    }

    /// Plays match `index` (0-based, below `config().matches()`; larger
    /// indexes wrap round the schedule and are just as deterministic).
    pub fn play(&self, index: u32) -> MatchRecord {
        let fixture = self.fixture(index);
        let rng = Rng::stream(self.config.seed, u64::from(index) + 1);
        MatchSim::new(self, fixture, rng).run()
    }

    /// Plays every match in order and gathers the results.
    pub fn play_all(&self) -> SeasonRecord {
        let capacity = usize::try_from(self.config.total_actions()).unwrap_or(0);
        let mut record = SeasonRecord {
            actions: Vec::with_capacity(capacity),
            minutes: BTreeMap::new(),
            results: Vec::new(),
        };
        for index in 0..self.config.matches {
            let played = self.play(index);
            record.actions.extend_from_slice(&played.actions);
            for (player, minutes) in played.minutes {
                *record.minutes.entry(player).or_insert(0) += minutes;
            }
            record.results.push(MatchResult {
                fixture: played.fixture,
                home_goals: played.home_goals,
                away_goals: played.away_goals,
                events: played.events,
            });
        }
        record
    }
}

/// The circle method: every team meets every other once at home and once
/// away.
fn double_round_robin(teams: u16) -> Vec<(TeamId, TeamId)> {
    let n = usize::from(teams);
    let mut circle: Vec<u16> = (1..=teams).collect();
    let mut first_half = Vec::with_capacity(n * (n - 1) / 2);
    for round in 0..n - 1 {
        for i in 0..n / 2 {
            let (a, b) = (TeamId(circle[i]), TeamId(circle[n - 1 - i]));
            // Alternate who is at home so no team is always home or away.
            first_half.push(if (round + i) % 2 == 0 { (a, b) } else { (b, a) });
        }
        // Keep the first team fixed and rotate the rest one place.
        circle[1..].rotate_right(1);
    }
    let second_half: Vec<_> = first_half.iter().map(|&(home, away)| (away, home)).collect();
    first_half.extend(second_half);
    first_half
}

/// A player's time on the pitch in one match.
#[derive(Debug, Clone, Copy)]
struct Stint {
    player: usize,
    on: u32,
    off: Option<u32>,
}

/// One side's state in a match being played.
#[derive(Debug)]
struct SideState {
    strength: f64,
    /// Squad indexes into `Season::players` of the eleven slots; `None`
    /// after a red card.
    slots: [Option<usize>; 11],
    bench: Vec<usize>,
    /// Minute and slot of each planned substitution, earliest first.
    substitutions: Vec<(u32, usize)>,
    stints: Vec<Stint>,
    goalkeeper: usize,
    red_cards: u8,
}

/// A match being played.
#[derive(Debug)]
struct MatchSim<'a> {
    season: &'a Season,
    fixture: Fixture,
    rng: Rng,
    sides: [SideState; 2],
    /// 0 for home, 1 for away.
    attacking: usize,
    /// The ball, seen from the attacking side.
    ball: (f64, f64),
    actions: Vec<Action>,
    goals: [u8; 2],
    events: Vec<ScoreEvent>,
    second: u32,
}

impl<'a> MatchSim<'a> {
    fn new(season: &'a Season, fixture: Fixture, mut rng: Rng) -> Self {
        let home = SideState::pick(season, fixture.home, &mut rng);
        let away = SideState::pick(season, fixture.away, &mut rng);
        let budget = season.config.actions_per_match as usize;
        Self {
            season,
            fixture,
            rng,
            sides: [home, away],
            attacking: 0,
            ball: (52.5, 34.0),
            actions: Vec::with_capacity(budget),
            goals: [0, 0],
            events: Vec::new(),
            second: 0,
        }
    }

    fn run(mut self) -> MatchRecord {
        let budget = self.season.config.actions_per_match as usize;
        self.kick_off(0);
        while self.actions.len() < budget {
            let count = self.actions.len() as u64;
            // Spread the actions evenly over the 90 minutes.
            self.second = (count * MATCH_SECONDS / budget as u64) as u32;
            let minute = self.second / 60;
            for side in &mut self.sides {
                side.substitute_until(minute, &self.season.players);
            }
            self.step();
        }
        self.actions.truncate(budget);

        let mut minutes: Vec<(PlayerId, u32)> = self
            .sides
            .iter()
            .flat_map(|side| side.stints.iter())
            .map(|stint| {
                let off = stint.off.unwrap_or(90);
                (self.season.players[stint.player].id, off.saturating_sub(stint.on))
            })
            .collect();
        minutes.sort_unstable();
        MatchRecord {
            fixture: self.fixture,
            actions: self.actions,
            minutes,
            home_goals: self.goals[0],
            away_goals: self.goals[1],
            events: self.events,
        }
    }

    /// One decision by the team on the ball.
    fn step(&mut self) {
        let (x, y) = self.ball;
        let distance = ((PITCH_LENGTH - x) * (PITCH_LENGTH - x) + (34.0 - y) * (34.0 - y)).sqrt();
        let shoot = match distance {
            d if d < 11.0 => 0.2,
            d if d < 18.0 => 0.08,
            d if d < 25.0 => 0.03,
            d if d < 32.0 => 0.007,
            _ => 0.0,
        };
        let wide = !(14.0..=54.0).contains(&y);
        let cross = if wide && x > 75.0 { 0.3 } else { 0.0 };
        let clear = if x < 20.0 { 0.05 } else { 0.0 };
        let r = self.rng.next_f64();
        if r < 0.012 {
            self.foul();
        } else if r < 0.012 + shoot {
            self.shot();
        } else if r < 0.012 + shoot + cross {
            self.cross();
        } else if r < 0.012 + shoot + cross + clear {
            self.clearance();
        } else {
            let rest = self.rng.next_f64();
            if rest < 0.15 {
                self.dribble();
            } else if rest < 0.18 {
                self.take_on();
            } else if rest < 0.19 {
                self.bad_touch();
            } else {
                self.pass();
            }
        }
    }

    fn pass(&mut self) {
        let player = self.pick_player();
        let skill = self.season.players[player].skill;
        let (x, y) = self.ball;
        let forward = self.rng.uniform(-12.0, 22.0) + (skill - 1.0) * 25.0;
        // Passes near a touchline tend back inside, as players face play.
        let end = (x + forward, y + self.rng.uniform(-16.0, 16.0) + 0.12 * (34.0 - y));
        let out = end.1 < 0.0 || end.1 > PITCH_WIDTH;
        let end = clamp_to_pitch(end);
        let depth = end.0 / PITCH_LENGTH;
        let success = 0.94 - 0.28 * depth * depth - 0.004 * forward.max(0.0) + self.edge(player);
        if !out && self.rng.chance(success) {
            self.record(ActionType::Pass, ActionResult::Success, player, (x, y), end);
            self.ball = round_point(end);
        } else if end.0 > 80.0 && self.rng.chance(0.08) {
            self.record(ActionType::Pass, ActionResult::Offside, player, (x, y), end);
            self.turnover_free_kick(end);
        } else if out {
            self.record(ActionType::Pass, ActionResult::Fail, player, (x, y), end);
            self.turnover_throw_in(end);
        } else {
            self.record(ActionType::Pass, ActionResult::Fail, player, (x, y), end);
            let kind = if self.rng.chance(0.7) { ActionType::Interception } else { ActionType::Tackle };
            self.turnover_with(kind, end);
        }
    }

    fn dribble(&mut self) {
        let player = self.pick_player();
        let (x, y) = self.ball;
        let end = clamp_to_pitch((x + self.rng.uniform(0.0, 12.0), y + self.rng.uniform(-5.0, 5.0)));
        if self.rng.chance(0.93 + self.edge(player)) {
            self.record(ActionType::Dribble, ActionResult::Success, player, (x, y), end);
            self.ball = round_point(end);
        } else {
            self.record(ActionType::Dribble, ActionResult::Fail, player, (x, y), end);
            self.turnover_with(ActionType::Tackle, end);
        }
    }

    fn take_on(&mut self) {
        let player = self.pick_player();
        let at = self.ball;
        if self.rng.chance(0.55 + self.edge(player)) {
            self.record(ActionType::TakeOn, ActionResult::Success, player, at, at);
        } else {
            self.record(ActionType::TakeOn, ActionResult::Fail, player, at, at);
            self.turnover_with(ActionType::Tackle, at);
        }
    }

    fn bad_touch(&mut self) {
        let player = self.pick_player();
        let at = self.ball;
        let end = clamp_to_pitch((at.0 + self.rng.uniform(-2.0, 3.0), at.1 + self.rng.uniform(-2.0, 2.0)));
        self.record(ActionType::BadTouch, ActionResult::Fail, player, at, end);
        self.turnover_with(ActionType::Interception, end);
    }

    fn cross(&mut self) {
        let player = self.pick_player();
        let start = self.ball;
        let end = (self.rng.uniform(86.0, 103.0), self.rng.uniform(22.0, 46.0));
        if self.rng.chance(0.25 + self.edge(player)) {
            self.record(ActionType::Cross, ActionResult::Success, player, start, end);
            self.ball = round_point(end);
        } else {
            self.record(ActionType::Cross, ActionResult::Fail, player, start, end);
            if self.rng.chance(0.3) {
                self.corner();
            } else {
                self.turnover_with(ActionType::Clearance, end);
            }
        }
    }

    fn clearance(&mut self) {
        let player = self.pick_player();
        let start = self.ball;
        let end =
            clamp_to_pitch((start.0 + self.rng.uniform(25.0, 50.0), start.1 + self.rng.uniform(-20.0, 20.0)));
        if self.rng.chance(0.003) {
            // An own goal: the clearance goes into the team's own net.
            let own_goal = (0.0, self.rng.uniform(30.5, 37.5));
            self.record(ActionType::Clearance, ActionResult::OwnGoal, player, start, own_goal);
            self.goal_for(1 - self.attacking, player);
        } else if self.rng.chance(0.45) {
            self.record(ActionType::Clearance, ActionResult::Success, player, start, end);
            self.ball = round_point(end);
        } else {
            self.record(ActionType::Clearance, ActionResult::Fail, player, start, end);
            self.turnover_with(ActionType::Interception, end);
        }
    }

    fn shot(&mut self) {
        let player = self.pick_player();
        let start = self.ball;
        let distance = ((PITCH_LENGTH - start.0) * (PITCH_LENGTH - start.0)
            + (34.0 - start.1) * (34.0 - start.1))
            .sqrt();
        let base = match distance {
            d if d < 6.0 => 0.3,
            d if d < 11.0 => 0.12,
            d if d < 18.0 => 0.055,
            d if d < 25.0 => 0.03,
            _ => 0.015,
        };
        let scored = self.rng.chance(base + 0.5 * self.edge(player));
        self.finish_shot(ActionType::Shot, player, start, scored);
    }

    fn finish_shot(&mut self, kind: ActionType, player: usize, start: (f64, f64), scored: bool) {
        if scored {
            let end = (PITCH_LENGTH, self.rng.uniform(30.5, 37.5));
            self.record(kind, ActionResult::Success, player, start, end);
            self.goal_for(self.attacking, player);
        } else if self.rng.chance(0.35) {
            let end = (PITCH_LENGTH, self.rng.uniform(30.5, 37.5));
            self.record(kind, ActionResult::Fail, player, start, end);
            self.switch_possession();
            let keeper = self.sides[self.attacking].goalkeeper;
            let at = mirror(end);
            self.record(ActionType::KeeperSave, ActionResult::Success, keeper, at, at);
            self.ball = (5.0, 34.0);
        } else {
            let end = (PITCH_LENGTH, self.rng.uniform(20.0, 48.0));
            self.record(kind, ActionResult::Fail, player, start, end);
            self.switch_possession();
            let keeper = self.sides[self.attacking].goalkeeper;
            let start = (5.5, 34.0);
            let end = (self.rng.uniform(30.0, 70.0), self.rng.uniform(5.0, 63.0));
            if self.rng.chance(0.55) {
                self.record(ActionType::Goalkick, ActionResult::Success, keeper, start, end);
                self.ball = round_point(end);
            } else {
                self.record(ActionType::Goalkick, ActionResult::Fail, keeper, start, end);
                self.turnover_with(ActionType::Interception, end);
            }
        }
    }

    /// A defender fouls the player on the ball; the attackers restart.
    fn foul(&mut self) {
        let at = self.ball;
        let defending = 1 - self.attacking;
        let Some(fouler) = self.sides[defending].random_on_pitch(&mut self.rng) else {
            return;
        };
        let card = self.rng.next_f64();
        // A fifth red card would abandon the match, and a keeper sent off
        // would need a replacement; neither is worth modelling.
        let may_send_off =
            self.sides[defending].red_cards < MAX_RED_CARDS && fouler != self.sides[defending].goalkeeper;
        let result = if card < 0.004 && may_send_off {
            ActionResult::RedCard
        } else if card < 0.1 {
            ActionResult::YellowCard
        } else {
            ActionResult::Fail
        };
        let mirrored = mirror(at);
        self.record(ActionType::Foul, result, fouler, mirrored, mirrored);
        if result == ActionResult::RedCard {
            self.send_off(defending, fouler);
        }
        let (x, y) = at;
        let player = self.pick_player();
        if x > 88.5 && (13.84..=54.16).contains(&y) && self.rng.chance(0.5) {
            let spot = (94.0, 34.0);
            let scored = self.rng.chance(0.77);
            self.finish_shot(ActionType::ShotPenalty, player, spot, scored);
        } else if x > 75.0 && (20.0..=48.0).contains(&y) && self.rng.chance(0.3) {
            let scored = self.rng.chance(0.07);
            self.finish_shot(ActionType::ShotFreekick, player, at, scored);
        } else if x > 70.0 {
            let end = (self.rng.uniform(86.0, 103.0), self.rng.uniform(22.0, 46.0));
            self.set_piece(ActionType::FreekickCrossed, player, at, end, 0.35);
        } else {
            let end = clamp_to_pitch((x + self.rng.uniform(-5.0, 20.0), y + self.rng.uniform(-15.0, 15.0)));
            self.set_piece(ActionType::FreekickShort, player, at, end, 0.9);
        }
    }

    fn corner(&mut self) {
        let player = self.pick_player();
        let start = (PITCH_LENGTH, if self.rng.chance(0.5) { 0.0 } else { PITCH_WIDTH });
        let end = (self.rng.uniform(88.0, 103.0), self.rng.uniform(22.0, 46.0));
        if self.rng.chance(0.1) {
            let end = (self.rng.uniform(95.0, 105.0), self.rng.uniform(0.0, 20.0));
            let end = if start.1 > 0.0 { (end.0, PITCH_WIDTH - end.1) } else { end };
            self.set_piece(ActionType::CornerShort, player, start, end, 0.9);
        } else {
            self.set_piece(ActionType::CornerCrossed, player, start, end, 0.3);
        }
    }

    fn set_piece(
        &mut self,
        kind: ActionType,
        player: usize,
        start: (f64, f64),
        end: (f64, f64),
        success: f64,
    ) {
        if self.rng.chance(success) {
            self.record(kind, ActionResult::Success, player, start, end);
            self.ball = round_point(end);
        } else {
            self.record(kind, ActionResult::Fail, player, start, end);
            self.turnover_with(ActionType::Clearance, end);
        }
    }

    fn goal_for(&mut self, side: usize, player: usize) {
        self.goals[side] = self.goals[side].saturating_add(1);
        let minute = (self.second / 60).min(90) as u16;
        let side_id = if side == 0 { Side::Home } else { Side::Away };
        // An own goal is the acting player's, but credits nobody.
        let scorer = (side == self.attacking).then(|| self.season.players[player].id);
        self.events.push(ScoreEvent::Goal { minute, side: side_id, scorer });
        // The team that conceded kicks off.
        self.kick_off(1 - side);
    }

    fn kick_off(&mut self, side: usize) {
        self.attacking = side;
        let player = self.pick_player();
        let start = (52.5, 34.0);
        let end = (self.rng.uniform(35.0, 52.0), self.rng.uniform(20.0, 48.0));
        self.record(ActionType::Pass, ActionResult::Success, player, start, end);
        self.ball = round_point(end);
    }

    fn send_off(&mut self, side: usize, player: usize) {
        let minute = self.second / 60;
        let state = &mut self.sides[side];
        state.red_cards += 1;
        if let Some(slot) = state.slots.iter_mut().find(|slot| **slot == Some(player)) {
            *slot = None;
        }
        if let Some(stint) =
            state.stints.iter_mut().find(|stint| stint.player == player && stint.off.is_none())
        {
            stint.off = Some(minute);
        }
        let side_id = if side == 0 { Side::Home } else { Side::Away };
        self.events.push(ScoreEvent::RedCard { minute: minute.min(90) as u16, side: side_id });
    }

    /// The ball goes to the other side at the mirrored point of `at`, where
    /// one of its players records `kind`.
    fn turnover_with(&mut self, kind: ActionType, at: (f64, f64)) {
        self.switch_possession();
        let at = round_point(mirror(at));
        if let Some(player) = self.sides[self.attacking].random_on_pitch(&mut self.rng) {
            self.record(kind, ActionResult::Success, player, at, at);
        }
        self.ball = at;
    }

    fn turnover_throw_in(&mut self, at: (f64, f64)) {
        self.switch_possession();
        let (x, y) = mirror(at);
        let start = (x, if y < PITCH_WIDTH / 2.0 { 0.0 } else { PITCH_WIDTH });
        let player = self.pick_player();
        let end = clamp_to_pitch((x + self.rng.uniform(-8.0, 12.0), if start.1 == 0.0 { 6.0 } else { 62.0 }));
        self.set_piece(ActionType::ThrowIn, player, start, end, 0.85);
    }

    fn turnover_free_kick(&mut self, at: (f64, f64)) {
        self.switch_possession();
        let start = round_point(mirror(at));
        let player = self.pick_player();
        let end =
            clamp_to_pitch((start.0 + self.rng.uniform(5.0, 35.0), start.1 + self.rng.uniform(-15.0, 15.0)));
        self.set_piece(ActionType::FreekickShort, player, start, end, 0.8);
    }

    fn switch_possession(&mut self) {
        self.attacking = 1 - self.attacking;
    }

    /// How much better than average the player's team and the player are,
    /// against the opponents: a small shift to success probabilities.
    fn edge(&self, player: usize) -> f64 {
        let own = &self.sides[self.attacking];
        let other = &self.sides[1 - self.attacking];
        0.15 * (self.season.players[player].skill - 1.0) + 0.2 * (own.strength - other.strength)
    }

    /// A player of the attacking side, more likely the one whose role puts
    /// him where the ball is.
    fn pick_player(&mut self) -> usize {
        let x = self.ball.0;
        let weight = |role: Role| match role {
            Role::Goalkeeper if x < 20.0 => 1.5,
            Role::Goalkeeper if x < 35.0 => 0.3,
            Role::Goalkeeper => 0.0,
            Role::Defender if x < 35.0 => 3.0,
            Role::Defender if x < 70.0 => 1.5,
            Role::Defender => 0.5,
            Role::Midfielder if x < 35.0 => 1.5,
            Role::Midfielder if x < 70.0 => 3.0,
            Role::Midfielder => 2.0,
            Role::Forward if x < 35.0 => 0.3,
            Role::Forward if x < 70.0 => 1.0,
            Role::Forward => 3.0,
        };
        let side = &self.sides[self.attacking];
        let players = &self.season.players;
        let total: f64 = side.slots.iter().flatten().map(|&p| weight(players[p].role)).sum();
        let mut target = self.rng.next_f64() * total;
        let mut chosen = side.goalkeeper;
        for &p in side.slots.iter().flatten() {
            let w = weight(players[p].role);
            if w > 0.0 {
                chosen = p;
                if target < w {
                    break;
                }
                target -= w;
            }
        }
        chosen
    }

    /// Records an action by `player`, with coordinates clamped to the pitch
    /// and rounded to 10 cm as providers' are.
    fn record(
        &mut self,
        kind: ActionType,
        result: ActionResult,
        player: usize,
        start: (f64, f64),
        end: (f64, f64),
    ) {
        let (Ok(start), Ok(end)) = (to_point(start), to_point(end)) else {
            // Unreachable: every point is clamped to the pitch first.
            return;
        };
        let action = Action::new(kind, result, start, end, self.season.players[player].id)
            .with_game(self.fixture.game)
            .with_second(self.second);
        self.actions.push(action);
    }
}

impl SideState {
    /// Picks the starting eleven, the bench and the substitutions.
    fn pick(season: &Season, team: TeamId, rng: &mut Rng) -> Self {
        let first = (usize::from(team.0) - 1) * SQUAD_SIZE as usize;
        let strength = season.teams[usize::from(team.0) - 1].strength;
        let mut slots = [None; 11];
        let mut bench = Vec::new();
        let mut slot = 0;
        let mut offset = first;
        for ((_, squad), (_, lineup)) in SQUAD.iter().zip(LINEUP.iter()) {
            let mut group: Vec<usize> = (offset..offset + squad).collect();
            // A partial Fisher-Yates shuffle picks who starts.
            for i in 0..*lineup {
                let j = i + rng.below((squad - i) as u64) as usize;
                group.swap(i, j);
            }
            for &p in &group[..*lineup] {
                slots[slot] = Some(p);
                slot += 1;
            }
            bench.extend_from_slice(&group[*lineup..]);
            offset += squad;
        }
        let goalkeeper = slots[0].unwrap_or(first);
        // The reserve goalkeeper never comes on.
        bench.retain(|&p| season.players[p].role != Role::Goalkeeper);

        let mut substitutions = Vec::with_capacity(SUBSTITUTIONS);
        let mut outfield: Vec<usize> = (1..11).collect();
        for i in 0..SUBSTITUTIONS {
            let j = i + rng.below((outfield.len() - i) as u64) as usize;
            outfield.swap(i, j);
            let minute = 46 + rng.below(40) as u32;
            substitutions.push((minute, outfield[i]));
        }
        substitutions.sort_unstable();
        let stints = slots.iter().flatten().map(|&player| Stint { player, on: 0, off: None }).collect();
        Self { strength, slots, bench, substitutions, stints, goalkeeper, red_cards: 0 }
    }

    /// Makes every substitution due by `minute`, each with a bench player of
    /// the same role where one is left.
    fn substitute_until(&mut self, minute: u32, players: &[Player]) {
        while let Some(&(at, slot)) = self.substitutions.first() {
            if at > minute {
                break;
            }
            self.substitutions.remove(0);
            // A player sent off leaves an empty slot nobody can fill.
            let Some(leaving) = self.slots[slot] else { continue };
            if self.bench.is_empty() {
                continue;
            }
            let role = players[leaving].role;
            let position = self.bench.iter().position(|&p| players[p].role == role);
            let coming = self.bench.remove(position.unwrap_or(0));
            if let Some(stint) = self.stints.iter_mut().find(|s| s.player == leaving && s.off.is_none()) {
                stint.off = Some(at);
            }
            self.stints.push(Stint { player: coming, on: at, off: None });
            self.slots[slot] = Some(coming);
        }
    }

    fn random_on_pitch(&self, rng: &mut Rng) -> Option<usize> {
        let on: Vec<usize> = self.slots.iter().flatten().copied().collect();
        on.get(rng.below(on.len() as u64) as usize).copied()
    }
}

fn mirror((x, y): (f64, f64)) -> (f64, f64) {
    (PITCH_LENGTH - x, PITCH_WIDTH - y)
}

fn clamp_to_pitch((x, y): (f64, f64)) -> (f64, f64) {
    (x.clamp(0.0, PITCH_LENGTH), y.clamp(0.0, PITCH_WIDTH))
}

/// To 10 cm, as providers' coordinates come.
fn round_point((x, y): (f64, f64)) -> (f64, f64) {
    ((x * 10.0).round() / 10.0, (y * 10.0).round() / 10.0)
}

fn to_point(point: (f64, f64)) -> Result<Point, crate::xt::ActionError> {
    let (x, y) = round_point(clamp_to_pitch(point));
    Point::new(x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_double_round_robin() {
        let cycle = double_round_robin(6);
        assert_eq!(cycle.len(), 30);
        let mut pairs: Vec<(u16, u16)> = cycle.iter().map(|(h, a)| (h.0, a.0)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), 30, "every ordered pair once");
        assert!(pairs.iter().all(|(h, a)| h != a));
    }

    #[test]
    fn config_rejects_bad_sizes() {
        assert_eq!(SeasonConfig::new(3, 1, 500, 0), Err(SeasonError::Teams(3)));
        assert_eq!(SeasonConfig::new(4, 0, 500, 0), Err(SeasonError::Matches(0)));
        assert_eq!(SeasonConfig::new(4, 1, 99, 0), Err(SeasonError::ActionsPerMatch(99)));
        let config = SeasonConfig::with_total_actions(10_000_000, 1).expect("valid");
        assert_eq!((config.matches(), config.total_actions()), (5_000, 10_000_000));
    }
}
