//! The xT model the worker rates moves with, and the tallies it rates.
//!
//! [`RatingModel`] is a fitted xT surface reduced to what rating needs: the
//! value of each grid cell. It is built from a `domain::xt::XtModel`, stored
//! in the state store as a few bytes (see [`RatingModel::encode`]) so every
//! worker rates with the same surface, and reloaded at start-up. The domain
//! model cannot be rebuilt from its values, which is why this type exists.
//!
//! [`ImpactTally`] gathers players' successful moves as integer counts per
//! cell, exactly as `domain::xt::PlayerMoves` does, so totals are
//! independent of how the moves were chunked across threads and of their
//! order; it differs only in rating against a [`RatingModel`].

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use domain::{
    season::{Season, SeasonConfig, SeasonError},
    xt::{Action, CELLS, Cell, FitConfig, FitError, PlayerId, XtModel, XtTally},
};

/// Where a model's surface came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// Fitted at start-up on a seeded synthetic season, because no model
    /// was stored yet.
    Synthetic,
    /// Refitted on the event stream by the batch job.
    Feed,
}

/// A fitted xT surface: the value of each cell.
#[derive(Debug, Clone, PartialEq)]
pub struct RatingModel {
    values: Vec<f64>,
    source: ModelSource,
    /// Actions the fit counted.
    trained_on: u64,
}

/// Why stored model bytes were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("stored model is not an xt surface (bad header or length)")]
    Malformed,
    #[error("stored model has a non-finite cell value")]
    NotFinite,
}

/// Why the start-up model could not be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BootstrapError {
    #[error("invalid synthetic season: {0}")]
    Season(#[from] SeasonError),
    #[error("fitting xt on the synthetic season failed: {0}")]
    Fit(#[from] FitError),
}

/// One player's total over the moves tallied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impact {
    pub player: PlayerId,
    pub xt: f64,
    pub moves: u64,
}

/// Players' successful moves as net counts per cell; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImpactTally {
    players: HashMap<PlayerId, PlayerNet>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PlayerNet {
    /// Successful moves ending in each cell minus those starting there.
    net: Vec<i64>,
    moves: u64,
}

/// The model currently used for rating, shared by the stream consumer, the
/// RPCs and the batch job (which replaces it). Readers take a cheap clone of
/// the `Arc`, so a swap never waits for a rating in progress.
#[derive(Debug, Clone)]
pub struct ModelHandle(Arc<RwLock<Arc<RatingModel>>>);

/// Where the current model is stored, so every worker rates with it.
pub const MODEL_KEY: &str = "xt:model";

/// Marks stored model bytes, with a format version.
const MAGIC: &[u8; 5] = b"CSXT1";
const ENCODED_LEN: usize = MAGIC.len() + 1 + 8 + CELLS * 8;

impl RatingModel {
    /// The surface of a fitted domain model.
    pub fn from_fit(model: &XtModel, source: ModelSource, trained_on: u64) -> Self {
        let values = model.grid().iter().flat_map(|row| row.iter().copied()).collect();
        Self { values, source, trained_on }
    }

    /// Fits xT on a seeded synthetic season: the model used until the batch
    /// job has fitted one on real events. Deterministic for a given config.
    pub fn bootstrap(season: SeasonConfig) -> Result<Self, BootstrapError> {
        let record = Season::new(season).play_all();
        let tally = XtTally::from_actions(&record.actions);
        let model = XtModel::fit(tally.counts(), FitConfig::default())?;
        Ok(Self::from_fit(&model, ModelSource::Synthetic, record.actions.len() as u64))
    }

    /// The bootstrap season: `matches` matches of 20 teams.
    pub fn bootstrap_season(matches: u32, seed: u64) -> Result<SeasonConfig, SeasonError> {
        SeasonConfig::new(20, matches, domain::season::DEFAULT_ACTIONS_PER_MATCH, seed)
    }

    /// `xT(end) - xT(start)` for a successful move, `None` for anything
    /// else: `XtModel::rate` against this surface.
    pub fn rate(&self, action: &Action) -> Option<f64> {
        action
            .is_successful_move()
            .then(|| self.value(Cell::of(action.end())) - self.value(Cell::of(action.start())))
    }

    pub fn value(&self, cell: Cell) -> f64 {
        self.values[cell.index()]
    }

    /// Every cell's value in cell order: row by row from the top of the
    /// pitch (high y), 16 columns each from the own goal line.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    pub fn source(&self) -> ModelSource {
        self.source
    }

    pub fn trained_on(&self) -> u64 {
        self.trained_on
    }

    /// A fixed binary layout: magic, source, actions counted, then each
    /// cell's value as a little-endian f64, in cell order.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(ENCODED_LEN);
        bytes.extend_from_slice(MAGIC);
        bytes.push(match self.source {
            ModelSource::Synthetic => 0,
            ModelSource::Feed => 1,
        });
        bytes.extend_from_slice(&self.trained_on.to_le_bytes());
        for value in &self.values {
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, ModelError> {
        if bytes.len() != ENCODED_LEN || !bytes.starts_with(MAGIC) {
            return Err(ModelError::Malformed);
        }
        let rest = &bytes[MAGIC.len()..];
        let source = match rest[0] {
            0 => ModelSource::Synthetic,
            1 => ModelSource::Feed,
            _ => return Err(ModelError::Malformed),
        };
        let word = |chunk: &[u8]| <[u8; 8]>::try_from(chunk).map_err(|_| ModelError::Malformed);
        let trained_on = u64::from_le_bytes(word(&rest[1..9])?);
        let values = rest[9..]
            .chunks_exact(8)
            .map(|chunk| Ok(f64::from_le_bytes(word(chunk)?)))
            .collect::<Result<Vec<f64>, ModelError>>()?;
        if values.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::NotFinite);
        }
        Ok(Self { values, source, trained_on })
    }
}

impl ModelSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::Feed => "feed",
        }
    }
}

impl ImpactTally {
    /// Adds one action; only successful moves change anything.
    pub fn add(&mut self, action: &Action) {
        if !action.is_successful_move() {
            return;
        }
        let player = self
            .players
            .entry(action.player())
            .or_insert_with(|| PlayerNet { net: vec![0; CELLS], moves: 0 });
        player.net[Cell::of(action.end()).index()] += 1;
        player.net[Cell::of(action.start()).index()] -= 1;
        player.moves += 1;
    }

    /// Both tallies together: exact, associative and commutative.
    pub fn merge(mut self, other: Self) -> Self {
        self.absorb(other);
        self
    }

    pub fn absorb(&mut self, other: Self) {
        for (player, theirs) in other.players {
            match self.players.get_mut(&player) {
                Some(mine) => {
                    for (m, t) in mine.net.iter_mut().zip(&theirs.net) {
                        *m += t;
                    }
                    mine.moves += theirs.moves;
                }
                None => {
                    self.players.insert(player, theirs);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.players.is_empty()
    }

    /// Successful moves tallied.
    pub fn moves(&self) -> u64 {
        self.players.values().map(|p| p.moves).sum()
    }

    /// Every player's total under `model`, highest first, ties by player id.
    pub fn totals(&self, model: &RatingModel) -> Vec<Impact> {
        let mut totals: Vec<Impact> = self
            .players
            .iter()
            .map(|(&player, net)| {
                // Cell order, every time: what makes the total independent of
                // how the moves were gathered.
                let mut xt = 0.0;
                for (&count, &value) in net.net.iter().zip(&model.values) {
                    xt += count as f64 * value;
                }
                Impact { player, xt, moves: net.moves }
            })
            .collect();
        totals.sort_by(|a, b| b.xt.total_cmp(&a.xt).then(a.player.cmp(&b.player)));
        totals
    }
}

impl ModelHandle {
    pub fn new(model: RatingModel) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(model))))
    }

    pub fn current(&self) -> Arc<RatingModel> {
        // A writer cannot panic half-way through replacing an Arc, so a
        // poisoned lock still holds a whole model.
        Arc::clone(&self.0.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    pub fn replace(&self, model: RatingModel) {
        *self.0.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(model);
    }

    /// Takes up the model stored under [`MODEL_KEY`] whenever it changes,
    /// checking every `every` until `stop`: a recompute on another replica
    /// refits it, and every replica must rate with the same one. Between
    /// the refit and the next check, this replica still rates with the old.
    pub async fn follow(
        self,
        store: Arc<dyn store::StateStore>,
        every: std::time::Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let mut last = self.current().encode();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = stop.cancelled() => return,
            }
            let stored = match store.get(MODEL_KEY).await {
                Ok(Some(stored)) => stored,
                Ok(None) => continue,
                Err(err) => {
                    tracing::debug!(%err, "cannot read the stored xt model; trying again later");
                    continue;
                }
            };
            if stored.as_ref() == last.as_slice() {
                continue;
            }
            match RatingModel::decode(&stored) {
                Ok(model) => {
                    tracing::info!(
                        source = model.source().as_str(),
                        trained_on = model.trained_on(),
                        "xt model updated from the store"
                    );
                    last = stored.to_vec();
                    self.replace(model);
                }
                Err(err) => tracing::warn!(%err, "ignoring the stored xt model"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use domain::xt::player_totals;

    use super::*;

    #[tokio::test]
    async fn a_handle_takes_up_a_model_another_replica_stored() {
        let store: Arc<dyn store::StateStore> = Arc::new(store::MemoryStore::new());
        let ours = RatingModel::bootstrap(SeasonConfig::new(4, 4, 200, 1).expect("config")).expect("fits");
        let handle = ModelHandle::new(ours.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let following = tokio::spawn(handle.clone().follow(
            Arc::clone(&store),
            std::time::Duration::from_millis(10),
            stop.clone(),
        ));

        let refit = RatingModel { source: ModelSource::Feed, trained_on: 99, ..ours.clone() };
        store.set(MODEL_KEY, bytes::Bytes::from(refit.encode())).await.expect("stored");
        let taken = store::testing::eventually(std::time::Duration::from_secs(5), || {
            let handle = handle.clone();
            async move { handle.current().trained_on() == 99 }
        })
        .await;
        assert!(taken, "the stored model was not taken up");
        assert_eq!(handle.current().source(), ModelSource::Feed);

        // Unreadable bytes are ignored: the handle keeps the last good model.
        store.set(MODEL_KEY, bytes::Bytes::from_static(b"garbage")).await.expect("stored");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(handle.current().trained_on(), 99);
        stop.cancel();
        following.await.expect("the follower stops");
    }

    fn small_season() -> domain::season::SeasonRecord {
        Season::new(SeasonConfig::new(4, 4, 500, 11).expect("config")).play_all()
    }

    #[test]
    fn ratings_and_totals_match_the_domain_model_exactly() {
        let record = small_season();
        let model = XtModel::fit(XtTally::from_actions(&record.actions).counts(), FitConfig::default())
            .expect("fits");
        let surface = RatingModel::from_fit(&model, ModelSource::Feed, 0);
        for action in &record.actions {
            assert_eq!(surface.rate(action), model.rate(action));
        }

        // Tallied in uneven chunks, merged in reverse: still identical.
        let tally = record
            .actions
            .chunks(333)
            .map(|chunk| {
                let mut tally = ImpactTally::default();
                chunk.iter().for_each(|a| tally.add(a));
                tally
            })
            .rev()
            .fold(ImpactTally::default(), ImpactTally::merge);
        let mut ours: Vec<(u32, f64, u64)> =
            tally.totals(&surface).iter().map(|i| (i.player.get(), i.xt, i.moves)).collect();
        ours.sort_by_key(|row| row.0);
        let theirs: Vec<(u32, f64, u64)> = player_totals(&model, &record.actions, &BTreeMap::new())
            .iter()
            .map(|i| (i.player().get(), i.xt(), i.moves()))
            .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_model_survives_encoding() {
        let model = RatingModel::bootstrap(SeasonConfig::new(4, 2, 500, 3).expect("config")).expect("fits");
        let decoded = RatingModel::decode(&model.encode()).expect("decodes");
        assert_eq!(decoded, model);
        assert_eq!(decoded.source(), ModelSource::Synthetic);
    }

    #[test]
    fn garbage_is_not_a_model() {
        assert_eq!(RatingModel::decode(b"nonsense"), Err(ModelError::Malformed));
        let mut bytes =
            RatingModel::bootstrap(SeasonConfig::new(4, 2, 500, 3).expect("config")).expect("fits").encode();
        let last = bytes.len() - 8;
        bytes[last..].copy_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(RatingModel::decode(&bytes), Err(ModelError::NotFinite));
    }
}
