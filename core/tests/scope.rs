//! Scope syntax, patterns and scope-set intersection (core/src/scope.rs).
use nodelink_core::scope::{validate_scope, ScopeEntry, ScopeError, ScopeSet, MAX_SCOPE_LEN};
use proptest::prelude::*;

fn set(entries: &[&str]) -> ScopeSet {
    match ScopeSet::parse(entries) {
        Ok(set) => set,
        Err(e) => panic!("test set {entries:?}: {e}"),
    }
}

#[test]
fn well_formed_scopes_are_accepted() {
    for s in [
        "screen.capture",
        "gpu.kernel",
        "system.execute",
        "a",
        "a-b_c.9.x-1",
    ] {
        assert_eq!(validate_scope(s), Ok(()), "{s}");
    }
    assert_eq!(validate_scope(&"a".repeat(MAX_SCOPE_LEN)), Ok(()));
}

#[test]
fn each_malformed_scope_gets_its_specific_error() {
    let invalid = |entry: &str, found, position| ScopeError::InvalidChar {
        entry: entry.to_owned(),
        found,
        position,
    };
    let empty_segment = |entry: &str, position| ScopeError::EmptySegment {
        entry: entry.to_owned(),
        position,
    };
    assert_eq!(validate_scope(""), Err(ScopeError::Empty));
    assert_eq!(
        validate_scope("Screen.capture"),
        Err(invalid("Screen.capture", 'S', 0))
    );
    assert_eq!(
        validate_scope("screen capture"),
        Err(invalid("screen capture", ' ', 6))
    );
    assert_eq!(
        validate_scope("gpu.kérnel"),
        Err(invalid("gpu.kérnel", 'é', 5))
    );
    assert_eq!(validate_scope(".a"), Err(empty_segment(".a", 0)));
    assert_eq!(validate_scope("a."), Err(empty_segment("a.", 2)));
    assert_eq!(validate_scope("a..b"), Err(empty_segment("a..b", 2)));
    assert_eq!(
        validate_scope("a.*"),
        Err(ScopeError::PatternNotAllowed {
            entry: "a.*".to_owned()
        })
    );
    let long = "a".repeat(MAX_SCOPE_LEN + 1);
    assert_eq!(
        validate_scope(&long),
        Err(ScopeError::TooLong {
            entry: "a".repeat(64),
            len: 129,
            max: 128
        })
    );
}

#[test]
fn error_messages_name_the_entry_and_the_bad_character() {
    let e = validate_scope("screen.Capture").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid scope \"screen.Capture\": character 'C' at byte 7 is not allowed \
         (allowed: a-z, 0-9, '_', '-', and '.' between segments)"
    );
}

#[test]
fn a_wildcard_is_only_the_whole_entry_or_the_last_segment() {
    for ok in ["*", "a.*", "a.b.*"] {
        assert_eq!(
            ScopeEntry::parse(ok).map(|e| e.is_pattern()),
            Ok(true),
            "{ok}"
        );
    }
    let misplaced = |entry: &str| ScopeError::MisplacedWildcard {
        entry: entry.to_owned(),
    };
    for bad in ["a*", "*.a", "a.*.b", "a.**", "**", "a.*.*"] {
        assert_eq!(ScopeEntry::parse(bad), Err(misplaced(bad)), "{bad}");
    }
    assert_eq!(
        ScopeEntry::parse(".*"),
        Err(ScopeError::EmptySegment {
            entry: ".*".to_owned(),
            position: 0
        })
    );
    assert_eq!(
        ScopeEntry::parse("a..*"),
        Err(ScopeError::EmptySegment {
            entry: "a..*".to_owned(),
            position: 2
        })
    );
    assert_eq!(
        ScopeEntry::parse("A.*"),
        Err(ScopeError::InvalidChar {
            entry: "A.*".to_owned(),
            found: 'A',
            position: 0
        })
    );
    // The limit counts the whole entry, `.*` included.
    assert!(ScopeEntry::parse(&format!("{}.*", "a".repeat(MAX_SCOPE_LEN - 2))).is_ok());
    let long = format!("{}.*", "a".repeat(MAX_SCOPE_LEN - 1));
    assert!(matches!(
        ScopeEntry::parse(&long),
        Err(ScopeError::TooLong { len: 129, .. })
    ));
}

#[test]
fn a_prefix_pattern_covers_the_scopes_under_it_but_not_the_prefix_itself() {
    let screen = set(&["screen.*"]);
    assert!(screen.allows("screen.capture"));
    assert!(screen.allows("screen.a.b"));
    assert!(!screen.allows("screen"));
    assert!(!screen.allows("screens.capture"));
    assert!(!screen.allows("gpu.kernel"));
    let both = set(&["screen", "screen.*"]);
    assert!(both.allows("screen") && both.allows("screen.capture"));
}

#[test]
fn star_allows_every_valid_scope_and_nothing_allows_an_invalid_one() {
    let all = ScopeSet::all();
    assert_eq!(all, set(&["*"]));
    for s in ["a", "screen.capture", "x.y.z"] {
        assert!(all.allows(s));
    }
    for s in ["", "A", "a.", "a.*", "*"] {
        assert!(!all.allows(s), "{s:?}");
    }
    assert!(!ScopeSet::new().allows("a"));
    let star = ScopeEntry::parse("*").unwrap();
    assert!(star.allows("a.b") && !star.allows("A") && !star.allows("a.*"));
    assert!(ScopeSet::new().is_empty());
}

#[test]
fn sets_are_minimal_and_sorted_whatever_the_input_order() {
    assert_eq!(set(&["a.c.*", "a.b", "a.*", "b"]).to_vec(), ["a.*", "b"]);
    assert_eq!(
        set(&["b", "a.*", "a.b", "a.c.*"]),
        set(&["a.c.*", "a.b", "a.*", "b"])
    );
    assert_eq!(set(&["x", "*", "y.*"]).to_vec(), ["*"]);
    assert_eq!(set(&["a", "a", "a.*"]).to_vec(), ["a", "a.*"]);
    assert_eq!(
        set(&["gpu.kernel", "ab.*", "a.*"])
            .iter()
            .collect::<Vec<_>>(),
        ["a.*", "ab.*", "gpu.kernel"]
    );
    assert_eq!(set(&["a.*", "a.b.*"]).len(), 1);
}

#[test]
fn strict_parsing_rejects_the_list_and_lenient_parsing_skips_and_reports() {
    let input = ["screen.*", "GPU", "system.execute", "a.*.b"];
    assert_eq!(
        ScopeSet::parse(input),
        Err(ScopeError::InvalidChar {
            entry: "GPU".to_owned(),
            found: 'G',
            position: 0
        })
    );
    let (parsed, errors) = ScopeSet::parse_lenient(input);
    assert_eq!(parsed.to_vec(), ["screen.*", "system.execute"]);
    assert_eq!(
        errors,
        [
            ScopeError::InvalidChar {
                entry: "GPU".to_owned(),
                found: 'G',
                position: 0
            },
            ScopeError::MisplacedWildcard {
                entry: "a.*.b".to_owned()
            },
        ]
    );
}

#[test]
fn intersection_keeps_what_both_sides_allow_with_patterns_on_either_side() {
    let granted = set(&["screen.*", "gpu.kernel", "system.execute"]);
    let local = set(&["screen.capture", "gpu.*", "files.*"]);
    assert_eq!(
        granted.intersect(&local).to_vec(),
        ["gpu.kernel", "screen.capture"]
    );
    assert_eq!(
        set(&["a.*"]).intersect(&set(&["a.b.*"])).to_vec(),
        ["a.b.*"]
    );
    assert!(set(&["a"]).intersect(&set(&["a.*"])).is_empty());
    assert!(set(&["a.*"]).intersect(&set(&["ab.*"])).is_empty());
    assert_eq!(ScopeSet::all().intersect(&local), local);
    assert!(ScopeSet::new().intersect(&ScopeSet::all()).is_empty());
}

fn entry_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_owned()),
        8 => (proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..4), any::<bool>())
            .prop_map(|(segs, pattern)| {
                let s = segs.join(".");
                if pattern { format!("{s}.*") } else { s }
            }),
    ]
}

fn scope_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(prop_oneof!["a", "b", "c"], 1..5).prop_map(|segs| segs.join("."))
}

fn entries() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(entry_text(), 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn intersect_allows_exactly_what_both_allow(a in entries(), b in entries(), scopes in proptest::collection::vec(scope_text(), 1..20)) {
        let (a, b) = (set_of(&a), set_of(&b));
        let both = a.intersect(&b);
        for s in &scopes {
            prop_assert_eq!(both.allows(s), a.allows(s) && b.allows(s), "{} in {:?} ∩ {:?} = {:?}", s, a, b, both);
        }
        prop_assert_eq!(&both, &b.intersect(&a));
        prop_assert_eq!(&a.intersect(&a), &a);
    }

    #[test]
    fn a_set_is_minimal_order_independent_and_allows_what_its_entries_cover(
        list in entries(), scopes in proptest::collection::vec(scope_text(), 1..20),
    ) {
        let parsed = set_of(&list);
        let entries: Vec<ScopeEntry> = parsed.iter().map(|e| ScopeEntry::parse(e).unwrap()).collect();
        for (i, x) in entries.iter().enumerate() {
            for (j, y) in entries.iter().enumerate() {
                prop_assert!(i == j || !x.covers(y), "{:?} covers {:?}", x, y);
            }
        }
        let mut reversed = list.clone();
        reversed.reverse();
        prop_assert_eq!(&set_of(&reversed), &parsed);
        let raw: Vec<ScopeEntry> = list.iter().map(|e| ScopeEntry::parse(e).unwrap()).collect();
        for s in &scopes {
            prop_assert_eq!(parsed.allows(s), raw.iter().any(|e| e.allows(s)));
        }
    }

    #[test]
    fn parsing_arbitrary_text_never_panics(text in ".{0,140}") {
        let _ = ScopeEntry::parse(&text);
        let _ = validate_scope(&text);
        let _ = ScopeSet::all().allows(&text);
    }
}

fn set_of(list: &[String]) -> ScopeSet {
    set(&list.iter().map(String::as_str).collect::<Vec<_>>())
}
