//! Player impact from the event stream, on the CPU pool: the map-reduce
//! behind `ComputeImpact` and the batch recompute.
//!
//! The map step decodes a chunk of stream entries and tallies its
//! successful moves per player as integer counts; the reduce step merges
//! tallies. Both are exact, so the result does not depend on the number of
//! threads or on how the entries were chunked.

use std::{
    collections::{BTreeSet, HashMap},
    time::Duration,
};

use domain::xt::{Action, PlayerId, XtCounts};
use rayon::prelude::*;
use store::{StateStore, StoreError, StreamEntry};

use crate::{
    model::{Impact, ImpactTally, ModelHandle, ModelSource},
    pool::{Cancel, Cost, CpuPool, PoolError},
    stream::{self, ActionBuilder, StreamDetail},
};

/// Stream entries read per page.
pub const PAGE: usize = 10_000;
/// Entries per map task: large enough to amortise scheduling, small enough
/// that cancellation is noticed within a millisecond or so.
const CHUNK: usize = 2_048;

/// Whose impact to compute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImpactScope {
    /// Every player of one match.
    Match(domain::live::MatchId),
    /// These players over every match.
    Players(BTreeSet<PlayerId>),
}

/// The answer to one impact request.
#[derive(Debug, Clone, PartialEq)]
pub struct ImpactReport {
    /// Best first.
    pub impacts: Vec<Impact>,
    pub events_scanned: u64,
    pub moves_rated: u64,
    pub source: ModelSource,
    pub queued: Duration,
    pub ran: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ImpactError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error("impact computation cancelled")]
    Cancelled,
}

/// Rates the scope's moves with the current model: reads the stream, then
/// tallies it on the pool in parallel chunks, checking for cancellation
/// between chunks.
pub async fn compute(
    store: &dyn StateStore,
    pool: &CpuPool,
    model: &ModelHandle,
    scope: ImpactScope,
    top: usize,
) -> Result<ImpactReport, ImpactError> {
    let mut entries = Vec::new();
    let mut scanned = 0u64;
    let mut after: Option<String> = None;
    loop {
        let store::StreamPage { entries: page, position } = store.read_stream(after.as_deref(), PAGE).await?;
        if page.is_empty() {
            break;
        }
        after = position;
        scanned += page.len() as u64;
        let full = page.len() == PAGE;
        // A match's entries can be picked out by the stream's `log` field
        // without decoding anything.
        match &scope {
            ImpactScope::Match(id) => entries.extend(page.into_iter().filter(|e| e.log == id.as_str())),
            ImpactScope::Players(_) => entries.extend(page),
        }
        if !full {
            break;
        }
    }

    let model = model.current();
    // Decoding and rating an entry takes about a microsecond.
    let cost = Cost::from_micros(entries.len() as u64);
    let timed = pool
        .run_cancellable("compute impact", cost, move |cancel| {
            let players = match &scope {
                ImpactScope::Players(players) => Some(players.clone()),
                ImpactScope::Match(_) => None,
            };
            let tally = tally_moves(&entries, players.as_ref(), cancel)?;
            let mut impacts = tally.totals(&model);
            if top > 0 {
                impacts.truncate(top);
            }
            Some((impacts, tally.moves(), model.source()))
        })
        .await?;
    let (impacts, moves_rated, source) = timed.value.ok_or(ImpactError::Cancelled)?;
    Ok(ImpactReport {
        impacts,
        events_scanned: scanned,
        moves_rated,
        source,
        queued: timed.queued,
        ran: timed.ran,
    })
}

/// The successful moves of `entries` (only those of `players`, if given),
/// tallied in parallel; `None` if cancelled.
fn tally_moves(
    entries: &[StreamEntry],
    players: Option<&BTreeSet<PlayerId>>,
    cancel: &Cancel,
) -> Option<ImpactTally> {
    entries
        .par_chunks(CHUNK)
        .map(|chunk| {
            if cancel.is_cancelled() {
                return None;
            }
            let mut tally = ImpactTally::default();
            for entry in chunk {
                // Undecodable entries are counted by the stream consumer;
                // here they simply rate nothing.
                if let Ok(event) = stream::decode(entry)
                    && let StreamDetail::Move(action) = event.detail
                    && players.is_none_or(|p| p.contains(&action.player()))
                {
                    tally.add(&action);
                }
            }
            Some(tally)
        })
        .reduce(|| Some(ImpactTally::default()), |a, b| Some(a?.merge(b?)))
}

/// Everything the batch recompute gathers from the stream: the counts to
/// fit xT on, and each match's moves per player.
#[derive(Debug, Default)]
pub struct StreamTally {
    pub counts: XtCounts,
    /// Every match seen, even those without a successful move (their boards
    /// must be emptied on rebuild).
    pub matches: HashMap<String, ImpactTally>,
    pub undecodable: u64,
    /// Entries written by a newer release, which this worker cannot count.
    pub newer: u64,
}

impl StreamTally {
    pub fn absorb(&mut self, other: Self) {
        self.counts.absorb(&other.counts);
        for (match_id, tally) in other.matches {
            self.matches.entry(match_id).or_default().absorb(tally);
        }
        self.undecodable += other.undecodable;
        self.newer += other.newer;
    }

    fn of_actions(actions: &[(String, Action)]) -> Self {
        let mut tally = Self::default();
        for (match_id, action) in actions {
            tally.counts.add(action);
            tally.matches.entry(match_id.clone()).or_default().add(action);
        }
        tally
    }
}

/// One page of the stream, tallied on the pool: decoded in parallel, turned
/// into actions in stream order (a shot's outcome depends on the event after
/// it, which `builder` carries across pages), then tallied in parallel.
/// `None` if cancelled.
pub fn tally_page(page: &[StreamEntry], builder: &mut ActionBuilder, cancel: &Cancel) -> Option<StreamTally> {
    let decoded: Vec<_> = page.par_iter().map(stream::decode).collect();
    if cancel.is_cancelled() {
        return None;
    }
    let mut actions = Vec::new();
    let mut seen = HashMap::new();
    let mut undecodable = 0;
    let mut newer = 0;
    for event in &decoded {
        match event {
            Ok(event) => {
                seen.entry(event.match_id.clone()).or_insert_with(ImpactTally::default);
                builder.push(event, &mut actions);
            }
            Err(stream::EntryError::NewerFormat { .. }) => newer += 1,
            Err(_) => undecodable += 1,
        }
    }
    let mut tally = actions
        .par_chunks(CHUNK)
        .map(|chunk| (!cancel.is_cancelled()).then(|| StreamTally::of_actions(chunk)))
        .reduce(
            || Some(StreamTally::default()),
            |a, b| {
                let mut a = a?;
                a.absorb(b?);
                Some(a)
            },
        )?;
    tally.absorb(StreamTally { matches: seen, undecodable, newer, ..StreamTally::default() });
    Some(tally)
}

/// The shots still waiting for their next event at the end of the stream.
pub fn finish(builder: ActionBuilder) -> StreamTally {
    let mut actions = Vec::new();
    builder.finish(&mut actions);
    StreamTally::of_actions(&actions)
}

/// Win probability added by goals, credited to their scorers, per match and
/// over the season. Summed in stream order, page by page.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WpaTally {
    pub matches: std::collections::BTreeMap<String, std::collections::BTreeMap<u32, f64>>,
    pub season: std::collections::BTreeMap<u32, f64>,
}

impl WpaTally {
    /// The goals of one page of the stream.
    pub fn of_page(page: &[StreamEntry]) -> Self {
        let mut tally = Self::default();
        for entry in page {
            let Ok(event) = stream::decode(entry) else { continue };
            let StreamDetail::Goal { scorer: Some(scorer), before: Some(before) } = event.detail else {
                continue;
            };
            let Some(added) = crate::valuation::win_probability_added(&before) else { continue };
            *tally.matches.entry(entry.log.clone()).or_default().entry(scorer.get()).or_default() += added;
            *tally.season.entry(scorer.get()).or_default() += added;
        }
        tally
    }

    pub fn absorb(&mut self, other: Self) {
        for (match_id, players) in other.matches {
            let mine = self.matches.entry(match_id).or_default();
            for (player, added) in players {
                *mine.entry(player).or_default() += added;
            }
        }
        for (player, added) in other.season {
            *self.season.entry(player).or_default() += added;
        }
    }
}
