//! Reconnect backoff (core/src/backoff.rs): bounds, growth, cap, reset, floor, determinism.
use std::time::Duration;

use nodelink_core::backoff::{Backoff, DEFAULT_BASE, DEFAULT_CAP};
use nodelink_core::rng::Rng;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn defaults_are_one_second_base_and_sixty_second_cap() {
    let b = Backoff::default();
    assert_eq!((b.base(), b.cap(), b.attempt()), (secs(1), secs(60), 0));
    assert_eq!((DEFAULT_BASE, DEFAULT_CAP), (secs(1), secs(60)));
}

#[test]
fn windows_double_from_the_base_until_the_cap() {
    let mut b = Backoff::default();
    let mut rng = Rng::from_seed([1; 32]);
    let mut windows = Vec::new();
    for _ in 0..9 {
        windows.push(b.window().as_secs());
        let _ = b.next_delay(&mut rng);
    }
    assert_eq!(windows, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(b.attempt(), 9);
}

#[test]
fn every_delay_lies_in_zero_to_the_window_of_its_attempt() {
    let mut b = Backoff::default();
    let mut rng = Rng::from_seed([2; 32]);
    for attempt in 0..200u32 {
        assert_eq!(b.attempt(), attempt);
        let window = b.window();
        assert_eq!(window, secs(1u64 << attempt.min(6)).min(secs(60)));
        assert!(b.next_delay(&mut rng) <= window);
    }
}

#[test]
fn attempt_1000_neither_overflows_nor_leaves_the_cap() {
    let mut b = Backoff::default();
    let mut rng = Rng::from_seed([3; 32]);
    for _ in 0..1000 {
        assert!(b.next_delay(&mut rng) <= secs(60));
    }
    assert_eq!((b.attempt(), b.window()), (1000, secs(60)));
    // A tiny base and a huge cap: the doubling must saturate, not wrap.
    let mut tiny = Backoff::new(Duration::from_nanos(1), Duration::MAX);
    for _ in 0..1000 {
        let _ = tiny.next_delay(&mut rng);
    }
    assert_eq!(tiny.window(), Duration::MAX);
}

#[test]
fn reset_starts_over_from_the_base() {
    let mut b = Backoff::default();
    let mut rng = Rng::from_seed([4; 32]);
    for _ in 0..10 {
        let _ = b.next_delay(&mut rng);
    }
    b.reset();
    assert_eq!((b.attempt(), b.window()), (0, secs(1)));
    assert!(b.next_delay(&mut rng) <= secs(1));
}

#[test]
fn the_same_seed_gives_the_same_delays() {
    let run = |seed| {
        let mut b = Backoff::default();
        let mut rng = Rng::from_seed(seed);
        (0..20).map(|_| b.next_delay(&mut rng)).collect::<Vec<_>>()
    };
    assert_eq!(run([5; 32]), run([5; 32]));
    assert_ne!(run([5; 32]), run([6; 32]));
}

#[test]
fn the_mean_delay_roughly_doubles_per_attempt_until_the_cap() {
    let mut rng = Rng::from_seed([7; 32]);
    let draws = 4000;
    let means: Vec<f64> = (0..8u32)
        .map(|attempt| {
            let total: f64 = (0..draws)
                .map(|_| {
                    let mut b = Backoff::default();
                    for _ in 0..attempt {
                        let _ = b.next_delay(&mut rng);
                    }
                    b.next_delay(&mut rng).as_secs_f64()
                })
                .sum();
            total / f64::from(draws)
        })
        .collect();
    // Expected: half of each window, 0.5 1 2 4 8 16 30 30.
    for (mean, window) in means
        .iter()
        .zip([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0])
    {
        assert!((mean / (window / 2.0) - 1.0).abs() < 0.06, "{means:?}");
    }
}

#[test]
fn a_floor_is_added_to_the_jittered_delay_and_still_advances_the_attempt() {
    let mut b = Backoff::default();
    let mut rng = Rng::from_seed([8; 32]);
    let floor = secs(30);
    let mut delays = Vec::new();
    for attempt in 0..10u32 {
        let window = b.window();
        let d = b.next_delay_at_least(&mut rng, floor);
        assert!(
            d >= floor && d <= floor + window,
            "attempt {attempt}: {d:?}"
        );
        delays.push(d);
    }
    assert_eq!(b.attempt(), 10);
    // Not clamped: the nodes that draw a short delay do not all land on exactly the floor.
    assert!(delays.iter().filter(|d| **d == floor).count() <= 1);
    assert_eq!(
        b.next_delay_at_least(&mut rng, Duration::MAX),
        Duration::MAX
    );
}

#[test]
fn a_zero_base_never_waits_and_a_base_above_the_cap_waits_up_to_the_cap() {
    let mut rng = Rng::from_seed([9; 32]);
    let mut zero = Backoff::new(Duration::ZERO, secs(60));
    for _ in 0..200 {
        assert_eq!(zero.next_delay(&mut rng), Duration::ZERO);
    }
    let mut big = Backoff::new(secs(120), secs(60));
    assert_eq!(big.window(), secs(60));
    assert!(big.next_delay(&mut rng) <= secs(60));
}
