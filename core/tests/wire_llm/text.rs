//! The node's UTF-8 cutter and text splitter.

use super::*;

pub(crate) fn cut_all(chunks: &[&[u8]]) -> (String, Utf8Cutter) {
    let mut cutter = Utf8Cutter::new();
    let mut out = String::new();
    for chunk in chunks {
        cutter.feed(chunk, &mut out);
    }
    cutter.finish(&mut out);
    (out, cutter)
}

const MULTIBYTE: &str = "aé€🎉日本語 Grüße 😀!";

#[test]
fn cutter_split_at_every_byte_offset_yields_the_text() {
    let bytes = MULTIBYTE.as_bytes();
    for at in 0..=bytes.len() {
        let mut cutter = Utf8Cutter::new();
        let mut first = String::new();
        cutter.feed(&bytes[..at], &mut first);
        // Only whole characters come out, and only what precedes the cut.
        assert!(MULTIBYTE.starts_with(&first), "cut at {at}");
        assert_eq!(first.len() + cutter.pending(), at, "cut at {at}");
        let mut second = String::new();
        cutter.feed(&bytes[at..], &mut second);
        assert_eq!(cutter.pending(), 0);
        cutter.finish(&mut second);
        assert_eq!(first + &second, MULTIBYTE, "cut at {at}");
        assert_eq!(cutter.replacements(), 0);
    }
}

#[test]
fn cutter_split_at_every_pair_of_offsets_yields_the_text() {
    let bytes = MULTIBYTE.as_bytes();
    for a in 0..=bytes.len() {
        for b in a..=bytes.len() {
            let (text, cutter) = cut_all(&[&bytes[..a], &bytes[a..b], &bytes[b..]]);
            assert_eq!(text, MULTIBYTE, "cuts at {a} and {b}");
            assert_eq!(cutter.replacements(), 0);
        }
    }
}

#[test]
fn cutter_fed_byte_by_byte_yields_the_text() {
    let chunks: Vec<&[u8]> = MULTIBYTE.as_bytes().chunks(1).collect();
    assert_eq!(cut_all(&chunks).0, MULTIBYTE);
}

#[test]
fn cutter_carries_at_most_three_bytes() {
    let mut cutter = Utf8Cutter::new();
    let mut out = String::new();
    cutter.feed(&"🎉".as_bytes()[..3], &mut out);
    assert_eq!((out.as_str(), cutter.pending()), ("", 3));
    cutter.feed(&"🎉".as_bytes()[3..], &mut out);
    assert_eq!((out.as_str(), cutter.pending()), ("🎉", 0));
}

#[test]
fn cutter_replaces_invalid_bytes_like_from_utf8_lossy() {
    let samples: &[&[u8]] = &[
        b"A\xffB",
        b"\xe2\x82A",                 // a 3-byte sequence cut short, then ASCII
        b"\xf0\x9fA\xf0\x9f\x8e\x89", // a cut emoji, then a whole one
        b"\xc0\xafx",                 // overlong encoding
        b"\xed\xa0\x80z",             // a UTF-16 surrogate
        b"\xf4\x90\x80\x80",          // above U+10FFFF
        b"\x80\x80\xe6\x97\xa5",      // stray continuation bytes
        b"ok\xe6\x97",                // ends inside a character
    ];
    for sample in samples {
        let expected = String::from_utf8_lossy(sample);
        for at in 0..=sample.len() {
            let (text, _) = cut_all(&[&sample[..at], &sample[at..]]);
            assert_eq!(text, expected, "{sample:x?} cut at {at}");
        }
        let chunks: Vec<&[u8]> = sample.chunks(1).collect();
        assert_eq!(cut_all(&chunks).0, expected, "{sample:x?} byte by byte");
    }
    assert_eq!(cut_all(&[b"A\xffB\xfe"]).1.replacements(), 2);
}

#[test]
fn cutter_finish_turns_an_incomplete_tail_into_one_replacement() {
    let mut cutter = Utf8Cutter::new();
    let mut out = String::new();
    cutter.feed(b"ok\xe6\x97", &mut out);
    assert_eq!(out, "ok");
    cutter.finish(&mut out);
    assert_eq!(out, "ok\u{fffd}");
    assert_eq!((cutter.pending(), cutter.replacements()), (0, 1));
    cutter.finish(&mut out);
    assert_eq!(out, "ok\u{fffd}", "finish without a carry adds nothing");
}

#[test]
fn split_text_cuts_on_character_boundaries() {
    let pieces: Vec<&str> = split_text("aé€🎉", 4).expect("valid").collect();
    assert_eq!(pieces, ["aé", "€", "🎉"]);
    assert_eq!(split_text("", 16).expect("valid").count(), 0);
    assert_eq!(
        split_text("short", 16).expect("valid").collect::<Vec<_>>(),
        ["short"]
    );
}

#[test]
fn split_text_refuses_pieces_smaller_than_a_character() {
    for max_bytes in 0..4 {
        assert_eq!(
            split_text("x", max_bytes).map(|p| p.count()),
            Err(SplitError { max_bytes })
        );
    }
}
