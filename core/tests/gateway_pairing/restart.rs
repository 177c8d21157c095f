//! A gateway that restarts during pairing loses nothing: pending codes, approvals, rejections and
//! delivered tokens come back from the store.

use std::collections::BTreeMap;
use std::time::Duration;

use nodelink_core::gateway::auth::{AuthConfig, AuthPersist, NodeBook, UnixClock};
use nodelink_core::gateway::pairing::{
    PairingBook, PairingConfig, PairingEvent, PairingPersist, PairingRecord,
};
use nodelink_core::gateway::Source;
use nodelink_core::rng::Rng;
use nodelink_core::wire::rest::{PairResponse, RestErrorCode};

use super::{code_of, refused, token_of, Gw, GATEWAY_URL, SECRET, UNIX_AT_ZERO_MS};
use crate::support::SimClock;

/// The shell's store: JSON per key, as a database would hold it.
#[derive(Default)]
pub(crate) struct Store {
    pub nodes: BTreeMap<String, String>,
    pub pairings: BTreeMap<(String, String), String>,
}

impl Store {
    /// Applies every queued change of both books.
    pub fn drain(&mut self, nodes: &mut NodeBook, pairing: &mut PairingBook) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(change) = nodes.poll_persist() {
            let line = serde_json::to_string(&change).unwrap();
            let AuthPersist::Node(record) = change else {
                unreachable!()
            };
            self.nodes.insert(record.node_id, line.clone());
            lines.push(line);
        }
        while let Some(change) = pairing.poll_persist() {
            let line = serde_json::to_string(&change).unwrap();
            match change {
                PairingPersist::Put(record) => {
                    let key = (record.node_id, hex(&record.secret_sha256));
                    self.pairings.insert(key, line.clone());
                }
                PairingPersist::Delete {
                    node_id,
                    secret_sha256,
                } => {
                    self.pairings.remove(&(node_id, hex(&secret_sha256)));
                }
                _ => unreachable!(),
            }
            lines.push(line);
        }
        lines
    }

    /// Both books as a gateway started at `secs` rebuilds them.
    pub fn restart(&self, clock: SimClock, secs: f64, config: PairingConfig, seed: [u8; 32]) -> Gw {
        let now = clock.at(secs);
        let unix = UnixClock::new(
            now,
            Duration::from_millis(UNIX_AT_ZERO_MS) + Duration::from_secs_f64(secs),
        );
        let mut nodes = NodeBook::new(AuthConfig::default(), unix);
        nodes.restore(self.nodes.values().map(|line| {
            let AuthPersist::Node(record) = serde_json::from_str::<AuthPersist>(line).unwrap()
            else {
                unreachable!()
            };
            record
        }));
        let mut pairing = PairingBook::new(config, unix);
        pairing.restore(self.pairings.values().map(|line| {
            let PairingPersist::Put(record) = serde_json::from_str(line).unwrap() else {
                unreachable!()
            };
            record
        }));
        Gw {
            clock,
            nodes,
            pairing,
            rng: Rng::from_seed(seed),
        }
    }
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn restore_after_restart_keeps_pending_and_approved() {
    let mut gw = Gw::new();
    let clock = gw.clock;
    let a = code_of(&gw.pair(0.0, "a", SECRET));
    let b = code_of(&gw.pair(0.0, "b", SECRET));
    let c = code_of(&gw.pair(0.0, "c", SECRET));
    let d = code_of(&gw.pair(0.0, "d", SECRET));
    gw.approve(10.0, &b, &["system.info"]);
    gw.approve(10.0, &c, &["screen.*"]);
    gw.pairing
        .reject(clock.at(10.0), &d, Some("nope".into()))
        .unwrap();
    let c_token = token_of(&gw.pair(12.0, "c", SECRET));
    let mut store = Store::default();
    let mut lines = store.drain(&mut gw.nodes, &mut gw.pairing);
    drop(gw);

    // The gateway comes back at 100 s with a new seed.
    let mut gw = store.restart(clock, 100.0, PairingConfig::new(GATEWAY_URL), [9; 32]);
    assert!(gw.pairing.poll_persist().is_none() && gw.nodes.poll_persist().is_none());
    let listed = gw.pairing.list_pending(clock.at(100.0));
    let codes: Vec<(&str, bool)> = listed
        .iter()
        .map(|p| (p.code.as_str(), p.approved_scopes.is_some()))
        .collect();
    let mut expected = vec![(a.as_str(), false), (b.as_str(), true)];
    expected.sort_by_key(|(code, _)| code.to_string());
    assert_eq!(codes, expected, "same codes, same decisions");
    assert_eq!(listed[0].age, Duration::from_secs(100));
    assert_eq!(listed[0].expires_in, Duration::from_secs(800));
    // A: still pending with its code. B: approved, minted now. D: rejected.
    assert_eq!(code_of(&gw.pair(100.0, "a", SECRET)), a);
    let b_token = token_of(&gw.pair(100.0, "b", SECRET));
    assert_eq!(gw.nodes.get("b").unwrap().scopes, ["system.info"]);
    assert_eq!(
        gw.pair(100.0, "d", SECRET),
        super::answer(PairResponse::Rejected {
            reason: Some("nope".into())
        })
    );
    // C was delivered before the crash; the node repeats (its answer was lost): a new token
    // replaces the old one, which stops working.
    let c_again = token_of(&gw.pair(100.0, "c", SECRET));
    assert_ne!(c_again, c_token);
    let source = Source("192.0.2.1".into());
    assert!(gw
        .nodes
        .authenticate(clock.at(101.0), &c_token.to_string(), &source)
        .is_err());
    assert_eq!(
        gw.nodes
            .authenticate(clock.at(101.0), &c_again.to_string(), &source),
        Ok("c".to_owned())
    );
    assert_eq!(gw.nodes.get("c").unwrap().scopes, ["screen.*"], "kept");
    assert_eq!(
        gw.events(),
        [
            PairingEvent::Delivered {
                node_id: "b".into(),
                reissued: false
            },
            PairingEvent::Delivered {
                node_id: "c".into(),
                reissued: true
            },
        ]
    );
    // Repeats in this process get the same token again.
    assert_eq!(token_of(&gw.pair(103.0, "c", SECRET)), c_again);
    assert_eq!(token_of(&gw.pair(103.0, "b", SECRET)), b_token);
    // Another secret still finds the nodeIds held.
    refused(&gw.pair(104.0, "a", "s_x"), 403, RestErrorCode::Forbidden);
    refused(&gw.pair(104.0, "c", "s_x"), 409, RestErrorCode::Conflict);
    // The deadlines came back too: A expires at exactly 900 s.
    gw.run_to(899.999);
    assert!(gw.events().is_empty());
    gw.run_to(900.0);
    assert_eq!(
        gw.events(),
        [PairingEvent::Expired {
            code: a.clone(),
            node_id: "a".into()
        }]
    );
    lines.extend(store.drain(&mut gw.nodes, &mut gw.pairing));
    for line in &lines {
        for secret in [SECRET, c_token.secret(), c_again.secret(), b_token.secret()] {
            assert!(!line.contains(secret), "a secret at rest: {line}");
        }
    }
    // 4 requests, 2 approvals, 1 rejection, 1 delivery (node + pairing) before the crash; 2
    // deliveries after it; 4 expiries at 900 s.
    assert_eq!(lines.len(), 17, "{lines:#?}");
}

#[test]
fn a_pairing_that_expired_while_the_gateway_was_down_is_expired_at_once() {
    let mut gw = Gw::new();
    let clock = gw.clock;
    let code = code_of(&gw.pair(0.0, "a", SECRET));
    gw.approve(5.0, &code, &[]);
    code_of(&gw.pair(0.0, "b", SECRET));
    let mut store = Store::default();
    store.drain(&mut gw.nodes, &mut gw.pairing);
    let mut gw = store.restart(clock, 1000.0, PairingConfig::new(GATEWAY_URL), [9; 32]);
    assert_eq!(
        gw.pairing.poll_timeout(),
        Some(clock.at(900.0)),
        "overdue: due at once"
    );
    gw.pairing.handle_timeout(clock.at(1000.0));
    assert_eq!(gw.events().len(), 2);
    assert_eq!(
        gw.pair(1000.0, "a", SECRET),
        super::answer(PairResponse::Expired)
    );
    assert!(gw.nodes.get("a").is_none());
    // Their memory lasts until 1800 s (15 min after their expiry), persisted with that time.
    store.drain(&mut gw.nodes, &mut gw.pairing);
    let mut gw = store.restart(clock, 1500.0, PairingConfig::new(GATEWAY_URL), [3; 32]);
    assert_eq!(gw.pairing.poll_timeout(), Some(clock.at(1800.0)));
    assert_eq!(
        gw.pair(1500.0, "b", SECRET),
        super::answer(PairResponse::Expired)
    );
    gw.run_to(1800.0);
    assert_eq!(gw.pairing.counts(), (0, 0));
}

#[test]
fn stored_records_have_the_documented_shape() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "gpu-node-1", SECRET));
    let mut store = Store::default();
    let lines = store.drain(&mut gw.nodes, &mut gw.pairing);
    let digest = hex(&nodelink_core::gateway::auth::hash_secret(SECRET));
    assert_eq!(
        lines,
        [format!(
            r#"{{"kind":"put","nodeId":"gpu-node-1","secretSha256":"{digest}","code":"{code}","name":"rack 3, slot 2","platform":"linux","requestedAtUnixMs":1767225600000,"expiresAtUnixMs":1767226500000,"stage":"waiting"}}"#
        )]
    );
    let record: PairingRecord = serde_json::from_str(&format!(
        r#"{{"nodeId":"n1","secretSha256":"{digest}","code":"ABC-123","requestedAtUnixMs":1,"expiresAtUnixMs":2,"stage":"approved","scopes":["system.info"],"approvedAtUnixMs":1}}"#
    ))
    .unwrap();
    assert!(record.stage.is_open());
}
