//! Rate limits over many keys (source addresses, node ids): one token bucket per key, in the GCRA
//! form that needs a single instant per key.
//!
//! A [`RateLimit`] of `burst` events `per` window refills one event every `per / burst`. For a key
//! the limiter keeps its *theoretical arrival time* `tat`: the instant at which its bucket is full
//! again. Recording an event moves `tat` to `max(tat, now) + per / burst`; the key is limited
//! while `tat - now > per - per / burst`, that is once `burst` events have been recorded without
//! a refill, and it is free again `per / burst` later. A key whose `tat` has passed has a full
//! bucket, exactly like a key never seen: the limiter forgets it then (a [`DeadlineQueue`] keyed
//! by `tat`), so idle keys cost nothing. When `max_keys` keys are tracked, recording a new key
//! evicts the one whose bucket is the fullest (the earliest `tat`): the most limited keys are the
//! last to go.

use std::time::{Duration, Instant};

use crate::time::{saturating_add, DeadlineQueue};

/// At most `burst` events per `per`, refilled continuously (one every `per / burst`). A `burst`
/// of 0 counts as 1; a zero `per` disables the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub burst: u32,
    pub per: Duration,
}

impl RateLimit {
    pub const fn new(burst: u32, per: Duration) -> RateLimit {
        RateLimit { burst, per }
    }

    /// How often one event is refilled.
    pub fn interval(&self) -> Duration {
        self.per / self.burst.max(1)
    }

    /// How far `tat` may run ahead of `now` before the key is limited.
    fn tolerance(&self) -> Duration {
        self.per.saturating_sub(self.interval())
    }
}

/// Token buckets for many keys; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Limiter<K: Ord + Clone> {
    limit: RateLimit,
    max_keys: usize,
    tat: DeadlineQueue<K>,
}

impl<K: Ord + Clone> Limiter<K> {
    pub fn new(limit: RateLimit, max_keys: usize) -> Limiter<K> {
        Limiter {
            limit,
            max_keys,
            tat: DeadlineQueue::new(),
        }
    }

    /// How long `key` stays limited, or `None` when it may act now.
    pub fn retry_after(&self, key: &K, now: Instant) -> Option<Duration> {
        let tat = self.tat.get(key)?;
        let tolerance = self.limit.tolerance();
        (tat > saturating_add(now, tolerance))
            .then(|| tat.duration_since(now).saturating_sub(tolerance))
    }

    /// Spends one event of `key`'s bucket.
    pub fn record(&mut self, key: &K, now: Instant) {
        let interval = self.limit.interval();
        if interval.is_zero() || self.max_keys == 0 {
            return;
        }
        let tat = match self.tat.get(key) {
            Some(tat) => tat.max(now),
            None => {
                if self.tat.len() >= self.max_keys {
                    if let Some((_, fullest)) = self.tat.peek() {
                        let fullest = fullest.clone();
                        self.tat.remove(&fullest);
                    }
                }
                now
            }
        };
        self.tat.insert(key.clone(), saturating_add(tat, interval));
    }

    /// Forgets the keys whose bucket is full again.
    pub fn expire(&mut self, now: Instant) {
        while self.tat.pop_expired(now).is_some() {}
    }

    /// When the next key is forgotten.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.tat.next_deadline()
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.tat.len()
    }
}

/// A duration in whole milliseconds, rounded up (a `retryAfterMs` that is never too early).
pub(crate) fn ceil_ms(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
