//! Expected Threat (xT): the value of moving the ball from one part of the
//! pitch to another, computed exactly as `socceraction.xthreat` 1.5.3 does.
//!
//! The pitch (105 m by 68 m, every team attacking left to right as in SPADL)
//! is cut into a 16 by 12 grid. For each cell the model estimates how often a
//! player there shoots or moves the ball, how often a shot from there scores,
//! and where a move from there ends; value iteration then gives each cell the
//! probability that possession there leads to a goal. A successful move is
//! worth the value of its end cell minus the value of its start cell.
//!
//! The computation is split for map-reduce. [`XtTally::from_actions`] turns
//! any slice of actions into integer counts, and [`XtTally::merge`] adds two
//! tallies; integer addition is exact and associative, so any chunking, any
//! thread count and any input order give the same tally, the same fitted
//! [`XtModel`] and bit-identical [`PlayerImpact`]s.
//!
//! socceraction's conventions, reproduced on purpose (see its `xthreat.py`):
//! - moves are `pass`, `dribble` and `cross` of any result; shots are `shot`
//!   only (`shot_freekick` and `shot_penalty` are neither shots nor moves);
//!   a goal is a `shot` whose result is `success`;
//! - a cell index is `int(x / 105 * 16)` and `int(y / 68 * 12)`, truncated
//!   toward zero and then clipped to the grid, so coordinates on or past the
//!   far touchline fall in the last cell;
//! - the grid's rows run from the top of the pitch (high y) to the bottom;
//! - a failed move counts in its start cell's move total (the transition
//!   matrix's denominator) but moves the ball nowhere;
//! - value iteration starts from zero and stops once no cell grew by more
//!   than `eps` in one iteration;
//! - only successful moves get a rating; every other action gets none
//!   (socceraction's `NaN`).
//!
//! Where this deliberately differs: coordinates must be finite and near the
//! pitch ([`Point::new`]), where socceraction would quietly turn a `NaN`
//! into cell 0; a fit gives up after [`FitConfig`]'s iteration cap, where
//! socceraction has none; an all-zero surface (no goals in the data) rates
//! moves 0 rather than raising `NotFittedError`; and only the 16 x 12 grid
//! without interpolation is offered.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The pitch length in metres (SPADL's `field_length`).
pub const PITCH_LENGTH: f64 = 105.0;
/// The pitch width in metres (SPADL's `field_width`).
pub const PITCH_WIDTH: f64 = 68.0;
/// Grid cells along the length of the pitch (socceraction's `l`).
pub const GRID_LENGTH: usize = 16;
/// Grid cells across the width of the pitch (socceraction's `w`).
pub const GRID_WIDTH: usize = 12;
/// Cells in the grid.
pub const CELLS: usize = GRID_LENGTH * GRID_WIDTH;
/// socceraction's default convergence threshold.
pub const DEFAULT_EPS: f64 = 1e-5;
/// Iterations after which a fit gives up. Real data converges in well under
/// a hundred; the cap only stops pathological input from holding a CPU
/// thread for good, which socceraction, having no cap, would allow.
pub const DEFAULT_MAX_ITERATIONS: u32 = 10_000;

/// How far outside the pitch a coordinate may lie, in metres. Providers
/// record a few actions just off the pitch, which the model clips to the edge
/// cells; anything further out is a data error, not a football event.
pub const OFF_PITCH_MARGIN: f64 = 50.0;

/// A SPADL action type, in SPADL's order so [`ActionType::spadl_id`] is
/// SPADL's `type_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionType {
    Pass,
    Cross,
    ThrowIn,
    FreekickCrossed,
    FreekickShort,
    CornerCrossed,
    CornerShort,
    TakeOn,
    Foul,
    Tackle,
    Interception,
    Shot,
    ShotPenalty,
    ShotFreekick,
    KeeperSave,
    KeeperClaim,
    KeeperPunch,
    KeeperPickUp,
    Clearance,
    BadTouch,
    NonAction,
    Dribble,
    Goalkick,
}

/// A SPADL action result, in SPADL's order so [`ActionResult::spadl_id`] is
/// SPADL's `result_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActionResult {
    Fail,
    Success,
    Offside,
    OwnGoal,
    YellowCard,
    RedCard,
}

/// Identifies a player.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlayerId(u32);

/// Identifies a match (SPADL's `game_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GameId(u32);

/// A location in metres: x along the pitch from the acting team's own goal
/// line, y across it. Finite and at most [`OFF_PITCH_MARGIN`] outside the
/// pitch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    x: f64,
    y: f64,
}

/// One cell of the grid, numbered as socceraction flattens its matrix:
/// row-major from the top-left corner (low x, high y).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cell(u8);

/// One on-ball action, in SPADL's coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Action {
    kind: ActionType,
    result: ActionResult,
    start: Point,
    end: Point,
    player: PlayerId,
    game: Option<GameId>,
    /// Seconds since kick-off, counted across both halves.
    second: Option<u32>,
}

/// Why an action or one of its parts was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("coordinates must be finite numbers, got ({x}, {y})")]
    NotFinite { x: f64, y: f64 },
    #[error("({x}, {y}) is more than {OFF_PITCH_MARGIN} m outside the 105 x 68 m pitch")]
    OffPitch { x: f64, y: f64 },
    #[error("unknown spadl action type {0:?}")]
    UnknownType(String),
    #[error("unknown spadl result {0:?}")]
    UnknownResult(String),
}

/// Why a fit was refused or did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FitError {
    #[error("eps must be a positive finite number, got {0}")]
    InvalidEps(f64),
    #[error("max_iterations must be at least 1")]
    NoIterations,
    #[error("value iteration did not converge within {0} iterations")]
    NotConverged(u32),
}

/// How value iteration runs: the convergence threshold and an iteration cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitConfig {
    eps: f64,
    max_iterations: u32,
}

/// Integer counts per cell: everything [`XtModel::fit`] needs.
///
/// Build one per chunk of actions with [`XtCounts::from_actions`] and
/// combine them with [`XtCounts::merge`]; the result does not depend on how
/// the actions were split or ordered.
#[derive(Clone, PartialEq, Eq)]
pub struct XtCounts {
    /// Move attempts (any result) starting in each cell.
    moves: Vec<u64>,
    /// Shots (type `shot` only) from each cell.
    shots: Vec<u64>,
    /// Shots from each cell that scored.
    goals: Vec<u64>,
    /// Successful moves, `start * CELLS + end`.
    transitions: Vec<u64>,
}

/// The successful moves of each player, kept as integer counts per cell so
/// that players' totals can be computed exactly after the model is fitted.
///
/// A move's rating is `xT[end] - xT[start]`, so a player's total is
/// `sum over cells of (moves ending there - moves starting there) * xT[cell]`.
/// Summing in cell order over integer counts makes the total a function of
/// the counts alone: independent of chunking and of input order.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PlayerMoves {
    players: HashMap<PlayerId, PlayerCells>,
}

/// Both halves of the map step: the model's counts and the players' moves,
/// gathered in one pass over the actions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XtTally {
    counts: XtCounts,
    players: PlayerMoves,
}

/// A fitted xT surface.
#[derive(Clone, PartialEq)]
pub struct XtModel {
    /// Cell values, flattened like socceraction's `xT` matrix.
    values: Vec<f64>,
    shot_probability: Vec<f64>,
    move_probability: Vec<f64>,
    scoring_probability: Vec<f64>,
    iterations: u32,
}

/// One player's xT contribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlayerImpact {
    player: PlayerId,
    xt: f64,
    moves: u64,
    minutes: Option<u32>,
}

#[derive(Clone, PartialEq, Eq)]
struct PlayerCells {
    /// Successful moves ending in each cell minus those starting there.
    net: Vec<i64>,
    /// Successful moves, i.e. rated actions.
    moves: u64,
}

impl ActionType {
    /// Every type, in SPADL order.
    pub const ALL: [ActionType; 23] = [
        Self::Pass,
        Self::Cross,
        Self::ThrowIn,
        Self::FreekickCrossed,
        Self::FreekickShort,
        Self::CornerCrossed,
        Self::CornerShort,
        Self::TakeOn,
        Self::Foul,
        Self::Tackle,
        Self::Interception,
        Self::Shot,
        Self::ShotPenalty,
        Self::ShotFreekick,
        Self::KeeperSave,
        Self::KeeperClaim,
        Self::KeeperPunch,
        Self::KeeperPickUp,
        Self::Clearance,
        Self::BadTouch,
        Self::NonAction,
        Self::Dribble,
        Self::Goalkick,
    ];

    /// SPADL's `type_name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Cross => "cross",
            Self::ThrowIn => "throw_in",
            Self::FreekickCrossed => "freekick_crossed",
            Self::FreekickShort => "freekick_short",
            Self::CornerCrossed => "corner_crossed",
            Self::CornerShort => "corner_short",
            Self::TakeOn => "take_on",
            Self::Foul => "foul",
            Self::Tackle => "tackle",
            Self::Interception => "interception",
            Self::Shot => "shot",
            Self::ShotPenalty => "shot_penalty",
            Self::ShotFreekick => "shot_freekick",
            Self::KeeperSave => "keeper_save",
            Self::KeeperClaim => "keeper_claim",
            Self::KeeperPunch => "keeper_punch",
            Self::KeeperPickUp => "keeper_pick_up",
            Self::Clearance => "clearance",
            Self::BadTouch => "bad_touch",
            Self::NonAction => "non_action",
            Self::Dribble => "dribble",
            Self::Goalkick => "goalkick",
        }
    }

    /// Parses SPADL's `type_name`.
    pub fn parse(name: &str) -> Result<Self, ActionError> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| ActionError::UnknownType(name.chars().take(32).collect()))
    }

    /// SPADL's `type_id`.
    pub fn spadl_id(self) -> u8 {
        self as u8
    }

    /// Whether xT treats this type as moving the ball: `pass`, `dribble` or
    /// `cross` (socceraction's `get_move_actions`).
    pub fn is_move(self) -> bool {
        matches!(self, Self::Pass | Self::Dribble | Self::Cross)
    }

    /// Whether xT treats this type as a shot: `shot` only, as in
    /// socceraction's `scoring_prob` and `action_prob`.
    pub fn is_xt_shot(self) -> bool {
        self == Self::Shot
    }
}

impl fmt::Display for ActionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl ActionResult {
    /// Every result, in SPADL order.
    pub const ALL: [ActionResult; 6] =
        [Self::Fail, Self::Success, Self::Offside, Self::OwnGoal, Self::YellowCard, Self::RedCard];

    /// SPADL's `result_name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Success => "success",
            Self::Offside => "offside",
            Self::OwnGoal => "owngoal",
            Self::YellowCard => "yellow_card",
            Self::RedCard => "red_card",
        }
    }

    /// Parses SPADL's `result_name`.
    pub fn parse(name: &str) -> Result<Self, ActionError> {
        Self::ALL
            .into_iter()
            .find(|result| result.name() == name)
            .ok_or_else(|| ActionError::UnknownResult(name.chars().take(32).collect()))
    }

    /// SPADL's `result_id`.
    pub fn spadl_id(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for ActionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl PlayerId {
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for PlayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl GameId {
    pub const fn new(id: u32) -> Self {
        Self(id)
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for GameId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Point {
    /// Accepts finite coordinates at most [`OFF_PITCH_MARGIN`] outside the
    /// pitch.
    pub fn new(x: f64, y: f64) -> Result<Self, ActionError> {
        if !x.is_finite() || !y.is_finite() {
            return Err(ActionError::NotFinite { x, y });
        }
        let x_ok = (-OFF_PITCH_MARGIN..=PITCH_LENGTH + OFF_PITCH_MARGIN).contains(&x);
        let y_ok = (-OFF_PITCH_MARGIN..=PITCH_WIDTH + OFF_PITCH_MARGIN).contains(&y);
        if !x_ok || !y_ok {
            return Err(ActionError::OffPitch { x, y });
        }
        Ok(Self { x, y })
    }

    pub fn x(self) -> f64 {
        self.x
    }

    pub fn y(self) -> f64 {
        self.y
    }
}

impl Cell {
    /// The cell containing `point`, as socceraction's `_get_flat_indexes`
    /// finds it.
    pub fn of(point: Point) -> Self {
        // The operations and their order are socceraction's: divide by the
        // pitch size, multiply by the cell count, truncate toward zero (numpy's
        // `astype("int64")`, which `as` matches for these bounded values),
        // then clip. Doing it any other way moves points on cell borders.
        let xi = ((point.x / PITCH_LENGTH) * GRID_LENGTH as f64) as i64;
        let yj = ((point.y / PITCH_WIDTH) * GRID_WIDTH as f64) as i64;
        let xi = xi.clamp(0, GRID_LENGTH as i64 - 1) as usize;
        let yj = yj.clamp(0, GRID_WIDTH as i64 - 1) as usize;
        // Row 0 is the top of the pitch (the highest y).
        Self(((GRID_WIDTH - 1 - yj) * GRID_LENGTH + xi) as u8)
    }

    /// The cell at `row` (0 = top, high y) and `column` (0 = own goal line),
    /// if both are on the grid.
    pub fn at(row: usize, column: usize) -> Option<Self> {
        (row < GRID_WIDTH && column < GRID_LENGTH).then(|| Self((row * GRID_LENGTH + column) as u8))
    }

    /// The flat index, `row * 16 + column`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    /// The row, 0 at the top of the pitch (high y).
    pub fn row(self) -> usize {
        self.index() / GRID_LENGTH
    }

    /// The column, 0 at the acting team's own goal line.
    pub fn column(self) -> usize {
        self.index() % GRID_LENGTH
    }
}

impl Action {
    pub fn new(kind: ActionType, result: ActionResult, start: Point, end: Point, player: PlayerId) -> Self {
        Self { kind, result, start, end, player, game: None, second: None }
    }

    /// Records the match the action belongs to.
    pub fn with_game(self, game: GameId) -> Self {
        Self { game: Some(game), ..self }
    }

    /// Records when the action happened, in seconds since kick-off.
    pub fn with_second(self, second: u32) -> Self {
        Self { second: Some(second), ..self }
    }

    pub fn kind(&self) -> ActionType {
        self.kind
    }

    pub fn result(&self) -> ActionResult {
        self.result
    }

    pub fn start(&self) -> Point {
        self.start
    }

    pub fn end(&self) -> Point {
        self.end
    }

    pub fn player(&self) -> PlayerId {
        self.player
    }

    pub fn game(&self) -> Option<GameId> {
        self.game
    }

    pub fn second(&self) -> Option<u32> {
        self.second
    }

    /// Whether xT rates this action: a move whose result is `success`
    /// (socceraction's `get_successful_move_actions`).
    pub fn is_successful_move(&self) -> bool {
        self.kind.is_move() && self.result == ActionResult::Success
    }
}

impl FitConfig {
    /// Accepts a positive finite `eps` and at least one iteration.
    pub fn new(eps: f64, max_iterations: u32) -> Result<Self, FitError> {
        if !(eps.is_finite() && eps > 0.0) {
            return Err(FitError::InvalidEps(eps));
        }
        if max_iterations == 0 {
            return Err(FitError::NoIterations);
        }
        Ok(Self { eps, max_iterations })
    }

    pub fn eps(self) -> f64 {
        self.eps
    }

    pub fn max_iterations(self) -> u32 {
        self.max_iterations
    }
}

impl Default for FitConfig {
    fn default() -> Self {
        Self { eps: DEFAULT_EPS, max_iterations: DEFAULT_MAX_ITERATIONS }
    }
}

impl XtCounts {
    /// Counts for one slice of actions.
    pub fn from_actions(actions: &[Action]) -> Self {
        let mut counts = Self::default();
        for action in actions {
            counts.add(action);
        }
        counts
    }

    /// Adds one action's counts.
    pub fn add(&mut self, action: &Action) {
        let start = Cell::of(action.start).index();
        if action.kind.is_move() {
            self.moves[start] += 1;
            if action.result == ActionResult::Success {
                self.transitions[start * CELLS + Cell::of(action.end).index()] += 1;
            }
        } else if action.kind.is_xt_shot() {
            self.shots[start] += 1;
            if action.result == ActionResult::Success {
                self.goals[start] += 1;
            }
        }
    }

    /// The counts of both inputs together. Exact, associative and
    /// commutative, so it can be a parallel reduce step.
    pub fn merge(mut self, other: Self) -> Self {
        self.absorb(&other);
        self
    }

    /// Adds `other`'s counts to these.
    pub fn absorb(&mut self, other: &Self) {
        add_into(&mut self.moves, &other.moves);
        add_into(&mut self.shots, &other.shots);
        add_into(&mut self.goals, &other.goals);
        add_into(&mut self.transitions, &other.transitions);
    }

    /// Move attempts counted, of any result.
    pub fn move_count(&self) -> u64 {
        self.moves.iter().sum()
    }

    /// Shots counted (type `shot` only).
    pub fn shot_count(&self) -> u64 {
        self.shots.iter().sum()
    }

    /// Goals counted (successful shots).
    pub fn goal_count(&self) -> u64 {
        self.goals.iter().sum()
    }
}

impl Default for XtCounts {
    fn default() -> Self {
        Self {
            moves: vec![0; CELLS],
            shots: vec![0; CELLS],
            goals: vec![0; CELLS],
            transitions: vec![0; CELLS * CELLS],
        }
    }
}

impl fmt::Debug for XtCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The 36,864 transition counts would drown any log line.
        f.debug_struct("XtCounts")
            .field("moves", &self.move_count())
            .field("shots", &self.shot_count())
            .field("goals", &self.goal_count())
            .finish_non_exhaustive()
    }
}

impl PlayerMoves {
    /// The successful moves in one slice of actions, per player.
    pub fn from_actions(actions: &[Action]) -> Self {
        let mut moves = Self::default();
        for action in actions {
            moves.add(action);
        }
        moves
    }

    /// Adds one action; only successful moves change anything.
    pub fn add(&mut self, action: &Action) {
        if !action.is_successful_move() {
            return;
        }
        let cells = self.players.entry(action.player).or_insert_with(PlayerCells::empty);
        cells.net[Cell::of(action.end).index()] += 1;
        cells.net[Cell::of(action.start).index()] -= 1;
        cells.moves += 1;
    }

    /// Both inputs' moves together; exact, associative and commutative.
    pub fn merge(mut self, other: Self) -> Self {
        // Fold the smaller map into the larger: the same result, less work.
        let (mut into, from) = if self.players.len() >= other.players.len() {
            (std::mem::take(&mut self.players), other.players)
        } else {
            (other.players, std::mem::take(&mut self.players))
        };
        for (player, cells) in from {
            match into.get_mut(&player) {
                Some(existing) => existing.absorb(&cells),
                None => {
                    into.insert(player, cells);
                }
            }
        }
        Self { players: into }
    }

    /// Players with at least one successful move.
    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// Every player's total under `model`, ordered by player id. `minutes`
    /// gives the minutes played where known, for [`PlayerImpact::per_90`].
    pub fn impacts(&self, model: &XtModel, minutes: &BTreeMap<PlayerId, u32>) -> Vec<PlayerImpact> {
        let mut impacts: Vec<PlayerImpact> = self
            .players
            .iter()
            .map(|(&player, cells)| PlayerImpact {
                player,
                xt: cells.total(&model.values),
                moves: cells.moves,
                minutes: minutes.get(&player).copied(),
            })
            .collect();
        impacts.sort_by_key(|impact| impact.player);
        impacts
    }
}

impl fmt::Debug for PlayerMoves {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlayerMoves").field("players", &self.players.len()).finish_non_exhaustive()
    }
}

impl PlayerCells {
    fn empty() -> Self {
        Self { net: vec![0; CELLS], moves: 0 }
    }

    fn absorb(&mut self, other: &Self) {
        for (mine, theirs) in self.net.iter_mut().zip(&other.net) {
            *mine += theirs;
        }
        self.moves += other.moves;
    }

    fn total(&self, values: &[f64]) -> f64 {
        // Cell order, every time: this fixed order is what makes the total
        // independent of how the moves were gathered.
        let mut total = 0.0;
        for (&net, &value) in self.net.iter().zip(values) {
            // Exact: no count comes near 2^53.
            total += net as f64 * value;
        }
        total
    }
}

impl XtTally {
    /// Counts and player moves for one slice of actions, in one pass.
    pub fn from_actions(actions: &[Action]) -> Self {
        let mut tally = Self::default();
        for action in actions {
            tally.counts.add(action);
            tally.players.add(action);
        }
        tally
    }

    /// Both tallies together; exact, associative and commutative.
    pub fn merge(self, other: Self) -> Self {
        Self { counts: self.counts.merge(other.counts), players: self.players.merge(other.players) }
    }

    pub fn counts(&self) -> &XtCounts {
        &self.counts
    }

    pub fn players(&self) -> &PlayerMoves {
        &self.players
    }

    /// Fits the model and rates every player: the whole job after the
    /// reduce step.
    pub fn evaluate(
        &self,
        config: FitConfig,
        minutes: &BTreeMap<PlayerId, u32>,
    ) -> Result<(XtModel, Vec<PlayerImpact>), FitError> {
        let model = XtModel::fit(&self.counts, config)?;
        let impacts = self.players.impacts(&model, minutes);
        Ok((model, impacts))
    }
}

impl XtModel {
    /// Fits the surface by value iteration, as socceraction's
    /// `ExpectedThreat.fit` does.
    pub fn fit(counts: &XtCounts, config: FitConfig) -> Result<Self, FitError> {
        let mut shot_probability = vec![0.0; CELLS];
        let mut move_probability = vec![0.0; CELLS];
        let mut scoring_probability = vec![0.0; CELLS];
        for cell in 0..CELLS {
            let total = counts.moves[cell] + counts.shots[cell];
            shot_probability[cell] = safe_divide(counts.shots[cell], total);
            move_probability[cell] = safe_divide(counts.moves[cell], total);
            scoring_probability[cell] = safe_divide(counts.goals[cell], counts.shots[cell]);
        }

        // Row `start` holds, for each end cell, the share of all move
        // attempts from `start` that succeeded and ended there; failed moves
        // only enlarge the denominator.
        let mut transition = vec![0.0; CELLS * CELLS];
        for start in 0..CELLS {
            if counts.moves[start] == 0 {
                continue;
            }
            let attempts = counts.moves[start] as f64;
            for end in 0..CELLS {
                let successes = counts.transitions[start * CELLS + end];
                if successes != 0 {
                    transition[start * CELLS + end] = successes as f64 / attempts;
                }
            }
        }

        let goal_from_shot: Vec<f64> =
            scoring_probability.iter().zip(&shot_probability).map(|(score, shoot)| score * shoot).collect();

        // socceraction's `__solve`, operation for operation: it starts its
        // difference at 1 (so eps >= 1 means no iteration at all), sums each
        // cell's payoff over end cells in index order starting from 0.0, and
        // stops when no cell's signed change exceeds eps. Keeping the order
        // keeps the result bit-identical to socceraction's.
        let mut values = vec![0.0; CELLS];
        let mut next = vec![0.0; CELLS];
        let mut changed = 1.0 > config.eps;
        let mut iterations = 0;
        while changed {
            if iterations == config.max_iterations {
                return Err(FitError::NotConverged(iterations));
            }
            for (cell, slot) in next.iter_mut().enumerate() {
                let row = &transition[cell * CELLS..(cell + 1) * CELLS];
                let mut payoff = 0.0;
                for (probability, value) in row.iter().zip(&values) {
                    payoff += probability * value;
                }
                *slot = goal_from_shot[cell] + move_probability[cell] * payoff;
            }
            changed = next.iter().zip(&values).any(|(new, old)| new - old > config.eps);
            std::mem::swap(&mut values, &mut next);
            iterations += 1;
        }

        Ok(Self { values, shot_probability, move_probability, scoring_probability, iterations })
    }

    /// The rating of `action`: `xT(end) - xT(start)` for a successful move,
    /// `None` for anything else (socceraction's `NaN`).
    pub fn rate(&self, action: &Action) -> Option<f64> {
        action.is_successful_move().then(|| self.value_at(action.end) - self.value_at(action.start))
    }

    /// [`XtModel::rate`] for every action, in order.
    pub fn rate_all(&self, actions: &[Action]) -> Vec<Option<f64>> {
        actions.iter().map(|action| self.rate(action)).collect()
    }

    /// The value of a cell.
    pub fn value(&self, cell: Cell) -> f64 {
        self.values[cell.index()]
    }

    /// The value of the cell containing `point`.
    pub fn value_at(&self, point: Point) -> f64 {
        self.value(Cell::of(point))
    }

    /// The surface as socceraction's `xT` matrix: 12 rows from the top of
    /// the pitch (high y) down, 16 columns from the own goal line.
    pub fn grid(&self) -> [[f64; GRID_LENGTH]; GRID_WIDTH] {
        as_grid(&self.values)
    }

    /// socceraction's `shot_prob_matrix`.
    pub fn shot_probability(&self) -> [[f64; GRID_LENGTH]; GRID_WIDTH] {
        as_grid(&self.shot_probability)
    }

    /// socceraction's `move_prob_matrix`.
    pub fn move_probability(&self) -> [[f64; GRID_LENGTH]; GRID_WIDTH] {
        as_grid(&self.move_probability)
    }

    /// socceraction's `scoring_prob_matrix`.
    pub fn scoring_probability(&self) -> [[f64; GRID_LENGTH]; GRID_WIDTH] {
        as_grid(&self.scoring_probability)
    }

    /// Value-iteration steps the fit took.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }
}

impl fmt::Debug for XtModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = self.values.iter().copied().fold(0.0, f64::max);
        f.debug_struct("XtModel")
            .field("iterations", &self.iterations)
            .field("max_value", &max)
            .finish_non_exhaustive()
    }
}

impl PlayerImpact {
    pub fn player(&self) -> PlayerId {
        self.player
    }

    /// The sum of the player's move ratings.
    pub fn xt(&self) -> f64 {
        self.xt
    }

    /// Successful moves, i.e. rated actions.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// Minutes played, where known.
    pub fn minutes(&self) -> Option<u32> {
        self.minutes
    }

    /// xT per 90 minutes played; `None` without minutes or with zero.
    pub fn per_90(&self) -> Option<f64> {
        self.minutes.filter(|&minutes| minutes > 0).map(|minutes| self.xt * 90.0 / f64::from(minutes))
    }
}

/// Every player's total xT for `actions` under `model`, ordered by player id.
/// Single-threaded; for parallel work, build [`PlayerMoves`] per chunk,
/// merge, then call [`PlayerMoves::impacts`]: the totals are identical.
pub fn player_totals(
    model: &XtModel,
    actions: &[Action],
    minutes: &BTreeMap<PlayerId, u32>,
) -> Vec<PlayerImpact> {
    PlayerMoves::from_actions(actions).impacts(model, minutes)
}

/// The `top` players by total xT, highest first, ties broken by player id so
/// the order is total.
pub fn leaderboard(mut impacts: Vec<PlayerImpact>, top: usize) -> Vec<PlayerImpact> {
    impacts.sort_by(|a, b| b.xt.total_cmp(&a.xt).then(a.player.cmp(&b.player)));
    impacts.truncate(top);
    impacts
}

/// numpy's `divide(a, b, where=b != 0)` into zeros: 0 when nothing to divide.
fn safe_divide(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 { 0.0 } else { numerator as f64 / denominator as f64 }
}

fn add_into(into: &mut [u64], from: &[u64]) {
    for (mine, theirs) in into.iter_mut().zip(from) {
        *mine += theirs;
    }
}

fn as_grid(flat: &[f64]) -> [[f64; GRID_LENGTH]; GRID_WIDTH] {
    let mut grid = [[0.0; GRID_LENGTH]; GRID_WIDTH];
    for (row, chunk) in grid.iter_mut().zip(flat.chunks_exact(GRID_LENGTH)) {
        row.copy_from_slice(chunk);
    }
    grid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(x: f64, y: f64) -> Point {
        Point::new(x, y).expect("valid point")
    }

    #[test]
    fn cells_are_numbered_from_the_top_left_and_clipped_at_the_edges() {
        // Bottom-left corner: lowest y is the last row.
        assert_eq!(Cell::of(point(0.0, 0.0)), Cell::at(11, 0).expect("on grid"));
        // Top-left: y = 68 truncates to 12 and clips to row 0.
        assert_eq!(Cell::of(point(0.0, 68.0)), Cell::at(0, 0).expect("on grid"));
        // The far goal line clips into the last column.
        assert_eq!(Cell::of(point(105.0, 34.0)).column(), 15);
        // Just off the pitch clips to the edge cells; -0.5 truncates to 0.
        assert_eq!(Cell::of(point(-0.5, -3.0)), Cell::at(11, 0).expect("on grid"));
        // 105 / 16 = 6.5625 m per column: 6.56 is column 0, 6.57 column 1.
        assert_eq!(Cell::of(point(6.56, 30.0)).column(), 0);
        assert_eq!(Cell::of(point(6.57, 30.0)).column(), 1);
    }

    #[test]
    fn points_must_be_finite_and_near_the_pitch() {
        assert!(matches!(Point::new(f64::NAN, 1.0), Err(ActionError::NotFinite { .. })));
        assert!(matches!(Point::new(1.0, f64::INFINITY), Err(ActionError::NotFinite { .. })));
        assert!(matches!(Point::new(156.0, 1.0), Err(ActionError::OffPitch { .. })));
        assert!(Point::new(-50.0, 118.0).is_ok());
    }

    #[test]
    fn names_and_ids_follow_spadl() {
        assert_eq!(ActionType::Shot.spadl_id(), 11);
        assert_eq!(ActionType::Dribble.spadl_id(), 21);
        assert_eq!(ActionType::Goalkick.spadl_id(), 22);
        assert_eq!(ActionResult::OwnGoal.spadl_id(), 3);
        for kind in ActionType::ALL {
            assert_eq!(ActionType::parse(kind.name()), Ok(kind));
        }
        for result in ActionResult::ALL {
            assert_eq!(ActionResult::parse(result.name()), Ok(result));
        }
        assert_eq!(
            ActionType::parse("header").expect_err("unknown").to_string(),
            "unknown spadl action type \"header\""
        );
    }

    #[test]
    fn fit_config_rejects_bad_values() {
        assert_eq!(FitConfig::new(0.0, 10), Err(FitError::InvalidEps(0.0)));
        assert!(matches!(FitConfig::new(f64::NAN, 10), Err(FitError::InvalidEps(_))));
        assert_eq!(FitConfig::new(1e-5, 0), Err(FitError::NoIterations));
    }
}
