//! The bulk queue: result parts served round-robin across commands, each command's parts in
//! order, so that one large result does not hold every other command's result behind it.

use std::collections::{BTreeMap, VecDeque};

/// Items grouped by a key (the command id); `pop_front` takes the head of the key whose turn it
/// is, then moves that key to the back of the rotation.
#[derive(Debug)]
pub(super) struct FairQueue<T> {
    queues: BTreeMap<String, VecDeque<T>>,
    /// Keys with items, in turn order; each key at most once.
    turns: VecDeque<String>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            queues: BTreeMap::new(),
            turns: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> FairQueue<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Appends `item` after the other items of `key`; a new key takes the last turn.
    pub(super) fn push_back(&mut self, key: &str, item: T) {
        self.queue(key, false).push_back(item);
        self.len += 1;
    }

    /// Puts `item` before the other items of `key`, and gives `key` the next turn (a part sent
    /// but not acknowledged on a link that ended goes out first on the next one).
    pub(super) fn push_front(&mut self, key: &str, item: T) {
        self.queue(key, true).push_front(item);
        self.len += 1;
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let key = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&key)?;
        let item = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&key);
        } else {
            self.turns.push_back(key);
        }
        if item.is_some() {
            self.len -= 1;
        }
        item
    }

    /// Every item, in the order `pop_front` would give them.
    pub(super) fn drain(&mut self) -> Vec<T> {
        let mut items = Vec::with_capacity(self.len);
        while let Some(item) = self.pop_front() {
            items.push(item);
        }
        items
    }

    fn queue(&mut self, key: &str, first: bool) -> &mut VecDeque<T> {
        if !self.queues.contains_key(key) {
            if first {
                self.turns.push_front(key.to_owned());
            } else {
                self.turns.push_back(key.to_owned());
            }
        } else if first {
            // Move the key to the front of the rotation.
            self.turns.retain(|k| k != key);
            self.turns.push_front(key.to_owned());
        }
        self.queues.entry(key.to_owned()).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::FairQueue;

    #[test]
    fn keys_take_turns_and_keep_their_order() {
        let mut q = FairQueue::default();
        for part in 0..3 {
            q.push_back("a", ("a", part));
        }
        q.push_back("b", ("b", 0));
        q.push_back("b", ("b", 1));
        q.push_back("c", ("c", 0));
        assert_eq!(q.len(), 6);
        assert_eq!(
            q.drain(),
            [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("a", 2)]
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn push_front_goes_first_and_before_its_key() {
        let mut q = FairQueue::default();
        q.push_back("a", 1);
        q.push_back("b", 10);
        q.push_back("b", 12);
        q.push_front("b", 11);
        q.push_front("b", 9);
        assert_eq!(q.drain(), [9, 1, 11, 10, 12]);
    }
}
