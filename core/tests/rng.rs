//! The seeded RNG (core/src/rng.rs): determinism, formats, and the absence of bias.
use std::collections::BTreeSet;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use nodelink_core::rng::{uuid_text, Rng, PAIRING_CODE_DIGITS, PAIRING_CODE_LETTERS};
use proptest::prelude::*;

fn seeded(n: u8) -> Rng {
    Rng::from_seed([n; 32])
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn assert_uuid_v4(id: &str) {
    assert_eq!(id.len(), 36, "{id}");
    for (i, c) in id.char_indices() {
        if matches!(i, 8 | 13 | 18 | 23) {
            assert_eq!(c, '-', "{id}");
        } else {
            assert!(is_lower_hex(&c.to_string()), "{id}");
        }
    }
    assert_eq!(&id[14..15], "4", "version nibble of {id}");
    assert!(
        matches!(&id[19..20], "8" | "9" | "a" | "b"),
        "variant of {id}"
    );
}

fn assert_pairing_code(code: &str) {
    let b = code.as_bytes();
    assert_eq!(b.len(), 7, "{code}");
    assert!(
        b[..3].iter().all(|c| PAIRING_CODE_LETTERS.contains(c)),
        "{code}"
    );
    assert_eq!(b[3], b'-', "{code}");
    assert!(
        b[4..].iter().all(|c| PAIRING_CODE_DIGITS.contains(c)),
        "{code}"
    );
}

#[test]
fn the_stream_is_standard_chacha20_so_a_dependency_upgrade_cannot_silently_change_it() {
    // RFC 8439 section 2.3.2 / the all-zero-key ChaCha20 keystream starts 76 b8 e0 ad a0 f1 3d 90
    // 40 5d 6a e5 53 86 bd 28; uuid_v4 sets the version (0x3d -> 0x4d) and variant (0x40 -> 0x80).
    let mut rng = Rng::from_seed([0; 32]);
    assert_eq!(rng.uuid_v4(), "76b8e0ad-a0f1-4d90-805d-6ae55386bd28");
}

#[test]
fn the_same_seed_gives_the_same_sequence_of_every_kind_of_value() {
    let draw = |rng: &mut Rng| {
        (
            rng.uuid_v4(),
            rng.pairing_code(),
            rng.secret(32),
            rng.token_urlsafe(16),
            rng.jitter(Duration::from_secs(60)),
            rng.below(1000),
            rng.next_u64(),
        )
    };
    let (mut a, mut b) = (seeded(7), seeded(7));
    for _ in 0..50 {
        assert_eq!(draw(&mut a), draw(&mut b));
    }
    assert_ne!(draw(&mut seeded(7)), draw(&mut seeded(8)));
}

#[test]
fn fork_is_deterministic_and_independent_of_the_parent() {
    let (mut a, mut b) = (seeded(1), seeded(1));
    let (mut fa, mut fb) = (a.fork(), b.fork());
    assert_eq!(fa.secret(16), fb.secret(16));
    assert_eq!(a.secret(16), b.secret(16));
    let mut parent = seeded(1);
    let mut child = parent.fork();
    assert_ne!(parent.secret(16), child.secret(16));
}

#[test]
fn debug_never_reveals_the_state() {
    assert_eq!(format!("{:?}", seeded(3)), "Rng { .. }");
}

#[test]
fn uuids_are_version_4_lowercase_hyphenated_and_distinct() {
    let mut rng = seeded(2);
    let ids: BTreeSet<String> = (0..2000).map(|_| rng.uuid_v4()).collect();
    assert_eq!(ids.len(), 2000);
    ids.iter().for_each(|id| assert_uuid_v4(id));
}

#[test]
fn a_uuid_value_is_the_same_draw_as_its_text() {
    let (mut texts, mut values) = (seeded(5), seeded(5));
    for _ in 0..500 {
        let text = texts.uuid_v4();
        let value = values.uuid_v4_value();
        assert_eq!(uuid_text(value), text);
        assert_eq!(u128::from_str_radix(&text.replace('-', ""), 16), Ok(value));
    }
    assert_eq!(
        uuid_text(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210),
        "01234567-89ab-cdef-fedc-ba9876543210"
    );
}

#[test]
fn pairing_codes_use_letters_without_i_and_o_and_all_digits() {
    assert_eq!(PAIRING_CODE_LETTERS.len(), 24);
    assert!(!PAIRING_CODE_LETTERS.contains(&b'I') && !PAIRING_CODE_LETTERS.contains(&b'O'));
    let mut rng = seeded(4);
    let codes: Vec<String> = (0..3000).map(|_| rng.pairing_code()).collect();
    codes.iter().for_each(|c| assert_pairing_code(c));
    // Every letter and digit shows up: the alphabets are used in full.
    let seen: BTreeSet<u8> = codes.iter().flat_map(|c| c.bytes()).collect();
    for c in PAIRING_CODE_LETTERS.iter().chain(PAIRING_CODE_DIGITS) {
        assert!(seen.contains(c), "{} never drawn", char::from(*c));
    }
    assert!(codes.iter().collect::<BTreeSet<_>>().len() > 2990);
}

#[test]
fn secrets_are_lowercase_hex_of_the_requested_byte_count_and_distinct() {
    let mut rng = seeded(5);
    assert_eq!(rng.secret(0), "");
    for bytes in [1, 16, 32, 33] {
        let s = rng.secret(bytes);
        assert_eq!(s.len(), 2 * bytes);
        assert!(is_lower_hex(&s), "{s}");
    }
    let secrets: BTreeSet<String> = (0..1000).map(|_| rng.secret(32)).collect();
    assert_eq!(secrets.len(), 1000);
}

#[test]
fn urlsafe_tokens_are_unpadded_base64url_of_the_requested_byte_count() {
    let mut rng = seeded(6);
    assert_eq!(rng.token_urlsafe(0), "");
    for (bytes, chars) in [(1, 2), (2, 3), (3, 4), (16, 22), (32, 43)] {
        let t = rng.token_urlsafe(bytes);
        assert_eq!(t.len(), chars, "{t}");
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).map(|v| v.len()), Ok(bytes));
    }
}

#[test]
fn below_covers_edge_ranges() {
    let mut rng = seeded(9);
    assert_eq!(rng.below(0), 0);
    assert_eq!(rng.below(1), 0);
    assert!(rng.below(u64::MAX) < u64::MAX);
    assert_eq!(rng.up_to(0), 0);
    let _ = rng.up_to(u64::MAX); // the full range: no overflow
}

#[test]
fn below_is_unbiased_where_a_plain_modulo_would_double_a_third_of_the_range() {
    // n = 3 * 2^62: `x % n` would land in [0, 2^62) with probability 1/2; uniform is 1/3.
    let n = 3u64 << 62;
    let mut rng = seeded(10);
    let draws = 30_000;
    let low = (0..draws).filter(|_| rng.below(n) < 1u64 << 62).count();
    let share = low as f64 / f64::from(draws);
    assert!((share - 1.0 / 3.0).abs() < 0.02, "share {share}");
}

#[test]
fn below_a_small_n_is_roughly_uniform() {
    let mut rng = seeded(11);
    let mut counts = [0u32; 6];
    for _ in 0..60_000 {
        counts[rng.below(6) as usize] += 1;
    }
    // Chi-square with 5 degrees of freedom; 20.5 is the 0.1% critical value.
    let chi2: f64 = counts
        .iter()
        .map(|c| (f64::from(*c) - 10_000.0).powi(2) / 10_000.0)
        .sum();
    assert!(chi2 < 20.5, "{counts:?} chi2 {chi2}");
}

#[test]
fn jitter_stays_in_range_with_a_mean_of_half_the_maximum() {
    let mut rng = seeded(12);
    assert_eq!(rng.jitter(Duration::ZERO), Duration::ZERO);
    assert!(rng.jitter(Duration::from_nanos(1)) <= Duration::from_nanos(1));
    let _ = rng.jitter(Duration::MAX); // saturates, no panic
    let max = Duration::from_secs(10);
    let draws: Vec<Duration> = (0..20_000).map(|_| rng.jitter(max)).collect();
    assert!(draws.iter().all(|d| *d <= max));
    let mean = draws.iter().map(Duration::as_secs_f64).sum::<f64>() / draws.len() as f64;
    assert!((mean - 5.0).abs() < 0.1, "mean {mean}");
    // Nanosecond resolution: draws are not rounded to milliseconds.
    assert!(draws.iter().any(|d| d.subsec_nanos() % 1_000_000 != 0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn formats_hold_for_any_seed(seed in any::<[u8; 32]>(), bytes in 0usize..64) {
        let mut rng = Rng::from_seed(seed);
        assert_uuid_v4(&rng.uuid_v4());
        assert_pairing_code(&rng.pairing_code());
        let s = rng.secret(bytes);
        prop_assert_eq!(s.len(), 2 * bytes);
        prop_assert!(is_lower_hex(&s));
        let t = rng.token_urlsafe(bytes);
        prop_assert_eq!(URL_SAFE_NO_PAD.decode(&t).map(|v| v.len()).ok(), Some(bytes));
    }

    #[test]
    fn below_and_jitter_stay_in_range(seed in any::<[u8; 32]>(), n in 1u64.., nanos in any::<u64>()) {
        let mut rng = Rng::from_seed(seed);
        prop_assert!(rng.below(n) < n);
        prop_assert!(rng.up_to(n) <= n);
        let max = Duration::from_nanos(nanos);
        prop_assert!(rng.jitter(max) <= max);
    }
}
