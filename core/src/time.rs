//! Timers without a clock: a fixed table of named timers, a queue of keyed deadlines, and the
//! periodic-deadline rule for heartbeats.
//!
//! # Theory of operation
//! Core never reads a clock (design rule 1): every input carries `now: Instant` and the machine
//! answers `poll_timeout()` with the earliest instant it wants to be woken at. These types hold
//! those instants.
//!
//! - [`TimerTable`] is one `Option<Instant>` per timer of a small enum the machine defines
//!   (heartbeat, idle, reconnect, ...), after quinn's connection timer table. Arming a timer twice
//!   moves it; `poll_timeout()` is [`TimerTable::next_expiry`]; `handle_timeout(now)` drains
//!   [`TimerTable::pop_expired`]. Expired timers come out in a deterministic order: by deadline,
//!   then by [`TimerKind::index`].
//! - [`DeadlineQueue`] holds any number of keyed deadlines (one per in-flight command) in
//!   O(log n): a `BTreeSet` of `(deadline, key)` for "what expires next" and a `BTreeMap` from key
//!   to deadline so a key can be moved or removed. Equal deadlines pop in key order.
//! - [`next_periodic`] is the heartbeat rule (design rule 7): the next deadline advances from the
//!   previous deadline, not from `now`, so a late wake-up does not drift the schedule, and missed
//!   periods are skipped, not fired in a burst.
//!
//! Design rule 8 ("after `handle_timeout(t)`, `poll_timeout()` is `> t` or `None`") follows if a
//! machine's `handle_timeout` pops every expired timer and re-arms periodic ones with
//! [`next_periodic`], which is always later than `now`. A handler that arms a timer at or before
//! `now` gets it back from the same `pop_expired` loop; one that does so unconditionally loops.
//!
//! Adding a `Duration` to an `Instant` panics on overflow, and some durations come from a peer
//! (a command's `timeoutMs`): compute deadlines with [`saturating_add`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{Duration, Instant};

/// A timer of a machine: a small `Copy` enum. `ALL` lists every value, and `index` is the
/// value's position in `ALL` (`ALL[t.index()] == t`); a `match` returning constants is enough.
pub trait TimerKind: Copy + Eq + fmt::Debug + 'static {
    /// Every timer, in index order.
    const ALL: &'static [Self];
    /// This timer's position in [`ALL`](Self::ALL).
    fn index(self) -> usize;
}

/// One optional deadline per timer of `T`; see the module docs.
#[derive(Clone, PartialEq, Eq)]
pub struct TimerTable<T: TimerKind> {
    deadlines: Vec<Option<Instant>>,
    kind: std::marker::PhantomData<T>,
}

impl<T: TimerKind> Default for TimerTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: TimerKind> fmt::Debug for TimerTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(T::ALL.iter().filter_map(|t| self.get(*t).map(|at| (t, at))))
            .finish()
    }
}

impl<T: TimerKind> TimerTable<T> {
    /// A table with every timer stopped.
    pub fn new() -> Self {
        Self {
            deadlines: vec![None; T::ALL.len()],
            kind: std::marker::PhantomData,
        }
    }

    /// Arms `timer` to fire at `at`, replacing any earlier deadline.
    pub fn set(&mut self, timer: T, at: Instant) {
        debug_assert!(
            timer.index() < T::ALL.len(),
            "TimerKind::index of {timer:?} is outside ALL"
        );
        if let Some(slot) = self.deadlines.get_mut(timer.index()) {
            *slot = Some(at);
        }
    }

    /// Disarms `timer` (a no-op when it is not armed).
    pub fn stop(&mut self, timer: T) {
        if let Some(slot) = self.deadlines.get_mut(timer.index()) {
            *slot = None;
        }
    }

    /// Disarms every timer.
    pub fn stop_all(&mut self) {
        self.deadlines.iter_mut().for_each(|slot| *slot = None);
    }

    /// When `timer` fires, if it is armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.deadlines.get(timer.index()).copied().flatten()
    }

    /// Whether `timer` is armed.
    pub fn is_armed(&self, timer: T) -> bool {
        self.get(timer).is_some()
    }

    /// Whether `timer` is armed with a deadline at or before `now`.
    pub fn is_expired(&self, timer: T, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// The earliest deadline of all armed timers: the machine's `poll_timeout()`.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the expired timer (deadline `<= now`) that comes first by deadline,
    /// then by index, with its deadline; `None` when nothing has expired. Call it in a loop.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(T, Instant)> {
        // `min_by_key` keeps the first of equal minima, i.e. the lowest index.
        let (index, at) = self
            .deadlines
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.filter(|at| *at <= now).map(|at| (i, at)))
            .min_by_key(|(_, at)| *at)?;
        self.deadlines[index] = None;
        T::ALL.get(index).map(|timer| (*timer, at))
    }

    /// Disarms every timer expired at `now` and returns them by deadline, then index. Timers that
    /// handling them arms at or before `now` are not included: prefer a
    /// [`pop_expired`](Self::pop_expired) loop when that can happen.
    pub fn expire_before_or_at(&mut self, now: Instant) -> Vec<T> {
        let mut expired = Vec::new();
        while let Some((timer, _)) = self.pop_expired(now) {
            expired.push(timer);
        }
        expired
    }
}

/// Keyed deadlines in O(log n), earliest first; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadlineQueue<K: Ord + Clone> {
    by_deadline: BTreeSet<(Instant, K)>,
    by_key: BTreeMap<K, Instant>,
}

impl<K: Ord + Clone> Default for DeadlineQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Clone> DeadlineQueue<K> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            by_deadline: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }

    /// Sets `key`'s deadline to `at`, replacing (and returning) an earlier one of the same key.
    pub fn insert(&mut self, key: K, at: Instant) -> Option<Instant> {
        let previous = self.by_key.insert(key.clone(), at);
        if let Some(previous) = previous {
            self.by_deadline.remove(&(previous, key.clone()));
        }
        self.by_deadline.insert((at, key));
        previous
    }

    /// Removes `key`, returning its deadline if it had one.
    pub fn remove(&mut self, key: &K) -> Option<Instant> {
        let at = self.by_key.remove(key)?;
        self.by_deadline.remove(&(at, key.clone()));
        Some(at)
    }

    /// `key`'s deadline, if it has one.
    pub fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// Whether `key` has a deadline.
    pub fn contains(&self, key: &K) -> bool {
        self.by_key.contains_key(key)
    }

    /// How many keys have a deadline.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no key has a deadline.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// The earliest deadline: a machine's `poll_timeout()` contribution.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first().map(|(at, _)| *at)
    }

    /// The earliest deadline and its key, without removing it.
    pub fn peek(&self) -> Option<(Instant, &K)> {
        self.by_deadline.first().map(|(at, key)| (*at, key))
    }

    /// Removes and returns the key whose deadline comes first, if that deadline is `<= now`
    /// (ties pop in key order). Call it in a loop to drain everything expired.
    pub fn pop_expired(&mut self, now: Instant) -> Option<K> {
        if self.next_deadline()? > now {
            return None;
        }
        let (_, key) = self.by_deadline.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// Every key with its deadline, earliest first.
    pub fn iter(&self) -> impl Iterator<Item = (Instant, &K)> + '_ {
        self.by_deadline.iter().map(|(at, key)| (*at, key))
    }

    /// Removes every deadline.
    pub fn clear(&mut self) {
        self.by_deadline.clear();
        self.by_key.clear();
    }
}

/// The deadline after `prev` of a timer that fires every `period`: `prev + k * period` for the
/// smallest `k >= 1` that is later than `now`. It advances from `prev`, not from `now` (a late
/// wake-up does not shift the schedule) and skips the periods missed while asleep instead of
/// firing them in a burst. The result is always `> now` (unless the clock's range is exhausted),
/// which keeps design rule 8. A zero `period` is treated as 1 ns: validate periods in the config.
pub fn next_periodic(prev: Instant, period: Duration, now: Instant) -> Instant {
    let period = period.max(Duration::from_nanos(1));
    let behind = now.saturating_duration_since(prev).as_nanos();
    // k = floor(behind / period) + 1: the first multiple of `period` strictly past `now`.
    let steps = behind / period.as_nanos() + 1;
    let advance = period.as_nanos().saturating_mul(steps);
    saturating_add(prev, duration_from_nanos(advance))
}

/// `at + d` without the panic of `Instant + Duration` on overflow: if the sum is beyond the
/// clock's range, the latest of `at + d/2`, `at + d/4`, ... that fits (at worst `at`). Deadlines
/// built from peer-supplied durations must use this.
pub fn saturating_add(at: Instant, d: Duration) -> Instant {
    let mut d = d;
    // Terminates: `d` halves to zero, and `at + 0` always fits.
    loop {
        if let Some(sum) = at.checked_add(d) {
            return sum;
        }
        d /= 2;
    }
}

/// A `u128` nanosecond count as a `Duration`, saturating at `Duration::MAX`.
pub fn duration_from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9, so the cast is lossless.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}
