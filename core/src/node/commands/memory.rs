//! What the table remembers about commands it has answered: their results (for redelivery), and
//! which of them an executor may still be running (for late finishes).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::time::saturating_add;
use crate::wire::dto::CommandResultDto;

/// Finished commands' results, bounded by count and age, and abandoned ids, bounded by count.
#[derive(Debug)]
pub(super) struct Memory {
    capacity: usize,
    remember_for: Duration,
    results: BTreeMap<String, Arc<CommandResultDto>>,
    /// `(expiry, id)` in the order the results were stored: the front is the oldest.
    order: VecDeque<(Instant, String)>,
    abandoned_capacity: usize,
    /// Abandoned id -> the sequence number it was abandoned with.
    abandoned: BTreeMap<String, u64>,
    abandoned_order: BTreeMap<u64, String>,
    next_seq: u64,
}

impl Memory {
    pub(super) fn new(capacity: usize, remember_for: Duration, abandoned_capacity: usize) -> Self {
        Self {
            capacity,
            remember_for,
            results: BTreeMap::new(),
            order: VecDeque::new(),
            abandoned_capacity,
            abandoned: BTreeMap::new(),
            abandoned_order: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Stores `result`, answered at `now`, forgetting the oldest result when full. Remembers
    /// nothing when the capacity or the duration is zero.
    pub(super) fn remember(&mut self, now: Instant, result: Arc<CommandResultDto>) {
        if self.capacity == 0 || self.remember_for.is_zero() {
            return;
        }
        while self.results.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_front() else {
                break;
            };
            self.results.remove(&oldest);
        }
        let id = result.command_id.clone();
        // A live command is never remembered (the table checks the memory before admitting), so
        // `id` is not in `results` and `order` gets one entry per result.
        if self.results.insert(id.clone(), result).is_none() {
            self.order
                .push_back((saturating_add(now, self.remember_for), id));
        }
    }

    /// The stored result of `id`, while remembered.
    pub(super) fn result(&self, id: &str) -> Option<&Arc<CommandResultDto>> {
        self.results.get(id)
    }

    /// Notes that `id`'s executor may still run although the table answered it.
    pub(super) fn abandon(&mut self, id: &str) {
        if self.abandoned_capacity == 0 {
            return;
        }
        while self.abandoned.len() >= self.abandoned_capacity {
            let Some((_, oldest)) = self.abandoned_order.pop_first() else {
                break;
            };
            self.abandoned.remove(&oldest);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(previous) = self.abandoned.insert(id.to_owned(), seq) {
            self.abandoned_order.remove(&previous);
        }
        self.abandoned_order.insert(seq, id.to_owned());
    }

    /// Whether `id` is abandoned.
    pub(super) fn is_abandoned(&self, id: &str) -> bool {
        self.abandoned.contains_key(id)
    }

    /// Removes `id` from the abandoned ids (its executor finished); whether it was there.
    pub(super) fn take_abandoned(&mut self, id: &str) -> bool {
        match self.abandoned.remove(id) {
            Some(seq) => {
                self.abandoned_order.remove(&seq);
                true
            }
            None => false,
        }
    }

    /// When the oldest result is forgotten.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.order.front().map(|(at, _)| *at)
    }

    /// Forgets every result whose time is up at `now` (expiry `<= now`).
    pub(super) fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if *at > now {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.results.remove(&id);
            }
        }
    }

    /// Forgets every result (abandoned ids are kept, for their late finishes).
    pub(super) fn forget_results(&mut self) {
        self.results.clear();
        self.order.clear();
    }

    /// How many results are remembered.
    pub(super) fn len(&self) -> usize {
        self.results.len()
    }
}
