//! Timer table, deadline queue and the periodic-deadline rule (core/src/time.rs), with exact
//! instants from a virtual clock.
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use nodelink_core::time::{
    duration_from_nanos, next_periodic, saturating_add, DeadlineQueue, TimerKind, TimerTable,
};
use proptest::prelude::*;
use support::SimClock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Heartbeat,
    Idle,
    Reconnect,
}

impl TimerKind for Timer {
    const ALL: &'static [Self] = &[Timer::Heartbeat, Timer::Idle, Timer::Reconnect];
    fn index(self) -> usize {
        match self {
            Timer::Heartbeat => 0,
            Timer::Idle => 1,
            Timer::Reconnect => 2,
        }
    }
}

#[test]
fn every_timer_indexes_its_own_slot() {
    for (i, t) in Timer::ALL.iter().enumerate() {
        assert_eq!(t.index(), i);
    }
}

#[test]
fn set_get_stop_and_rearm() {
    let clock = SimClock::new();
    let mut timers = TimerTable::<Timer>::new();
    assert!(!timers.is_armed(Timer::Idle));
    assert_eq!(timers.next_expiry(), None);
    timers.set(Timer::Idle, clock.at(90.0));
    assert_eq!(timers.get(Timer::Idle), Some(clock.at(90.0)));
    assert!(timers.is_armed(Timer::Idle));
    timers.set(Timer::Idle, clock.at(120.0)); // re-arming moves it, later or earlier
    assert_eq!(timers.get(Timer::Idle), Some(clock.at(120.0)));
    timers.stop(Timer::Idle);
    timers.stop(Timer::Idle); // stopping twice is harmless
    assert!(!timers.is_armed(Timer::Idle));
    assert_eq!(timers.next_expiry(), None);
}

#[test]
fn next_expiry_is_the_earliest_armed_deadline() {
    let clock = SimClock::new();
    let mut timers = TimerTable::<Timer>::new();
    timers.set(Timer::Heartbeat, clock.at(30.0));
    timers.set(Timer::Idle, clock.at(90.0));
    timers.set(Timer::Reconnect, clock.at(5.0));
    assert_eq!(timers.next_expiry(), Some(clock.at(5.0)));
    timers.stop(Timer::Reconnect);
    assert_eq!(timers.next_expiry(), Some(clock.at(30.0)));
    timers.stop_all();
    assert_eq!(timers.next_expiry(), None);
}

#[test]
fn a_deadline_at_exactly_now_has_expired_and_one_nanosecond_later_has_not() {
    let clock = SimClock::new();
    let mut timers = TimerTable::<Timer>::new();
    timers.set(Timer::Heartbeat, clock.at(30.0));
    timers.set(Timer::Idle, clock.at(30.0) + Duration::from_nanos(1));
    assert!(timers.is_expired(Timer::Heartbeat, clock.at(30.0)));
    assert!(!timers.is_expired(Timer::Idle, clock.at(30.0)));
    assert_eq!(
        timers.expire_before_or_at(clock.at(30.0)),
        [Timer::Heartbeat]
    );
    assert_eq!(
        timers.next_expiry(),
        Some(clock.at(30.0) + Duration::from_nanos(1))
    );
}

#[test]
fn expired_timers_come_out_by_deadline_then_index_and_are_disarmed() {
    let clock = SimClock::new();
    let mut timers = TimerTable::<Timer>::new();
    timers.set(Timer::Reconnect, clock.at(10.0));
    timers.set(Timer::Idle, clock.at(20.0));
    timers.set(Timer::Heartbeat, clock.at(20.0));
    assert_eq!(
        timers.pop_expired(clock.at(25.0)),
        Some((Timer::Reconnect, clock.at(10.0)))
    );
    assert_eq!(
        timers.expire_before_or_at(clock.at(25.0)),
        [Timer::Heartbeat, Timer::Idle]
    );
    assert_eq!(timers.pop_expired(clock.at(25.0)), None);
    assert_eq!(timers.next_expiry(), None);
}

#[test]
fn debug_lists_the_armed_timers() {
    let clock = SimClock::new();
    let mut timers = TimerTable::<Timer>::new();
    assert_eq!(format!("{timers:?}"), "{}");
    timers.set(Timer::Idle, clock.at(1.0));
    assert!(format!("{timers:?}").starts_with("{Idle: "));
}

#[test]
fn deadline_queue_replaces_a_key_and_pops_in_deadline_then_key_order() {
    let clock = SimClock::new();
    let mut q = DeadlineQueue::new();
    assert_eq!((q.len(), q.is_empty(), q.next_deadline()), (0, true, None));
    assert_eq!(q.insert("cmd-b", clock.at(60.0)), None);
    assert_eq!(q.insert("cmd-a", clock.at(60.0)), None);
    assert_eq!(q.insert("cmd-c", clock.at(10.0)), None);
    // Moving cmd-c later replaces its first deadline instead of adding a second one.
    assert_eq!(q.insert("cmd-c", clock.at(90.0)), Some(clock.at(10.0)));
    assert_eq!(q.len(), 3);
    assert_eq!(q.next_deadline(), Some(clock.at(60.0)));
    assert_eq!(q.peek(), Some((clock.at(60.0), &"cmd-a")));
    assert_eq!(q.get(&"cmd-c"), Some(clock.at(90.0)));
    assert_eq!(q.pop_expired(clock.at(59.9)), None);
    assert_eq!(q.pop_expired(clock.at(60.0)), Some("cmd-a"));
    assert_eq!(q.pop_expired(clock.at(60.0)), Some("cmd-b"));
    assert_eq!(q.pop_expired(clock.at(60.0)), None);
    assert!(q.contains(&"cmd-c"));
    assert_eq!(q.remove(&"cmd-c"), Some(clock.at(90.0)));
    assert_eq!(q.remove(&"cmd-c"), None);
    assert!(q.is_empty());
}

#[test]
fn deadline_queue_iterates_earliest_first_and_clears() {
    let clock = SimClock::new();
    let mut q = DeadlineQueue::new();
    for (key, at) in [(3u32, 30.0), (1, 10.0), (2, 20.0)] {
        q.insert(key, clock.at(at));
    }
    let keys: Vec<u32> = q.iter().map(|(_, k)| *k).collect();
    assert_eq!(keys, [1, 2, 3]);
    q.clear();
    assert_eq!((q.len(), q.next_deadline()), (0, None));
}

#[test]
fn a_heartbeat_advances_from_the_previous_deadline_not_from_a_late_wake_up() {
    let clock = SimClock::new();
    let period = Duration::from_secs(30);
    // Woken on time, early, or 1 s late: the schedule stays on multiples of 30 s.
    assert_eq!(
        next_periodic(clock.at(30.0), period, clock.at(30.0)),
        clock.at(60.0)
    );
    assert_eq!(
        next_periodic(clock.at(30.0), period, clock.at(12.0)),
        clock.at(60.0)
    );
    assert_eq!(
        next_periodic(clock.at(30.0), period, clock.at(31.0)),
        clock.at(60.0)
    );
}

#[test]
fn missed_heartbeat_periods_are_skipped_without_a_catch_up_burst() {
    let clock = SimClock::new();
    let period = Duration::from_secs(30);
    // Asleep from 30 s to 200 s: the next beat is 210 s, not 60, 90, ... in a row.
    assert_eq!(
        next_periodic(clock.at(30.0), period, clock.at(200.0)),
        clock.at(210.0)
    );
    // Exactly on a missed beat: the result must still be later than now.
    assert_eq!(
        next_periodic(clock.at(30.0), period, clock.at(90.0)),
        clock.at(120.0)
    );
}

#[test]
fn a_zero_period_still_moves_past_now() {
    let clock = SimClock::new();
    let next = next_periodic(clock.at(1.0), Duration::ZERO, clock.at(5.0));
    assert!(next > clock.at(5.0));
}

#[test]
fn saturating_add_never_panics_on_a_peer_supplied_duration() {
    let clock = SimClock::new();
    let at = clock.at(1.0);
    assert_eq!(saturating_add(at, Duration::from_secs(2)), clock.at(3.0));
    assert!(saturating_add(at, Duration::MAX) > at);
    let far = next_periodic(at, Duration::MAX, at);
    assert!(far > at);
    assert_eq!(
        duration_from_nanos(1_500_000_000),
        Duration::from_millis(1500)
    );
    assert_eq!(duration_from_nanos(u128::MAX), Duration::MAX);
}

#[derive(Clone, Debug)]
enum Op {
    Set(usize, u32),
    Stop(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 0..1000u32).prop_map(|(t, ms)| Op::Set(t, ms)),
        (0..3usize).prop_map(Op::Stop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn after_expiring_at_t_the_next_expiry_is_later_or_none(
        ops in proptest::collection::vec(op(), 0..20),
        t in 0..1000u32,
    ) {
        let clock = SimClock::new();
        let ms = |ms: u32| clock.at(f64::from(ms) / 1000.0);
        let mut timers = TimerTable::<Timer>::new();
        for op in ops {
            match op {
                Op::Set(i, at) => timers.set(Timer::ALL[i], ms(at)),
                Op::Stop(i) => timers.stop(Timer::ALL[i]),
            }
        }
        let before: Vec<_> = Timer::ALL.iter().map(|t| timers.get(*t)).collect();
        let expired = timers.expire_before_or_at(ms(t));
        prop_assert!(timers.next_expiry().is_none_or(|next| next > ms(t)));
        // Exactly the expired ones came out, sorted by (deadline, index).
        let mut expected: Vec<_> = before
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.filter(|at| *at <= ms(t)).map(|at| (at, i)))
            .collect();
        expected.sort();
        let got: Vec<_> = expired.iter().map(|t| (before[t.index()].unwrap_or(ms(0)), t.index())).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn deadline_queue_matches_a_map_model(
        ops in proptest::collection::vec((0..8u8, proptest::option::of(0..100u32)), 0..40),
        t in 0..100u32,
    ) {
        let clock = SimClock::new();
        let mut q = DeadlineQueue::new();
        let mut model = BTreeMap::new();
        for (key, at) in ops {
            match at {
                Some(s) => {
                    prop_assert_eq!(q.insert(key, clock.at(f64::from(s))), model.insert(key, clock.at(f64::from(s))));
                }
                None => prop_assert_eq!(q.remove(&key), model.remove(&key)),
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.next_deadline(), model.values().min().copied());
        }
        let now = clock.at(f64::from(t));
        let mut popped = Vec::new();
        while let Some(key) = q.pop_expired(now) {
            popped.push((model[&key], key));
        }
        let mut expected: Vec<_> = model.iter().filter(|(_, at)| **at <= now).map(|(k, at)| (*at, *k)).collect();
        expected.sort();
        prop_assert_eq!(popped, expected);
        prop_assert!(q.next_deadline().is_none_or(|next| next > now));
    }

    #[test]
    fn next_periodic_is_the_first_multiple_of_the_period_after_now(
        prev_ms in 0..100_000u64, period_ms in 1..60_000u64, now_ms in 0..1_000_000u64,
    ) {
        let clock = SimClock::new();
        let ms = |ms: u64| clock.origin + Duration::from_millis(ms);
        let period = Duration::from_millis(period_ms);
        let next = next_periodic(ms(prev_ms), period, ms(now_ms));
        prop_assert!(next > ms(now_ms));
        let advance = next - ms(prev_ms);
        prop_assert!(advance >= period);
        prop_assert_eq!(advance.as_millis() % u128::from(period_ms), 0);
        // The smallest such multiple: one period earlier is not after both prev and now.
        prop_assert!(next - period <= ms(now_ms).max(ms(prev_ms)));
    }
}
