//! The node book (core/src/gateway/auth): token checks, revocation, failure limits per source
//! and per nodeId, persistence, at exact instants of a virtual clock.
mod support;

#[path = "gateway_auth/props.rs"]
mod props;

use std::time::Duration;

use nodelink_core::gateway::auth::{
    hash_secret, AuthConfig, AuthError, AuthPersist, BookError, NodeBook, NodeRecord, NodeState,
    RateLimit, UnixClock,
};
use nodelink_core::gateway::Source;
use nodelink_core::scope::ScopeError;
use nodelink_core::wire::rest::{RestErrorCode, TokenError};
use support::SimClock;

/// 2026-01-01T00:00:00Z, the Unix time at `clock.at(0.0)`.
const UNIX_AT_ZERO_MS: u64 = 1_767_225_600_000;
const SECRET: &str = "kP3vQ9xZ-w2Lr8Yb_5sT1uN7mHc4JdE6aF0gRiVoXyU";

fn book(clock: &SimClock, config: AuthConfig) -> NodeBook {
    NodeBook::new(
        config,
        UnixClock::new(clock.at(0.0), Duration::from_millis(UNIX_AT_ZERO_MS)),
    )
}

fn record(node_id: &str, secret: &str) -> NodeRecord {
    NodeRecord {
        node_id: node_id.to_owned(),
        secret_sha256: hash_secret(secret),
        state: NodeState::Approved,
        scopes: vec!["screen.capture".to_owned()],
        name: Some("rack 3".to_owned()),
        platform: Some("linux".to_owned()),
        paired_at_unix_ms: UNIX_AT_ZERO_MS,
    }
}

/// A book with node `n1` (secret [`SECRET`]) and `n2` (secret `other`), persist queue drained.
fn with_nodes(clock: &SimClock, config: AuthConfig) -> NodeBook {
    let mut b = book(clock, config);
    b.insert(record("n1", SECRET)).unwrap();
    b.insert(record("n2", "other")).unwrap();
    while b.poll_persist().is_some() {}
    b
}

fn src(s: &str) -> Source {
    Source(s.to_owned())
}

fn good() -> String {
    format!("n1.{SECRET}")
}

fn limited(secs: f64) -> AuthError {
    AuthError::RateLimited {
        retry_after: Duration::from_secs_f64(secs),
    }
}

fn persisted(b: &mut NodeBook) -> Vec<AuthPersist> {
    std::iter::from_fn(|| b.poll_persist()).collect()
}

#[test]
fn a_good_token_authenticates_in_constant_time() {
    let clock = SimClock::new();
    let mut b = with_nodes(&clock, AuthConfig::default());
    let at = clock.at(1.0);
    let a = src("192.0.2.1");
    // Right: the nodeId comes back.
    assert_eq!(b.authenticate(at, &good(), &a), Ok("n1".to_owned()));
    // Wrong: the hashes differ in their first byte or anywhere else, the answer is the same (the
    // comparison is subtle's ConstantTimeEq over the whole SHA-256).
    let wrong_first = format!("n1.X{}", &SECRET[1..]);
    let wrong_last = format!("n1.{}X", &SECRET[..SECRET.len() - 1]);
    for token in [wrong_first.as_str(), wrong_last.as_str(), "n1.other"] {
        assert_eq!(
            b.authenticate(at, token, &a),
            Err(AuthError::BadSecret {
                node_id: "n1".to_owned()
            })
        );
    }
    // (`n1.other` is n2's secret: another node's secret is a wrong secret too.)
    assert_eq!(b.authenticate(at, "n2.other", &a), Ok("n2".to_owned()));
    // Unknown.
    assert_eq!(
        b.authenticate(at, &format!("ghost.{SECRET}"), &a),
        Err(AuthError::UnknownNode {
            node_id: "ghost".to_owned()
        })
    );
    // Malformed, each with the token rule it breaks.
    let b2 = &mut with_nodes(&clock, AuthConfig::default());
    for (token, error) in [
        ("", TokenError::Empty),
        ("n1", TokenError::MissingDot),
        (".abc", TokenError::EmptyNodeId),
        ("n1.", TokenError::EmptySecret),
        (
            "n 1.abc",
            TokenError::InvalidNodeIdChar { at: 1, found: ' ' },
        ),
        ("n1.a b", TokenError::InvalidSecretChar { at: 1 }),
    ] {
        assert_eq!(
            b2.authenticate(at, token, &src("198.51.100.7")),
            Err(AuthError::Malformed(error)),
            "{token:?}"
        );
    }
    // The secret may contain dots: the first `.` ends the nodeId.
    b.insert(record("n3", "a.b.c")).unwrap();
    assert_eq!(b.authenticate(at, "n3.a.b.c", &a), Ok("n3".to_owned()));
}

#[test]
fn bearer_headers_are_accepted_with_any_case_of_the_scheme() {
    let clock = SimClock::new();
    let mut b = with_nodes(&clock, AuthConfig::default());
    let at = clock.at(0.0);
    let a = src("192.0.2.1");
    assert_eq!(
        b.authenticate_bearer(at, &format!("Bearer {}", good()), &a),
        Ok("n1".to_owned())
    );
    assert_eq!(
        b.authenticate_bearer(at, &format!("bearer {}", good()), &a),
        Ok("n1".to_owned())
    );
    assert_eq!(
        b.authenticate_bearer(at, &format!("Basic {}", good()), &a),
        Err(AuthError::Malformed(TokenError::NotBearer))
    );
}

#[test]
fn revoked_token_is_refused_with_its_reason() {
    let clock = SimClock::new();
    let mut b = with_nodes(&clock, AuthConfig::default());
    let a = src("192.0.2.1");
    let revoked = b
        .revoke(clock.at(10.0), "n1", "admin_revoked")
        .unwrap()
        .clone();
    assert_eq!(
        revoked.state,
        NodeState::Revoked {
            reason: "admin_revoked".to_owned(),
            at_unix_ms: Some(UNIX_AT_ZERO_MS + 10_000)
        }
    );
    assert_eq!(persisted(&mut b), vec![AuthPersist::Node(revoked.clone())]);
    assert!(!b.is_approved("n1"));
    let refused = b.authenticate(clock.at(10.0), &good(), &a).unwrap_err();
    assert_eq!(
        refused,
        AuthError::Revoked {
            node_id: "n1".to_owned(),
            reason: "admin_revoked".to_owned()
        }
    );
    assert_eq!(refused.http_status(), 403);
    assert_eq!(refused.code(), RestErrorCode::Revoked);
    assert_eq!(refused.to_string(), "access revoked: admin_revoked");
    // Only the token's holder learns the reason: a wrong secret is a wrong secret.
    assert_eq!(
        b.authenticate(clock.at(10.0), "n1.guess", &a),
        Err(AuthError::BadSecret {
            node_id: "n1".to_owned()
        })
    );
    // A revoked node presenting its own token does not count as a failure.
    for _ in 0..20 {
        assert!(matches!(
            b.authenticate(clock.at(11.0), &good(), &src("203.0.113.9")),
            Err(AuthError::Revoked { .. })
        ));
    }
    assert_eq!(
        b.tracked_keys(),
        (1, 1),
        "only the guess from 192.0.2.1 counted"
    );
    // An empty reason.
    b.revoke(clock.at(12.0), "n2", "").unwrap();
    let refused = b.authenticate(clock.at(12.0), "n2.other", &a).unwrap_err();
    assert_eq!(refused.to_string(), "access revoked");
    // Misuse: twice, or a node nobody knows.
    assert_eq!(
        b.revoke(clock.at(13.0), "n1", "again").unwrap_err(),
        BookError::Revoked {
            node_id: "n1".to_owned()
        }
    );
    assert_eq!(
        b.revoke(clock.at(13.0), "ghost", "x").unwrap_err(),
        BookError::UnknownNode {
            node_id: "ghost".to_owned()
        }
    );
    assert!(persisted(&mut b).len() == 1, "only n2's revocation");
}

#[test]
fn failures_are_rate_limited_per_node_and_per_source() {
    let clock = SimClock::new();
    let mut b = with_nodes(&clock, AuthConfig::default());
    let (a, bb, c) = (src("192.0.2.1"), src("198.51.100.7"), src("203.0.113.9"));
    let t0 = clock.at(0.0);
    // Ten wrong secrets for n1 from A at 0 s: the burst of both buckets is spent.
    for _ in 0..10 {
        assert!(matches!(
            b.authenticate(t0, "n1.guess", &a),
            Err(AuthError::BadSecret { .. })
        ));
    }
    // From A, everything is refused now, the right token included; the bucket refills one
    // failure every 6 s (10 per minute).
    assert_eq!(b.authenticate(t0, &good(), &a), Err(limited(6.0)));
    assert_eq!(b.authenticate(t0, "n2.other", &a), Err(limited(6.0)));
    assert_eq!(b.authenticate(t0, "garbage", &a), Err(limited(6.0)));
    // From B, n1's wrong secrets are refused as rate limited, but n1's own token still works.
    assert_eq!(b.authenticate(t0, "n1.guess", &bb), Err(limited(6.0)));
    assert_eq!(b.authenticate(t0, &good(), &bb), Ok("n1".to_owned()));
    // Other nodes and unknown nodes are not concerned by n1's bucket.
    assert!(matches!(
        b.authenticate(t0, "n2.guess", &bb),
        Err(AuthError::BadSecret { .. })
    ));
    assert!(matches!(
        b.authenticate(t0, "ghost.x", &bb),
        Err(AuthError::UnknownNode { .. })
    ));
    // The refusal's body and its retry hint, exactly.
    let body = b
        .authenticate(clock.at(2.5), &good(), &a)
        .unwrap_err()
        .to_body();
    assert_eq!(body.error, RestErrorCode::RateLimited);
    assert_eq!(body.retry_after_ms, Some(3_500));
    // A is free again at exactly 6 s.
    assert_eq!(
        b.authenticate(clock.at(5.999), &good(), &a),
        Err(limited(0.001))
    );
    assert_eq!(
        b.authenticate(clock.at(6.0), &good(), &a),
        Ok("n1".to_owned())
    );
    // And n1's bucket too: a wrong secret from C is a plain wrong secret again.
    assert!(matches!(
        b.authenticate(clock.at(6.0), "n1.guess", &c),
        Err(AuthError::BadSecret { .. })
    ));
    // One failure refilled, one spent: n1 is limited again until 12 s.
    assert_eq!(
        b.authenticate(clock.at(6.0), "n1.guess", &c),
        Err(limited(6.0))
    );
}

#[test]
fn failures_spread_over_time_refill_as_they_go() {
    let clock = SimClock::new();
    let mut b = with_nodes(&clock, AuthConfig::default());
    let a = src("192.0.2.1");
    // One failure every 6 s is exactly the refill rate: never limited.
    for k in 0..30 {
        let at = clock.at(6.0 * k as f64);
        assert!(
            matches!(
                b.authenticate(at, "ghost.x", &a),
                Err(AuthError::UnknownNode { .. })
            ),
            "attempt {k}"
        );
    }
    // Ten at 180 s on top of the one at 174 s: the eleventh within the burst window is refused.
    let at = clock.at(180.0);
    let results: Vec<_> = (0..11).map(|_| b.authenticate(at, "ghost.x", &a)).collect();
    assert!(results[..10]
        .iter()
        .all(|r| matches!(r, Err(AuthError::UnknownNode { .. }))));
    assert_eq!(results[10], Err(limited(6.0)));
}

#[test]
fn the_limiter_forgets_idle_keys() {
    let clock = SimClock::new();
    let mut b = with_nodes(&clock, AuthConfig::default());
    assert_eq!(b.poll_timeout(), None);
    for _ in 0..10 {
        let _ = b.authenticate(clock.at(0.0), "n1.guess", &src("192.0.2.1"));
    }
    let _ = b.authenticate(clock.at(30.0), "ghost.x", &src("198.51.100.7"));
    assert_eq!(b.tracked_keys(), (2, 1));
    // 198.51.100.7's bucket is full again at 36 s; 192.0.2.1's and n1's at 60 s.
    assert_eq!(b.poll_timeout(), Some(clock.at(36.0)));
    b.handle_timeout(clock.at(35.999));
    assert_eq!(b.tracked_keys(), (2, 1), "an early wake-up is a no-op");
    b.handle_timeout(clock.at(36.0));
    assert_eq!(b.tracked_keys(), (1, 1));
    assert_eq!(b.poll_timeout(), Some(clock.at(60.0)));
    b.handle_timeout(clock.at(60.0));
    assert_eq!(b.tracked_keys(), (0, 0));
    assert_eq!(
        b.poll_timeout(),
        None,
        "design rule 8: nothing left to wake for"
    );
}

#[test]
fn the_limiter_holds_at_most_its_cap_and_keeps_the_most_limited_keys() {
    let clock = SimClock::new();
    let config = AuthConfig {
        max_tracked_sources: 3,
        ..AuthConfig::default()
    };
    let mut b = with_nodes(&clock, config);
    let attacker = src("192.0.2.1");
    for _ in 0..10 {
        let _ = b.authenticate(clock.at(0.0), "ghost.x", &attacker);
    }
    // Many other sources fail once each: the table stays at 3 and evicts the fullest buckets.
    for k in 0..50 {
        let source = src(&format!("198.51.100.{k}"));
        let _ = b.authenticate(clock.at(1.0 + f64::from(k) * 0.01), "ghost.x", &source);
        assert!(b.tracked_keys().0 <= 3);
    }
    assert_eq!(
        b.authenticate(clock.at(2.0), &good(), &attacker),
        Err(limited(4.0)),
        "the attacker's spent bucket outlives one-off failures"
    );
}

#[test]
fn a_zero_window_disables_a_limit() {
    let clock = SimClock::new();
    let config = AuthConfig {
        failures_per_source: RateLimit::new(10, Duration::ZERO),
        ..AuthConfig::default()
    };
    let mut b = with_nodes(&clock, config);
    for _ in 0..100 {
        let _ = b.authenticate(clock.at(0.0), "ghost.x", &src("192.0.2.1"));
    }
    assert_eq!(b.tracked_keys(), (0, 0));
    assert_eq!(
        b.authenticate(clock.at(0.0), &good(), &src("192.0.2.1")),
        Ok("n1".to_owned())
    );
}

#[test]
fn insert_and_set_scopes_validate_and_persist() {
    let clock = SimClock::new();
    let mut b = book(&clock, AuthConfig::default());
    assert!(matches!(
        b.insert(record("bad id", "x")),
        Err(BookError::InvalidNodeId(
            TokenError::InvalidNodeIdChar { .. }
        ))
    ));
    let mut bad_scopes = record("n1", "x");
    bad_scopes.scopes = vec!["Screen".to_owned()];
    assert!(matches!(
        b.insert(bad_scopes),
        Err(BookError::InvalidScopes(ScopeError::InvalidChar { .. }))
    ));
    assert!(
        persisted(&mut b).is_empty(),
        "refused inserts change nothing"
    );
    b.insert(record("n1", "x")).unwrap();
    assert_eq!(persisted(&mut b).len(), 1);
    let scopes = b
        .set_scopes(
            "n1",
            &[
                "screen.capture".into(),
                "screen.*".into(),
                "app.manage".into(),
            ],
        )
        .unwrap();
    assert_eq!(scopes, vec!["app.manage", "screen.*"], "minimal and sorted");
    assert_eq!(b.get("n1").unwrap().scopes, scopes);
    let persisted: [AuthPersist; 1] = persisted(&mut b).try_into().unwrap();
    let [AuthPersist::Node(stored)] = persisted else {
        unreachable!()
    };
    assert_eq!(stored.scopes, scopes);
    assert_eq!(
        b.set_scopes("ghost", &[]),
        Err(BookError::UnknownNode {
            node_id: "ghost".to_owned()
        })
    );
    assert!(matches!(
        b.set_scopes("n1", &["a..b".into()]),
        Err(BookError::InvalidScopes(_))
    ));
    b.revoke(clock.at(1.0), "n1", "gone").unwrap();
    assert_eq!(
        b.set_scopes("n1", &[]),
        Err(BookError::Revoked {
            node_id: "n1".to_owned()
        })
    );
    b.insert(record("a", "x")).unwrap();
    let listed: Vec<&str> = b.list().map(|r| r.node_id.as_str()).collect();
    assert_eq!(listed, ["a", "n1"], "sorted by nodeId");
}

#[test]
fn restore_rebuilds_the_book_from_the_persisted_records() {
    let clock = SimClock::new();
    let mut b = book(&clock, AuthConfig::default());
    b.insert(record("n1", SECRET)).unwrap();
    b.insert(record("n2", "other")).unwrap();
    b.set_scopes("n1", &["system.info".into()]).unwrap();
    b.revoke(clock.at(5.0), "n2", "lost laptop").unwrap();
    // The store: JSON lines, replayed in order (the last record of a nodeId wins).
    let log: Vec<String> = persisted(&mut b)
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    assert_eq!(log.len(), 4);
    let mut restarted = book(&clock, AuthConfig::default());
    restarted.restore(log.iter().map(|line| {
        let AuthPersist::Node(record) = serde_json::from_str(line).unwrap() else {
            unreachable!()
        };
        record
    }));
    assert!(
        restarted.poll_persist().is_none(),
        "restore persists nothing"
    );
    let a = src("192.0.2.1");
    assert_eq!(
        restarted.authenticate(clock.at(6.0), &good(), &a),
        Ok("n1".to_owned())
    );
    assert_eq!(restarted.get("n1").unwrap().scopes, ["system.info"]);
    assert_eq!(
        restarted.authenticate(clock.at(6.0), "n2.other", &a),
        Err(AuthError::Revoked {
            node_id: "n2".to_owned(),
            reason: "lost laptop".to_owned()
        })
    );
}

#[test]
fn a_record_is_stored_with_the_hash_only() {
    let clock = SimClock::new();
    let mut b = book(&clock, AuthConfig::default());
    b.insert(record("gpu-node-1", SECRET)).unwrap();
    b.revoke(clock.at(1.5), "gpu-node-1", "admin_revoked")
        .unwrap();
    let lines: Vec<String> = persisted(&mut b)
        .iter()
        .map(|p| serde_json::to_string(p).unwrap())
        .collect();
    let digest: String = hash_secret(SECRET)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        lines[1],
        format!(
            r#"{{"kind":"node","nodeId":"gpu-node-1","secretSha256":"{digest}","state":{{"status":"revoked","reason":"admin_revoked","atUnixMs":1767225601500}},"scopes":["screen.capture"],"name":"rack 3","platform":"linux","pairedAtUnixMs":1767225600000}}"#
        )
    );
    for line in &lines {
        assert!(!line.contains(SECRET), "no plaintext secret at rest");
    }
    assert!(!format!("{b:?}").contains(SECRET));
}

#[test]
fn hash_secret_is_plain_sha256_of_the_utf8_secret() {
    // FIPS 180-2 test vector: SHA-256("abc").
    let digest: String = hash_secret("abc")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

/// The REST bodies and negotiate texts the node book pins (docs/gateway-parts/auth.md).
fn pinned_bodies() -> Vec<String> {
    let errors = [
        AuthError::Malformed(TokenError::MissingDot),
        AuthError::UnknownNode {
            node_id: "n1".into(),
        },
        AuthError::BadSecret {
            node_id: "n1".into(),
        },
        AuthError::Revoked {
            node_id: "n1".into(),
            reason: "admin_revoked".into(),
        },
        AuthError::RateLimited {
            retry_after: Duration::from_micros(5_999_001),
        },
    ];
    let mut out = Vec::new();
    for e in &errors {
        let reply = e.to_reply();
        out.push(format!(
            "{} {}",
            reply.status,
            String::from_utf8(reply.body).unwrap()
        ));
    }
    for e in &errors[1..] {
        out.push(format!(r#"{{"error":"{}"}}"#, e.negotiate_error()));
    }
    out
}

#[test]
fn refusals_have_the_pinned_statuses_and_bodies() {
    insta::assert_snapshot!(pinned_bodies().join("\n"), @r#"
    401 {"error":"unauthorized","message":"malformed node token: node token has no `.` between nodeId and secret (expected {nodeId}.{secret})"}
    401 {"error":"unauthorized","message":"unknown node token"}
    401 {"error":"unauthorized","message":"wrong node token secret"}
    403 {"error":"revoked","message":"access revoked: admin_revoked"}
    429 {"error":"rate_limited","message":"too many failed authentication attempts","retryAfterMs":6000}
    {"error":"Unauthorized: unknown node token"}
    {"error":"Unauthorized: wrong node token secret"}
    {"error":"Forbidden: access revoked: admin_revoked"}
    {"error":"Too Many Requests: too many failed authentication attempts"}
    "#);
}

#[test]
fn every_pinned_body_appears_verbatim_in_the_spec_part() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let part =
        std::fs::read_to_string(root.join("../docs/gateway-parts/auth.md")).unwrap_or_default();
    let spec = std::fs::read_to_string(root.join("../docs/protocol.md")).unwrap_or_default();
    for line in pinned_bodies() {
        let body = line
            .split_once(' ')
            .filter(|_| !line.starts_with('{'))
            .map_or(line.as_str(), |(_, b)| b);
        assert!(
            part.contains(body) || spec.contains(body),
            "not in docs/gateway-parts/auth.md nor docs/protocol.md: {body}"
        );
    }
}
