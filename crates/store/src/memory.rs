//! The in-process backend: a map behind a mutex and a broadcast channel per
//! pub/sub channel. The embedded default for a one-process run; state lives
//! as long as the process.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::{Notify, broadcast};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use crate::{
    AppendOutcome, ApplyOutcome, Backlog, HistoryLimits, LIVE_CHANNEL, LeaderboardReplace, LogAppend,
    LogSlice, Ranked, ScoreApply, ScoreIncrement, StateStore, StoreError, StreamEntry, StreamPage,
    Subscription,
    stream::{JOURNAL_MAX_LEN, MAX_BLOCK},
};

/// Messages a subscriber may fall behind by before it starts losing them.
const CHANNEL_CAPACITY: usize = 1024;

/// The in-process [`StateStore`]. Cheap to clone; clones share state.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
    /// Woken on every append to the stream, for blocking group reads.
    appended: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Inner {
    values: HashMap<String, Bytes>,
    channels: HashMap<String, broadcast::Sender<Bytes>>,
    logs: HashMap<String, Log>,
    /// The durable event stream. In memory it lasts as long as the process,
    /// like everything else here. An entry's id is `0-<position from 1>`.
    stream: Vec<StreamRecord>,
    groups: HashMap<String, Group>,
    /// Idempotency tokens of applied entries, per scope.
    applied: HashMap<String, HashSet<String>>,
    boards: HashMap<String, HashMap<String, f64>>,
    /// Increments applied since the last rebuild, by stream position.
    journal: VecDeque<(usize, Vec<ScoreIncrement>)>,
    /// Stream position the last rebuild covers.
    rebuilt_through: Option<usize>,
    /// Leases by name: holder, token, and when it runs out.
    leases: HashMap<String, (String, u64, Instant)>,
    /// The last token handed out per lease name.
    lease_tokens: HashMap<String, u64>,
    /// The highest fencing token a write has carried, per lease name.
    fences: HashMap<String, u64>,
}

#[derive(Debug)]
struct StreamRecord {
    log: String,
    seq: u64,
    entry: Bytes,
}

/// A consumer group: how far it has read, and what is delivered but not
/// acknowledged (by stream position).
#[derive(Debug, Default)]
struct Group {
    delivered: usize,
    pending: BTreeMap<usize, Pending>,
}

#[derive(Debug)]
struct Pending {
    consumer: String,
    since: Instant,
}

#[derive(Debug, Default)]
struct Log {
    head: u64,
    state: Bytes,
    history: VecDeque<(u64, Bytes)>,
    last_append: Option<Instant>,
}

impl Inner {
    fn publish(&mut self, channel: &str, payload: Bytes) -> usize {
        let Some(sender) = self.channels.get(channel) else {
            return 0;
        };
        match sender.send(payload) {
            Ok(receivers) => receivers,
            Err(_) => {
                // Every subscription is gone: forget the channel so idle
                // channels do not accumulate.
                self.channels.remove(channel);
                0
            }
        }
    }
}

impl Inner {
    fn stream_entry(&self, position: usize) -> Option<StreamEntry> {
        let record = self.stream.get(position.checked_sub(1)?)?;
        Some(StreamEntry {
            id: entry_id(position),
            log: record.log.clone(),
            seq: record.seq,
            entry: record.entry.clone(),
        })
    }

    /// Delivers up to `count` pending entries of `group` that `pick` chooses
    /// to `consumer` again (a claim, or a consumer re-reading its own), as
    /// Redis does: their idle time starts over.
    fn redeliver(
        &mut self,
        group: &str,
        consumer: &str,
        count: usize,
        pick: impl Fn(&Pending, Instant) -> bool,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let now = Instant::now();
        let state = self.group(group)?;
        let mut chosen = Vec::new();
        for (&position, pending) in state.pending.iter_mut() {
            if chosen.len() >= count.max(1) {
                break;
            }
            if pick(pending, now) {
                pending.consumer = consumer.to_owned();
                pending.since = now;
                chosen.push(position);
            }
        }
        Ok(chosen.into_iter().filter_map(|position| self.stream_entry(position)).collect())
    }

    fn group(&mut self, group: &str) -> Result<&mut Group, StoreError> {
        self.groups.get_mut(group).ok_or_else(|| no_group(group))
    }

    fn read_group(
        &mut self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let stream_len = self.stream.len();
        let now = Instant::now();
        let state = self.group(group)?;
        let first = state.delivered + 1;
        let last = stream_len.min(state.delivered + count);
        for position in first..=last {
            state.pending.insert(position, Pending { consumer: consumer.to_owned(), since: now });
        }
        state.delivered = state.delivered.max(last);
        Ok((first..=last).filter_map(|position| self.stream_entry(position)).collect())
    }

    fn apply(&mut self, group: &str, apply: &ScoreApply) -> Result<ApplyOutcome, StoreError> {
        let position = parse_entry_id(&apply.entry_id)?;
        self.group(group)?.pending.remove(&position);
        if !self.applied.entry(apply.scope.clone()).or_default().insert(apply.token.clone()) {
            return Ok(ApplyOutcome::Duplicate);
        }
        if self.rebuilt_through.is_some_and(|through| position <= through) {
            return Ok(ApplyOutcome::Rebuilt);
        }
        for increment in &apply.increments {
            *self
                .boards
                .entry(increment.board.clone())
                .or_default()
                .entry(increment.member.clone())
                .or_default() += increment.delta;
        }
        if !apply.increments.is_empty() {
            self.journal.push_back((position, apply.increments.clone()));
            while self.journal.len() > JOURNAL_MAX_LEN {
                self.journal.pop_front();
            }
        }
        Ok(ApplyOutcome::Applied)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-updated
        // (every critical section is a single map operation), so a poisoned
        // lock is still safe to use.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait::async_trait]
impl StateStore for MemoryStore {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self.lock().values.get(key).cloned())
    }

    async fn set(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        self.lock().values.insert(key.to_owned(), value);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.lock().values.remove(key).is_some())
    }

    async fn publish(&self, channel: &str, payload: Bytes) -> Result<usize, StoreError> {
        Ok(self.lock().publish(channel, payload))
    }

    async fn subscribe(&self, channel: &str) -> Result<Subscription, StoreError> {
        let receiver = self
            .lock()
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        let channel = channel.to_owned();
        let messages = BroadcastStream::new(receiver).filter_map(move |item| {
            let message = match item {
                Ok(payload) => Some(payload),
                Err(BroadcastStreamRecvError::Lagged(skipped)) => {
                    tracing::warn!(%channel, skipped, "memory store subscriber fell behind");
                    None
                }
            };
            std::future::ready(message)
        });
        Ok(Subscription::new(messages))
    }

    async fn append(&self, append: &LogAppend, limits: HistoryLimits) -> Result<AppendOutcome, StoreError> {
        crate::log::check_one_line(std::slice::from_ref(append))?;
        let mut inner = self.lock();
        let now = Instant::now();
        let log = inner.logs.entry(append.log.clone()).or_default();
        if log.last_append.is_some_and(|at| now.duration_since(at) > limits.max_idle) {
            log.history.clear();
        }
        if append.seq <= log.head {
            return Ok(AppendOutcome::Duplicate { head: log.head });
        }
        if append.seq != log.head + 1 {
            return Ok(AppendOutcome::Gap { head: log.head });
        }
        log.head = append.seq;
        log.state = append.state.clone();
        log.history.push_back((append.seq, append.entry.clone()));
        while log.history.len() > limits.max_entries {
            log.history.pop_front();
        }
        log.last_append = Some(now);
        inner.stream.push(StreamRecord {
            log: append.log.clone(),
            seq: append.seq,
            entry: append.stream_entry.clone(),
        });
        inner.publish(LIVE_CHANNEL, append.entry.clone());
        drop(inner);
        self.appended.notify_waiters();
        Ok(AppendOutcome::Applied)
    }

    async fn log_state(&self, log: &str) -> Result<Option<(u64, Bytes)>, StoreError> {
        Ok(self.lock().logs.get(log).filter(|l| l.head > 0).map(|l| (l.head, l.state.clone())))
    }

    async fn log_states(&self) -> Result<Vec<(String, Bytes)>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .logs
            .iter()
            .filter(|(_, l)| l.head > 0)
            .map(|(name, l)| (name.clone(), l.state.clone()))
            .collect())
    }

    async fn read_log(&self, log: &str, after: u64, limit: usize) -> Result<LogSlice, StoreError> {
        let inner = self.lock();
        let Some(log) = inner.logs.get(log) else { return Ok(LogSlice::default()) };
        let entries = log.history.iter().filter(|(seq, _)| *seq > after).take(limit).cloned().collect();
        Ok(LogSlice { entries, head: log.head, oldest: log.history.front().map(|(seq, _)| *seq) })
    }

    async fn stream_len(&self) -> Result<u64, StoreError> {
        Ok(self.lock().stream.len() as u64)
    }

    async fn read_stream(&self, after: Option<&str>, count: usize) -> Result<StreamPage, StoreError> {
        let start = after.map(parse_entry_id).transpose()?.unwrap_or(0);
        let inner = self.lock();
        let last = inner.stream.len().min(start.saturating_add(count));
        let entries: Vec<StreamEntry> =
            (start + 1..=last).filter_map(|position| inner.stream_entry(position)).collect();
        let position = entries.last().map(|e| e.id.clone()).or_else(|| after.map(str::to_owned));
        Ok(StreamPage { entries, position })
    }

    async fn stream_group_create(&self, group: &str) -> Result<(), StoreError> {
        self.lock().groups.entry(group.to_owned()).or_default();
        Ok(())
    }

    async fn stream_read_group(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let deadline = tokio::time::Instant::now() + block.min(MAX_BLOCK);
        loop {
            // Register for the wake-up before looking, so an append between
            // the look and the wait is not missed.
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let entries = self.lock().read_group(group, consumer, count.max(1))?;
            if !entries.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(entries);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    async fn stream_ack(&self, group: &str, ids: &[String]) -> Result<u64, StoreError> {
        let positions = ids.iter().map(|id| parse_entry_id(id)).collect::<Result<Vec<_>, _>>()?;
        let mut inner = self.lock();
        let state = inner.group(group)?;
        Ok(positions.iter().filter(|position| state.pending.remove(position).is_some()).count() as u64)
    }

    async fn stream_claim(
        &self,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        self.lock()
            .redeliver(group, consumer, count, |pending, now| now.duration_since(pending.since) >= min_idle)
    }

    async fn stream_read_pending(
        &self,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        self.lock().redeliver(group, consumer, count, |pending, _| pending.consumer == consumer)
    }

    async fn stream_backlog(&self, group: &str) -> Result<Backlog, StoreError> {
        let mut inner = self.lock();
        let len = inner.stream.len();
        let state = inner.group(group)?;
        Ok(Backlog { lag: len.saturating_sub(state.delivered) as u64, pending: state.pending.len() as u64 })
    }

    async fn apply_once(&self, group: &str, applies: &[ScoreApply]) -> Result<Vec<ApplyOutcome>, StoreError> {
        let mut inner = self.lock();
        applies.iter().map(|apply| inner.apply(group, apply)).collect()
    }

    async fn leaderboard(&self, board: &str, limit: usize) -> Result<Vec<Ranked>, StoreError> {
        let inner = self.lock();
        let Some(scores) = inner.boards.get(board) else { return Ok(Vec::new()) };
        let mut ranked: Vec<Ranked> =
            scores.iter().map(|(member, &score)| Ranked { member: member.clone(), score }).collect();
        // ZREVRANGE's order: score descending, then member descending.
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.member.cmp(&a.member)));
        ranked.truncate(limit);
        Ok(ranked)
    }

    async fn leaderboard_score(&self, board: &str, member: &str) -> Result<Option<f64>, StoreError> {
        Ok(self.lock().boards.get(board).and_then(|scores| scores.get(member)).copied())
    }

    async fn replace_leaderboards(&self, replace: &LeaderboardReplace) -> Result<bool, StoreError> {
        let through = replace.through.as_deref().map(parse_entry_id).transpose()?;
        let mut inner = self.lock();
        if let Some(fence) = &replace.fence {
            let seen = inner.fences.entry(fence.lease.clone()).or_default();
            if fence.token < *seen {
                return Ok(false);
            }
            *seen = fence.token;
        }
        for (board, rows) in &replace.boards {
            if rows.is_empty() {
                inner.boards.remove(board);
            } else {
                inner.boards.insert(board.clone(), rows.iter().cloned().collect());
            }
        }
        if let Some(through) = through {
            inner.rebuilt_through = Some(through);
            let replaced: HashSet<&str> = replace.boards.iter().map(|(board, _)| board.as_str()).collect();
            let journal = std::mem::take(&mut inner.journal);
            let mut kept = VecDeque::new();
            for (position, increments) in journal {
                if position <= through {
                    continue;
                }
                for increment in increments.iter().filter(|i| replaced.contains(i.board.as_str())) {
                    *inner
                        .boards
                        .entry(increment.board.clone())
                        .or_default()
                        .entry(increment.member.clone())
                        .or_default() += increment.delta;
                }
                kept.push_back((position, increments));
            }
            inner.journal = kept;
        }
        Ok(true)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<u64>, StoreError> {
        let now = Instant::now();
        let mut inner = self.lock();
        if let Some((current, token, until)) = inner.leases.get_mut(name)
            && *until > now
        {
            if current != holder {
                return Ok(None);
            }
            *until = now + ttl;
            return Ok(Some(*token));
        }
        let token = inner.lease_tokens.entry(name.to_owned()).or_default();
        *token += 1;
        let token = *token;
        inner.leases.insert(name.to_owned(), (holder.to_owned(), token, now + ttl));
        Ok(Some(token))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        let mut inner = self.lock();
        if inner.leases.get(name).is_some_and(|(current, _, _)| current == holder) {
            inner.leases.remove(name);
        }
        Ok(())
    }
}

fn entry_id(position: usize) -> String {
    format!("0-{position}")
}

fn parse_entry_id(id: &str) -> Result<usize, StoreError> {
    id.strip_prefix("0-")
        .and_then(|position| position.parse().ok())
        .ok_or_else(|| StoreError::Backend(format!("invalid stream id {id:?}")))
}

fn no_group(group: &str) -> StoreError {
    StoreError::Backend(format!("no such consumer group {group:?}"))
}
