//! The 32-byte seed of the machine's ChaCha stream (pairing secrets, ids, jitter): from
//! `/dev/urandom` where there is one, else from std's randomly keyed SipHash (`RandomState`, which
//! the OS seeds), so the crate needs no RNG dependency.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Read;

pub fn os_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    let from_urandom = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .is_ok();
    if !from_urandom {
        for (i, chunk) in seed.chunks_mut(8).enumerate() {
            let word = RandomState::new().hash_one((i, std::process::id()));
            chunk.copy_from_slice(&word.to_le_bytes());
        }
    }
    seed
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_seeds_differ() {
        assert_ne!(super::os_seed(), super::os_seed());
    }
}
