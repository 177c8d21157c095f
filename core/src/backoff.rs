//! The reconnect delay: capped exponential backoff with full jitter.
//!
//! # Theory of operation
//! After a failed or lost connection the node waits [`Backoff::next_delay`] before dialing again.
//! The delay is drawn uniformly from `[0, window]`, where `window = min(cap, base * 2^attempt)`,
//! and `attempt` then grows by one ("full jitter": of the usual jitter schemes it spreads a crowd
//! of nodes that lost the same gateway at the same instant the most evenly, so their reconnects do
//! not arrive as one wave). With the defaults (1 s base, 60 s cap) the windows are 1, 2, 4, 8, 16,
//! 32, 60, 60, ... seconds. `attempt` saturates, so the arithmetic cannot overflow however long a
//! node stays away.
//!
//! [`Backoff::reset`] starts over from `base`. The caller decides when: typically once a
//! connection has stayed up for a while (a connection that drops right after the handshake should
//! keep backing off, or a gateway that accepts and immediately closes would be hammered).
//!
//! ## The floor
//! Some failures must not be retried at full speed even on the first attempt: an authentication
//! failure, or a Close without `allowReconnect`, will fail the same way if retried at once.
//! [`Backoff::next_delay_at_least`] ADDS the floor to the jittered delay instead of clamping the
//! delay up to it: clamping would put every node whose draw fell below the floor on the same
//! instant, recreating the synchronized wave that jitter exists to break up. The result lies in
//! `[floor, floor + window]`. A floor is a parameter of the call rather than a field because it
//! belongs to the failure just seen, not to the connection: the next, ordinary failure must not
//! inherit it.
//!
//! The backoff draws from the machine's [`Rng`], so the same seed reproduces the same delays.

use std::time::Duration;

use crate::rng::Rng;
use crate::time::duration_from_nanos;

/// The default first window: 1 second.
pub const DEFAULT_BASE: Duration = Duration::from_secs(1);

/// The default largest window: 60 seconds.
pub const DEFAULT_CAP: Duration = Duration::from_secs(60);

/// Capped exponential backoff with full jitter; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    /// 1 s base, 60 s cap.
    fn default() -> Self {
        Self::new(DEFAULT_BASE, DEFAULT_CAP)
    }
}

impl Backoff {
    /// A backoff at attempt 0. A `base` above `cap` simply means every window is `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The window of the first attempt.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest window.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// How many delays were drawn since the last [`reset`](Self::reset) (saturating).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next draw: `min(cap, base * 2^attempt)`, without overflow.
    pub fn window(&self) -> Duration {
        let base = self.base.as_nanos();
        // base * 2^attempt; a shift past 127 bits or an overflowing product is "huge".
        let grown = 1u128
            .checked_shl(self.attempt)
            .and_then(|factor| base.checked_mul(factor))
            .unwrap_or(if base == 0 { 0 } else { u128::MAX });
        let nanos = grown.min(self.cap.as_nanos());
        duration_from_nanos(nanos)
    }

    /// The delay before the next reconnect: uniform in `[0, window()]`, then the attempt grows.
    pub fn next_delay(&mut self, rng: &mut Rng) -> Duration {
        let delay = rng.jitter(self.window());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// Like [`next_delay`](Self::next_delay) but never less than `floor`: the result is
    /// `floor + ` a draw in `[0, window()]` (saturating), for failures that must not be retried
    /// at full speed. Why the floor is added, not clamped to: see the module docs.
    pub fn next_delay_at_least(&mut self, rng: &mut Rng, floor: Duration) -> Duration {
        floor.saturating_add(self.next_delay(rng))
    }

    /// Starts over at attempt 0: the connection stayed up long enough to count as healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}
