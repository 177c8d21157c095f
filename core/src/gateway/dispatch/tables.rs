//! The dispatcher's tables: a slab of slots (commands, nodes), commands by id, and the
//! finished-command memory in forgetting order.
//!
//! Nothing here is iterated where its order could reach an output except [`Memory`], which is
//! kept sorted; the hash maps use a fixed hasher (no `RandomState`), so that every run is the
//! same.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};
use std::time::Instant;

/// A slot number of a [`Slab`].
pub(super) trait SlotId: Copy {
    fn from_slot(slot: usize) -> Self;
    fn slot(self) -> usize;
}

/// A command's slot: valid from its creation until it is forgotten (then reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Ix(usize);

/// A node's slot: valid from its registration until its revocation (then reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct NodeIx(usize);

impl SlotId for Ix {
    fn from_slot(slot: usize) -> Self {
        Ix(slot)
    }
    fn slot(self) -> usize {
        self.0
    }
}

impl SlotId for NodeIx {
    fn from_slot(slot: usize) -> Self {
        NodeIx(slot)
    }
    fn slot(self) -> usize {
        self.0
    }
}

/// Values in numbered slots; a removed value's slot is reused by the next insert (no memory
/// churn in a steady state).
#[derive(Debug)]
pub(super) struct Slab<I, T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    len: usize,
    id: PhantomData<I>,
}

impl<I: SlotId, T> Slab<I, T> {
    pub(super) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
            id: PhantomData,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot the next [`insert`](Self::insert) fills.
    pub(super) fn vacant(&self) -> I {
        I::from_slot(self.free.last().copied().unwrap_or(self.slots.len()))
    }

    pub(super) fn insert(&mut self, value: T) -> I {
        self.len += 1;
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(value);
                I::from_slot(slot)
            }
            None => {
                self.slots.push(Some(value));
                I::from_slot(self.slots.len() - 1)
            }
        }
    }

    pub(super) fn remove(&mut self, id: I) -> Option<T> {
        let value = self.slots.get_mut(id.slot())?.take()?;
        self.len -= 1;
        self.free.push(id.slot());
        Some(value)
    }

    pub(super) fn get(&self, id: I) -> Option<&T> {
        self.slots.get(id.slot())?.as_ref()
    }

    pub(super) fn get_mut(&mut self, id: I) -> Option<&mut T> {
        self.slots.get_mut(id.slot())?.as_mut()
    }

    /// Every value with its slot, in slot order (not an order any output may depend on).
    pub(super) fn iter(&self) -> impl Iterator<Item = (I, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, value)| value.as_ref().map(|v| (I::from_slot(slot), v)))
    }
}

impl<I: SlotId, T> Index<I> for Slab<I, T> {
    type Output = T;

    fn index(&self, id: I) -> &T {
        self.get(id).expect("a slot in use")
    }
}

impl<I: SlotId, T> IndexMut<I> for Slab<I, T> {
    fn index_mut(&mut self, id: I) -> &mut T {
        self.get_mut(id).expect("a slot in use")
    }
}

/// A hasher for keys that are random already (UUIDs): a fold and a multiply. Deterministic.
#[derive(Default)]
pub(super) struct UuidHasher(u64);

impl Hasher for UuidHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `u128` keys; FNV-1a for completeness.
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, value: u128) {
        let folded = (value as u64) ^ ((value >> 64) as u64) ^ self.0;
        self.0 = folded.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// FNV-1a: a fixed hasher for short keys (node ids) in maps that are never iterated; far
/// cheaper than SipHash for them, and no weaker here (SipHash with fixed keys is no defence).
#[derive(Default)]
pub struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for byte in bytes {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = hash;
    }
}

/// Commands by id. A UUID in canonical form (lowercase, hyphenated: what `dispatch` creates) is
/// keyed by its 128-bit value; any other id (only a restored record can carry one) by its text.
#[derive(Debug)]
pub(super) struct Ids {
    uuids: HashMap<u128, Ix, BuildHasherDefault<UuidHasher>>,
    others: BTreeMap<String, Ix>,
}

impl Ids {
    pub(super) fn new() -> Self {
        Self {
            uuids: HashMap::default(),
            others: BTreeMap::new(),
        }
    }

    pub(super) fn get(&self, id: &str) -> Option<Ix> {
        match canonical_uuid(id) {
            Some(uuid) => self.uuids.get(&uuid).copied(),
            None => self.others.get(id).copied(),
        }
    }

    pub(super) fn contains(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    /// Adds `id` unless it is present (then nothing changes and this is `false`).
    pub(super) fn insert_new(&mut self, id: &str, ix: Ix) -> bool {
        use std::collections::btree_map::Entry as BTreeEntry;
        use std::collections::hash_map::Entry;
        match canonical_uuid(id) {
            Some(uuid) => match self.uuids.entry(uuid) {
                Entry::Occupied(_) => false,
                Entry::Vacant(vacant) => {
                    vacant.insert(ix);
                    true
                }
            },
            None => match self.others.entry(id.to_owned()) {
                BTreeEntry::Occupied(_) => false,
                BTreeEntry::Vacant(vacant) => {
                    vacant.insert(ix);
                    true
                }
            },
        }
    }

    /// Adds the canonical UUID of this value (the one [`uuid_text`](crate::rng::uuid_text)
    /// writes) unless it is present (then nothing changes and this is `false`).
    pub(super) fn insert_new_uuid(&mut self, uuid: u128, ix: Ix) -> bool {
        match self.uuids.entry(uuid) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(vacant) => {
                vacant.insert(ix);
                true
            }
        }
    }

    pub(super) fn remove(&mut self, id: &str) {
        match canonical_uuid(id) {
            Some(uuid) => self.uuids.remove(&uuid),
            None => self.others.remove(id),
        };
    }
}

/// The value of `8-4-4-4-12` lowercase hex digits; `None` for any other text. One-to-one: two
/// different texts never give the same value.
fn canonical_uuid(id: &str) -> Option<u128> {
    /// Where the 32 digits are.
    const DIGITS: [usize; 32] = [
        0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 19, 20, 21, 22, 24, 25, 26, 27, 28,
        29, 30, 31, 32, 33, 34, 35,
    ];
    /// A lowercase hex digit's value; 0xff for any other byte.
    const HEX: [u8; 256] = {
        let mut table = [0xff; 256];
        let mut i = 0;
        while i < 16 {
            table[b"0123456789abcdef"[i] as usize] = i as u8;
            i += 1;
        }
        table
    };
    let bytes: &[u8; 36] = id.as_bytes().try_into().ok()?;
    if bytes[8] != b'-' || bytes[13] != b'-' || bytes[18] != b'-' || bytes[23] != b'-' {
        return None;
    }
    let (mut high, mut low, mut bad) = (0u64, 0u64, 0u8);
    for &at in &DIGITS[..16] {
        let digit = HEX[usize::from(bytes[at])];
        bad |= digit;
        high = (high << 4) | u64::from(digit);
    }
    for &at in &DIGITS[16..] {
        let digit = HEX[usize::from(bytes[at])];
        bad |= digit;
        low = (low << 4) | u64::from(digit);
    }
    (bad < 16).then_some((u128::from(high) << 64) | u128::from(low))
}

/// One finished command in the memory: when it is forgotten, its creation number (ties go in
/// creation order), its slot.
pub(super) type Remembered = (Instant, u64, Ix);

/// Finished commands in the order they are forgotten. Live ones finish in time order, so an
/// insert is nearly always at the back (a restore may insert anywhere).
#[derive(Debug)]
pub(super) struct Memory {
    queue: VecDeque<Remembered>,
}

impl Memory {
    pub(super) fn new() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    pub(super) fn insert(&mut self, entry: Remembered) {
        match self.queue.back() {
            Some(last) if *last > entry => {
                let at = self.queue.partition_point(|e| *e < entry);
                self.queue.insert(at, entry);
            }
            _ => self.queue.push_back(entry),
        }
    }

    pub(super) fn remove(&mut self, entry: Remembered) {
        if let Ok(at) = self.queue.binary_search(&entry) {
            self.queue.remove(at);
        }
    }

    pub(super) fn first(&self) -> Option<Remembered> {
        self.queue.front().copied()
    }

    pub(super) fn pop_first(&mut self) -> Option<Remembered> {
        self.queue.pop_front()
    }
}

/// A node's commands with it, by dispatch number: a short vector kept in ascending order (a
/// node holds a few commands at a time, and dispatch numbers only grow, so an insert is nearly
/// always a push). Its capacity stays with the node: no allocation per command, where a B-tree
/// allocated a node each time it went from empty to one entry.
#[derive(Debug, Default)]
pub(super) struct InFlight(Vec<(u64, Ix)>);

impl InFlight {
    pub(super) fn insert(&mut self, seq: u64, ix: Ix) {
        match self.0.last() {
            Some((last, _)) if *last >= seq => {
                match self.0.binary_search_by_key(&seq, |(s, _)| *s) {
                    Ok(at) => self.0[at].1 = ix,
                    Err(at) => self.0.insert(at, (seq, ix)),
                }
            }
            _ => self.0.push((seq, ix)),
        }
    }

    pub(super) fn remove(&mut self, seq: &u64) -> Option<Ix> {
        let at = self.0.iter().position(|(s, _)| s == seq)?;
        Some(self.0.remove(at).1)
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// The commands in dispatch order.
    pub(super) fn values(&self) -> impl DoubleEndedIterator<Item = &Ix> + Clone + '_ {
        self.0.iter().map(|(_, ix)| ix)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_canonical_uuids_have_a_value_and_no_two_share_one() {
        let id = "0b7e6c1a-3f2d-4e5b-8a9c-1d2e3f4a5b6c";
        assert_eq!(
            canonical_uuid(id),
            Some(0x0b7e6c1a_3f2d_4e5b_8a9c_1d2e3f4a5b6c)
        );
        for other in [
            "0B7E6C1A-3F2D-4E5B-8A9C-1D2E3F4A5B6C",
            "0b7e6c1a3f2d4e5b8a9c1d2e3f4a5b6c",
            "0b7e6c1a-3f2d-4e5b-8a9c-1d2e3f4a5b6",
            "0b7e6c1a-3f2d-4e5b-8a9c-1d2e3f4a5b6g",
            "0b7e6c1a+3f2d-4e5b-8a9c-1d2e3f4a5b6c",
            "",
        ] {
            assert_eq!(canonical_uuid(other), None, "{other}");
        }
        let mut ids = Ids::new();
        assert!(ids.insert_new(id, Ix(1)));
        assert!(!ids.insert_new(id, Ix(2)));
        assert!(ids.insert_new(&id.to_uppercase(), Ix(3)));
        assert_eq!(ids.get(id), Some(Ix(1)));
        assert_eq!(ids.get(&id.to_uppercase()), Some(Ix(3)));
        ids.remove(id);
        assert_eq!(ids.get(id), None);
        assert_eq!(ids.get(&id.to_uppercase()), Some(Ix(3)));
    }

    #[test]
    fn an_id_added_by_value_is_found_by_its_text() {
        let value = 0x0b7e6c1a_3f2d_4e5b_8a9c_1d2e3f4a5b6c;
        let mut ids = Ids::new();
        assert!(ids.insert_new_uuid(value, Ix(1)));
        assert!(!ids.insert_new_uuid(value, Ix(2)));
        assert!(!ids.insert_new("0b7e6c1a-3f2d-4e5b-8a9c-1d2e3f4a5b6c", Ix(3)));
        assert_eq!(ids.get(&crate::rng::uuid_text(value)), Some(Ix(1)));
        ids.remove("0b7e6c1a-3f2d-4e5b-8a9c-1d2e3f4a5b6c");
        assert!(ids.insert_new_uuid(value, Ix(4)));
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin for the test's instants
    fn the_memory_stays_in_order_whatever_the_order_of_inserts() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut memory = Memory::new();
        for (s, key) in [(5, 1), (5, 0), (3, 7), (9, 2), (5, 4)] {
            memory.insert((at(s), key, Ix(key as usize)));
        }
        memory.remove((at(9), 2, Ix(2)));
        memory.remove((at(1), 0, Ix(0)));
        let order: Vec<u64> = std::iter::from_fn(|| memory.pop_first())
            .map(|e| e.1)
            .collect();
        assert_eq!(order, [7, 0, 1, 4]);
    }

    #[test]
    fn in_flight_keeps_dispatch_order_whatever_the_order_of_inserts() {
        let mut table = InFlight::default();
        for seq in [4, 9, 2, 7] {
            table.insert(seq, Ix(seq as usize));
        }
        table.insert(7, Ix(70));
        assert_eq!(table.remove(&9), Some(Ix(9)));
        assert_eq!(table.remove(&9), None);
        let order: Vec<Ix> = table.values().copied().collect();
        assert_eq!(order, [Ix(2), Ix(4), Ix(70)]);
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_slab_reuses_freed_slots() {
        let mut slab: Slab<Ix, &str> = Slab::new();
        assert_eq!(slab.vacant(), Ix(0));
        let a = slab.insert("a");
        let b = slab.insert("b");
        assert_eq!(slab.remove(a), Some("a"));
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.vacant(), a);
        assert_eq!(slab.insert("c"), a);
        assert_eq!((slab[a], slab[b], slab.len()), ("c", "b", 2));
    }
}
