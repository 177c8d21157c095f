//! Random sequences of attempts, revocations and time steps against the node book.

use std::collections::BTreeMap;
use std::time::Duration;

use nodelink_core::gateway::auth::{AuthConfig, AuthError, AuthPersist, NodeBook, RateLimit};
use nodelink_core::gateway::Source;
use proptest::prelude::*;

use super::{book, record, SimClock};

const NODES: [&str; 3] = ["n0", "n1", "n2"];
const SECRETS: [&str; 3] = ["s0-Zq8.x", "s1-Yw7", "s2-Xv6~"];
const SOURCES: usize = 5;

#[derive(Clone, Debug)]
enum Op {
    /// Node `node` presents: 0 its own token, 1 a wrong secret, 2 an unknown nodeId, 3 garbage.
    Attempt {
        node: usize,
        kind: u8,
        source: usize,
    },
    Revoke {
        node: usize,
    },
    Advance {
        ms: u64,
    },
    Timeout,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..NODES.len(), 0u8..4, 0..SOURCES)
            .prop_map(|(node, kind, source)| Op::Attempt { node, kind, source }),
        1 => (0..NODES.len()).prop_map(|node| Op::Revoke { node }),
        3 => (0u64..20_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Timeout),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_attempts_keep_the_book_honest(ops in proptest::collection::vec(op(), 1..300)) {
        let clock = SimClock::new();
        let config = AuthConfig {
            failures_per_source: RateLimit::new(4, Duration::from_secs(20)),
            failures_per_node: RateLimit::new(3, Duration::from_secs(15)),
            max_tracked_sources: 3,
            max_tracked_nodes: 2,
        };
        let mut b: NodeBook = book(&clock, config);
        for (node, secret) in NODES.iter().zip(SECRETS) {
            b.insert(record(node, secret)).unwrap();
        }
        let mut revoked = [false; 3];
        // Sources that never failed must never be refused a good token.
        let mut failed = [false; SOURCES];
        let mut now = clock.at(0.0);
        for op in ops {
            match op {
                Op::Attempt { node, kind, source } => {
                    let token = match kind {
                        0 => format!("{}.{}", NODES[node], SECRETS[node]),
                        1 => format!("{}.{}", NODES[node], SECRETS[(node + 1) % 3]),
                        2 => format!("ghost{node}.{}", SECRETS[node]),
                        _ => format!("{}{}", NODES[node], SECRETS[node]),
                    };
                    let from = Source(format!("192.0.2.{source}"));
                    let result = b.authenticate(now, &token, &from);
                    match (&result, kind) {
                        (Ok(id), 0) => {
                            prop_assert_eq!(id.as_str(), NODES[node]);
                            prop_assert!(!revoked[node]);
                        }
                        (Ok(_), _) => prop_assert!(false, "a bad token authenticated: {:?}", op),
                        (Err(AuthError::Revoked { .. }), 0) => prop_assert!(revoked[node]),
                        (Err(AuthError::RateLimited { retry_after }), _) => {
                            prop_assert!(!retry_after.is_zero());
                            prop_assert!(kind != 0 || failed[source],
                                "a good token refused from a source that never failed");
                        }
                        (Err(e), 0) => prop_assert!(false, "good token refused: {:?}", e),
                        (Err(e), _) => {
                            let plain = matches!(e, AuthError::BadSecret { .. }
                                | AuthError::UnknownNode { .. } | AuthError::Malformed(_));
                            prop_assert!(plain, "unexpected refusal {:?}", e);
                            failed[source] = true;
                        }
                    }
                    if kind != 0 && result.is_err() {
                        failed[source] = true;
                    }
                }
                Op::Revoke { node } => {
                    let r = b.revoke(now, NODES[node], "gone");
                    prop_assert_eq!(r.is_ok(), !revoked[node]);
                    revoked[node] = true;
                }
                Op::Advance { ms } => now += Duration::from_millis(ms),
                Op::Timeout => {
                    if let Some(at) = b.poll_timeout() {
                        now = now.max(at);
                        b.handle_timeout(now);
                        prop_assert!(b.poll_timeout().is_none_or(|t| t > now), "design rule 8");
                    }
                }
            }
            let (sources, nodes) = b.tracked_keys();
            prop_assert!(sources <= 3 && nodes <= 2, "caps hold: {sources}, {nodes}");
            while let Some(AuthPersist::Node(r)) = b.poll_persist() {
                let line = serde_json::to_string(&r).unwrap();
                for secret in SECRETS {
                    prop_assert!(!line.contains(secret), "plaintext secret persisted");
                }
            }
        }
        let states: BTreeMap<&str, bool> =
            b.list().map(|r| (r.node_id.as_str(), r.is_approved())).collect();
        for (i, node) in NODES.iter().enumerate() {
            prop_assert_eq!(states[node], !revoked[i]);
            // The book's index of approved ids agrees with its records.
            prop_assert_eq!(b.is_approved(node), !revoked[i]);
        }
        prop_assert!(!b.is_approved("unknown"));
    }
}
