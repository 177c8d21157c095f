//! Random sequences of pairing requests, operator decisions, revocations, time steps and
//! restarts: nothing panics, a token only ever goes to the secret it was minted for and only
//! while it is the node's token, and no secret is ever at rest.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nodelink_core::gateway::auth::hash_secret;
use nodelink_core::gateway::pairing::{PairReply, PairingConfig};
use nodelink_core::wire::rest::PairResponse;
use proptest::prelude::*;

use super::restart::Store;
use super::{Gw, GATEWAY_URL};

const NODES: [&str; 3] = ["n0", "n1", "n2"];
const SECRETS: [&str; 3] = ["s_alpha", "s_beta", "s_gamma"];

#[derive(Clone, Debug)]
enum Op {
    Pair {
        node: usize,
        secret: usize,
        source: u8,
    },
    Approve {
        pick: usize,
    },
    Reject {
        pick: usize,
    },
    Revoke {
        node: usize,
    },
    Advance {
        ms: u64,
    },
    Timeout,
    Restart {
        seed: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..3usize, 0..3usize, 0u8..3)
            .prop_map(|(node, secret, source)| Op::Pair { node, secret, source }),
        3 => (0..4usize).prop_map(|pick| Op::Approve { pick }),
        1 => (0..4usize).prop_map(|pick| Op::Reject { pick }),
        1 => (0..3usize).prop_map(|node| Op::Revoke { node }),
        4 => (0u64..300_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Timeout),
        1 => any::<u8>().prop_map(|seed| Op::Restart { seed }),
    ]
}

fn config() -> PairingConfig {
    let mut config = PairingConfig::new(GATEWAY_URL);
    config.max_open = 2;
    config.max_settled = 4;
    config
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_pairings_never_leak_a_token(ops in proptest::collection::vec(op(), 1..150)) {
        let mut gw = Gw::with(config());
        let clock = gw.clock;
        let mut store = Store::default();
        let mut lines: Vec<String> = Vec::new();
        let mut secs = 0.0f64;
        // Every token answered, with the (nodeId, pairing secret) it went to.
        let mut delivered: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for op in ops {
            let now = clock.at(secs);
            match op {
                Op::Pair { node, secret, source } => {
                    let reply = gw.pair_from(secs, NODES[node], SECRETS[secret],
                        &format!("192.0.2.{source}"));
                    let status = reply.status();
                    prop_assert!(matches!(status, 200 | 403 | 409 | 429), "{:?}", reply);
                    if let PairReply::Answer(PairResponse::Approved { token, .. }) = &reply {
                        prop_assert_eq!(token.node_id(), NODES[node]);
                        let first = *delivered.entry(token.to_string()).or_insert((node, secret));
                        prop_assert_eq!(first, (node, secret),
                            "a token answered to another pairing secret");
                        let record = gw.nodes.get(NODES[node]).expect("minted into the book");
                        prop_assert!(record.is_approved());
                        prop_assert_eq!(record.secret_sha256, hash_secret(token.secret()),
                            "a token answered that is not the node's current token");
                    }
                }
                Op::Approve { pick } => {
                    let pending = gw.pairing.list_pending(now);
                    if let Some(p) = pending.get(pick) {
                        let _ = gw.pairing.approve(now, &p.code, &["system.info".to_owned()],
                            &gw.nodes);
                    }
                }
                Op::Reject { pick } => {
                    let pending = gw.pairing.list_pending(now);
                    if let Some(p) = pending.get(pick) {
                        gw.pairing.reject(now, &p.code, None).unwrap();
                    }
                }
                Op::Revoke { node } => {
                    let _ = gw.nodes.revoke(now, NODES[node], "gone");
                }
                Op::Advance { ms } => secs += Duration::from_millis(ms).as_secs_f64(),
                Op::Timeout => {
                    if let Some(at) = gw.pairing.poll_timeout() {
                        let at = at.max(now);
                        secs = clock.secs(at);
                        gw.pairing.handle_timeout(at);
                        prop_assert!(gw.pairing.poll_timeout().is_none_or(|t| t > at),
                            "design rule 8");
                    }
                }
                Op::Restart { seed } => {
                    lines.extend(store.drain(&mut gw.nodes, &mut gw.pairing));
                    gw = store.restart(clock, secs, config(), [seed; 32]);
                }
            }
            lines.extend(store.drain(&mut gw.nodes, &mut gw.pairing));
            let now = clock.at(secs);
            let pending = gw.pairing.list_pending(now);
            let codes: BTreeSet<&str> = pending.iter().map(|p| p.code.as_str()).collect();
            prop_assert_eq!(codes.len(), pending.len(), "codes are unique");
            prop_assert!(gw.pairing.counts().0 <= 2 && gw.pairing.counts().1 <= 4);
            let debug = format!("{:?}{:?}", gw.pairing, gw.nodes);
            for secret in SECRETS {
                prop_assert!(!debug.contains(secret));
            }
        }
        for line in &lines {
            for secret in SECRETS {
                prop_assert!(!line.contains(secret), "pairing secret at rest: {}", line);
            }
            for token in delivered.keys() {
                let secret = token.split_once('.').unwrap().1;
                prop_assert!(!line.contains(secret), "token secret at rest: {}", line);
            }
        }
    }
}
