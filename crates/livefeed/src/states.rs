//! The hub's read cache of each topic's latest state: bounded, and never
//! letting an older state replace a newer one.
//!
//! Every ingested event and every update from the store writes it, so a
//! write must cost little next to the rest of an event (a general-purpose
//! concurrent cache cost a quarter of a bulk-ingested event's CPU). It keeps
//! two generations of entries: writes and hits go to the current one, and
//! when that fills half the capacity it becomes the previous one and the
//! old previous one is dropped. A topic read or written within the last
//! generation stays; one untouched for two generations goes. Entries older
//! than the time to live are ignored, a backstop for a state that no update
//! refreshed.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::Bytes;

/// A cached state: its sequence number, the state, when it was stored.
type Entry = (u64, Cached, Instant);

/// What the cache holds of a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cached {
    /// The state itself.
    State(Bytes),
    /// The update that carries it, for the reader to cut it out of: an
    /// update routed before its state was known is cached without parsing
    /// it, and most are replaced before anyone reads them.
    InUpdate(Bytes),
}

#[derive(Debug)]
pub(crate) struct StateCache {
    generations: Mutex<Generations>,
    /// Entries per generation: two generations hold at most the capacity.
    generation_size: usize,
    time_to_live: Duration,
}

#[derive(Debug, Default)]
struct Generations {
    current: HashMap<String, Entry>,
    previous: HashMap<String, Entry>,
}

impl StateCache {
    /// Holds at most `capacity` topics (at least two).
    pub(crate) fn new(capacity: usize, time_to_live: Duration) -> Self {
        Self {
            generations: Mutex::new(Generations::default()),
            generation_size: (capacity / 2).max(1),
            time_to_live,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Generations> {
        // Critical sections are a few map operations that cannot panic
        // midway; a poisoned lock cannot have left the maps inconsistent.
        self.generations.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state of `topic` and its sequence number, if cached and fresh.
    pub(crate) fn get(&self, topic: &str) -> Option<(u64, Cached)> {
        let mut generations = self.lock();
        let now = Instant::now();
        if let Some((seq, state, stored)) = generations.current.get(topic) {
            return (now.duration_since(*stored) < self.time_to_live).then(|| (*seq, state.clone()));
        }
        // A hit in the previous generation moves the entry up, so a topic
        // that is read stays.
        let (topic, entry) = generations.previous.remove_entry(topic)?;
        let (seq, state, stored) = entry.clone();
        self.put(&mut generations, topic, entry);
        (now.duration_since(stored) < self.time_to_live).then_some((seq, state))
    }

    /// Whether the cache holds `topic` at `seq` or later.
    pub(crate) fn has(&self, topic: &str, seq: u64) -> bool {
        let generations = self.lock();
        let cached = generations.current.get(topic).or_else(|| generations.previous.get(topic));
        cached.is_some_and(|(cached, _, _)| *cached >= seq)
    }

    /// Stores `state` for `topic` at `seq`, unless a later one is cached.
    /// The state itself replaces the update it came in at the same `seq`.
    pub(crate) fn store(&self, topic: &str, seq: u64, state: Cached) {
        let newer = |old: &Entry| {
            old.0 < seq
                || (old.0 == seq && matches!((&old.1, &state), (Cached::InUpdate(_), Cached::State(_))))
        };
        let mut generations = self.lock();
        if let Some(entry) = generations.current.get_mut(topic) {
            if newer(entry) {
                *entry = (seq, state, Instant::now());
            }
            return;
        }
        let entry = match generations.previous.remove(topic) {
            Some(old) if !newer(&old) => old,
            _ => (seq, state, Instant::now()),
        };
        self.put(&mut generations, topic.to_owned(), entry);
    }

    /// Forgets every state.
    pub(crate) fn clear(&self) {
        *self.lock() = Generations::default();
    }

    fn put(&self, generations: &mut Generations, topic: String, entry: Entry) {
        if generations.current.len() >= self.generation_size {
            generations.previous = std::mem::take(&mut generations.current);
        }
        generations.current.insert(topic, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let generations = self.lock();
        generations.current.len() + generations.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn state(s: &'static str) -> Cached {
        Cached::State(Bytes::from_static(s.as_bytes()))
    }

    #[test]
    fn an_older_state_never_replaces_a_newer_one() {
        let cache = StateCache::new(10, HOUR);
        cache.store("a", 2, state("two"));
        cache.store("a", 1, state("one"));
        assert_eq!(cache.get("a"), Some((2, state("two"))));
        cache.store("a", 3, state("three"));
        assert_eq!(cache.get("a"), Some((3, state("three"))));
        assert!(cache.has("a", 3));
        assert!(!cache.has("a", 4));
        assert!(!cache.has("b", 1));
    }

    #[test]
    fn the_state_itself_replaces_the_update_it_came_in_and_not_the_other_way() {
        let cache = StateCache::new(10, HOUR);
        let update = Cached::InUpdate(Bytes::from_static(b"{\"seq\":4,\"state\":\"four\"}"));
        cache.store("a", 4, update.clone());
        assert!(cache.has("a", 4));
        assert_eq!(cache.get("a"), Some((4, update.clone())));
        cache.store("a", 4, state("four"));
        assert_eq!(cache.get("a"), Some((4, state("four"))));
        cache.store("a", 4, update);
        assert_eq!(cache.get("a"), Some((4, state("four"))));
    }

    #[test]
    fn the_rule_holds_across_generations() {
        let cache = StateCache::new(4, HOUR);
        cache.store("a", 5, state("five"));
        // Two more topics move "a" into the previous generation.
        cache.store("b", 1, state("b"));
        cache.store("c", 1, state("c"));
        cache.store("a", 4, state("four"));
        assert_eq!(cache.get("a"), Some((5, state("five"))));
    }

    #[test]
    fn it_holds_at_most_its_capacity_and_keeps_what_is_used() {
        let cache = StateCache::new(100, HOUR);
        for i in 0..1_000 {
            cache.store(&format!("t{i}"), 1, state("s"));
            // One topic read all along stays however many others pass.
            if i % 10 == 0 {
                cache.store("hot", i, state("hot"));
            }
            assert!(cache.len() <= 100, "{} entries", cache.len());
        }
        assert_eq!(cache.get("hot").map(|(seq, _)| seq), Some(990));
        assert_eq!(cache.get("t0"), None, "the oldest topics are gone");
        assert!(cache.get("t999").is_some());
    }

    #[test]
    fn a_read_keeps_a_topic() {
        let cache = StateCache::new(4, HOUR);
        cache.store("a", 1, state("a"));
        cache.store("b", 1, state("b"));
        cache.store("c", 1, state("c")); // "a" and "b" now previous
        assert!(cache.get("a").is_some()); // "a" moves up
        cache.store("d", 1, state("d")); // "c" and "a" become previous, "b" goes
        assert!(cache.get("a").is_some());
        assert!(cache.get("b").is_none());
    }

    #[test]
    fn stale_entries_are_not_served_and_clear_forgets_all() {
        let cache = StateCache::new(10, Duration::ZERO);
        cache.store("a", 1, state("a"));
        assert_eq!(cache.get("a"), None);

        let cache = StateCache::new(10, HOUR);
        cache.store("a", 1, state("a"));
        cache.clear();
        assert_eq!(cache.get("a"), None);
        assert!(!cache.has("a", 1));
    }
}
