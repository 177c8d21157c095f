//! One lane per GPU: a command takes a free lane for its whole run, or gets `busy`.
//!
//! A lane owns its device's context, stream, cuBLAS handle and built-in kernels, created on the
//! lane's first use (a context costs device memory and a few hundred ms, so a node that never
//! runs GPU work never pays for it).

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use nodelink_core::node::executor::command_error;
use nodelink_core::wire::dto::{CommandError, ErrorCode};

use super::device::GpuLane;

/// A lane's state, behind its lock.
pub struct LaneState {
    pub index: usize,
    /// The device objects, once created; `Err` remembers why creation failed.
    pub(crate) gpu: Option<Result<GpuLane, String>>,
}

/// The node's GPU lanes.
pub struct Lanes {
    lanes: Vec<Mutex<LaneState>>,
    retry_after: Duration,
}

impl std::fmt::Debug for LaneState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.gpu {
            None => "not opened",
            Some(Ok(_)) => "open",
            Some(Err(_)) => "failed",
        };
        f.debug_struct("LaneState")
            .field("index", &self.index)
            .field("device", &state)
            .finish()
    }
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("count", &self.lanes.len())
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl Lanes {
    /// `count` lanes (one per GPU); `retry_after` is the `retryAfterMs` of `busy`.
    pub fn new(count: usize, retry_after: Duration) -> Self {
        Self {
            lanes: (0..count)
                .map(|index| Mutex::new(LaneState { index, gpu: None }))
                .collect(),
            retry_after,
        }
    }

    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// The first free lane, held until the guard drops; `busy` with `retryAfterMs` when every
    /// lane is taken.
    pub fn acquire(&self) -> Result<MutexGuard<'_, LaneState>, CommandError> {
        for lane in &self.lanes {
            match lane.try_lock() {
                Ok(guard) => return Ok(guard),
                // A command that panicked on this lane: its device objects may be half made.
                Err(TryLockError::Poisoned(poisoned)) => {
                    let mut guard = poisoned.into_inner();
                    guard.gpu = None;
                    lane.clear_poison();
                    return Ok(guard);
                }
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let mut error = command_error(
            ErrorCode::Busy,
            format!("all {} GPU lanes are in use", self.lanes.len()),
        );
        error.retry_after_ms = Some(u64::try_from(self.retry_after.as_millis()).unwrap_or(0));
        Err(error)
    }

    /// Lane `index` if it is free right now (for a quick query such as `gpu.info`'s).
    pub fn acquire_index(&self, index: usize) -> Option<MutexGuard<'_, LaneState>> {
        self.lanes.get(index)?.try_lock().ok()
    }

    /// Which lanes are taken right now (for `gpu.info`).
    pub fn busy(&self) -> Vec<bool> {
        self.lanes
            .iter()
            .map(|l| matches!(l.try_lock(), Err(TryLockError::WouldBlock)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_takes_a_free_lane_and_the_next_one_is_busy() {
        let lanes = Lanes::new(2, Duration::from_millis(750));
        let first = lanes.acquire().unwrap();
        let second = lanes.acquire().unwrap();
        assert_eq!((first.index, second.index), (0, 1));
        assert_eq!(lanes.busy(), vec![true, true]);
        let busy = lanes.acquire().unwrap_err();
        assert_eq!(busy.code, ErrorCode::Busy);
        assert_eq!(busy.retry_after_ms, Some(750));
        assert!(busy.message.contains("all 2 GPU lanes"));
        drop(first);
        assert_eq!(lanes.acquire().unwrap().index, 0);
        assert_eq!(lanes.busy(), vec![false, true]);
    }

    #[test]
    fn no_lanes_is_always_busy() {
        let lanes = Lanes::new(0, Duration::from_secs(1));
        assert!(lanes.is_empty());
        assert_eq!(lanes.acquire().unwrap_err().code, ErrorCode::Busy);
    }
}
