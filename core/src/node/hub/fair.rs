//! The bulk queue: result parts served round-robin across commands, each command's parts in
//! order, so that one large result does not hold every other command's result behind it.

use std::collections::{BTreeMap, VecDeque};

/// Items grouped by a key (the command id); `pop_front` takes the head of the key whose turn it
/// is, then moves that key to the back of the rotation.
///
/// The common case, one item passing through an empty queue, skips the map: it waits in `solo`.
#[derive(Debug)]
pub(super) struct FairQueue<T> {
    solo: Option<(String, T)>,
    queues: BTreeMap<String, VecDeque<T>>,
    /// Keys with items, in turn order; each key at most once.
    turns: VecDeque<String>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        FairQueue {
            solo: None,
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
    pub(super) fn push_back(&mut self, key: String, item: T) {
        if self.len == 0 {
            self.solo = Some((key, item));
        } else {
            self.unsolo();
            self.queue(key, false).push_back(item);
        }
        self.len += 1;
    }

    /// Puts `item` before the other items of `key`, and gives `key` the next turn (a part sent
    /// but not acknowledged on a link that ended goes out first on the next one).
    pub(super) fn push_front(&mut self, key: String, item: T) {
        self.unsolo();
        self.queue(key, true).push_front(item);
        self.len += 1;
    }

    /// Moves the solo item into the map, so that order holds once others join it.
    fn unsolo(&mut self) {
        if let Some((key, item)) = self.solo.take() {
            self.queue(key, false).push_back(item);
        }
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        if let Some((_, item)) = self.solo.take() {
            self.len -= 1;
            return Some(item);
        }
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

    fn queue(&mut self, key: String, first: bool) -> &mut VecDeque<T> {
        if self.queues.contains_key(&key) {
            if first {
                // Move the key to the front of the rotation.
                self.turns.retain(|k| *k != key);
                self.turns.push_front(key.clone());
            }
        } else if first {
            self.turns.push_front(key.clone());
        } else {
            self.turns.push_back(key.clone());
        }
        self.queues.entry(key).or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::FairQueue;

    #[test]
    fn keys_take_turns_and_keep_their_order() {
        let mut q = FairQueue::default();
        for part in 0..3 {
            q.push_back("a".into(), ("a", part));
        }
        q.push_back("b".into(), ("b", 0));
        q.push_back("b".into(), ("b", 1));
        q.push_back("c".into(), ("c", 0));
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
        q.push_back("a".into(), 1);
        q.push_back("b".into(), 10);
        q.push_back("b".into(), 12);
        q.push_front("b".into(), 11);
        q.push_front("b".into(), 9);
        assert_eq!(q.drain(), [9, 1, 11, 10, 12]);
    }

    #[test]
    fn a_solo_item_keeps_its_place_when_others_join() {
        let mut q = FairQueue::default();
        q.push_back("a".into(), 1);
        q.push_back("a".into(), 2);
        q.push_back("b".into(), 10);
        assert_eq!(q.pop_front(), Some(1));
        assert_eq!(q.len(), 2);
        q.push_front("c".into(), 0);
        assert_eq!(q.drain(), [0, 10, 2]);
    }
}
