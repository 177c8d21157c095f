//! The pairing book (core/src/gateway/pairing): codes, approval, token delivery, rejection,
//! expiry, limits and restarts, at exact instants of a virtual clock.
mod support;

#[path = "gateway_pairing/pinned.rs"]
mod pinned;
#[path = "gateway_pairing/props.rs"]
mod props;
#[path = "gateway_pairing/restart.rs"]
mod restart;

use std::time::Duration;

use nodelink_core::gateway::auth::{hash_secret, AuthConfig, NodeBook, NodeState, UnixClock};
use nodelink_core::gateway::pairing::{
    PairReply, PairingBook, PairingConfig, PairingError, PairingEvent, PairingPersist, PairingStage,
};
use nodelink_core::gateway::Source;
use nodelink_core::rng::Rng;
use nodelink_core::wire::rest::{NodeToken, PairRequest, PairResponse, RestErrorCode};
use support::SimClock;

const UNIX_AT_ZERO_MS: u64 = 1_767_225_600_000;
const GATEWAY_URL: &str = "https://gw.example.com";
const SECRET: &str = "s_9f8e7d6c5b4a";

/// A gateway's two books, its rng and its clock.
struct Gw {
    clock: SimClock,
    nodes: NodeBook,
    pairing: PairingBook,
    rng: Rng,
}

impl Gw {
    fn new() -> Gw {
        Gw::with(PairingConfig::new(GATEWAY_URL))
    }

    fn with(config: PairingConfig) -> Gw {
        let clock = SimClock::new();
        Gw::at_clock(clock, config, [7; 32])
    }

    fn at_clock(clock: SimClock, config: PairingConfig, seed: [u8; 32]) -> Gw {
        let unix = UnixClock::new(clock.at(0.0), Duration::from_millis(UNIX_AT_ZERO_MS));
        Gw {
            clock,
            nodes: NodeBook::new(AuthConfig::default(), unix),
            pairing: PairingBook::new(config, unix),
            rng: Rng::from_seed(seed),
        }
    }

    fn pair_from(&mut self, secs: f64, node_id: &str, secret: &str, source: &str) -> PairReply {
        let request = PairRequest {
            node_id: node_id.to_owned(),
            pairing_secret: secret.to_owned(),
            name: Some("rack 3, slot 2".to_owned()),
            platform: Some("linux".to_owned()),
        };
        self.pairing.pair(
            self.clock.at(secs),
            &request,
            &Source(source.to_owned()),
            &mut self.nodes,
            &mut self.rng,
        )
    }

    fn pair(&mut self, secs: f64, node_id: &str, secret: &str) -> PairReply {
        self.pair_from(secs, node_id, secret, "192.0.2.1")
    }

    fn approve(&mut self, secs: f64, code: &str, scopes: &[&str]) {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.pairing
            .approve(self.clock.at(secs), code, &scopes, &self.nodes)
            .expect("an open pairing");
    }

    fn events(&mut self) -> Vec<PairingEvent> {
        std::iter::from_fn(|| self.pairing.poll_event()).collect()
    }

    fn persisted(&mut self) -> Vec<PairingPersist> {
        std::iter::from_fn(|| self.pairing.poll_persist()).collect()
    }

    /// Wakes the book at each of its timeouts up to `secs` (source-limit refills included).
    fn run_to(&mut self, secs: f64) {
        let until = self.clock.at(secs);
        while let Some(at) = self.pairing.poll_timeout().filter(|at| *at <= until) {
            self.pairing.handle_timeout(at);
            assert!(
                self.pairing.poll_timeout().is_none_or(|t| t > at),
                "design rule 8"
            );
        }
    }

    /// Wakes the book at its timeout, which must be `secs`.
    #[track_caller]
    fn wake(&mut self, secs: f64) {
        let at = self.pairing.poll_timeout().expect("a timer is armed");
        assert_eq!(
            at,
            self.clock.at(secs),
            "timeout at {}s",
            self.clock.secs(at)
        );
        self.pairing.handle_timeout(at);
        assert!(
            self.pairing.poll_timeout().is_none_or(|t| t > at),
            "design rule 8"
        );
    }
}

#[track_caller]
fn code_of(reply: &PairReply) -> String {
    match reply {
        PairReply::Answer(PairResponse::Pending { pairing_code }) => pairing_code.clone(),
        other => panic!("expected pending, got {other:?}"),
    }
}

#[track_caller]
fn token_of(reply: &PairReply) -> NodeToken {
    match reply {
        PairReply::Answer(PairResponse::Approved { token, gateway_url }) => {
            assert_eq!(gateway_url, GATEWAY_URL);
            token.clone()
        }
        other => panic!("expected approved, got {other:?}"),
    }
}

#[track_caller]
fn refused(reply: &PairReply, status: u16, code: RestErrorCode) -> Option<u64> {
    match reply {
        PairReply::Refused(body) => {
            assert_eq!((reply.status(), &body.error), (status, &code), "{body:?}");
            body.retry_after_ms
        }
        other => panic!("expected {status}, got {other:?}"),
    }
}

fn answer(response: PairResponse) -> PairReply {
    PairReply::Answer(response)
}

#[test]
fn pairing_request_gets_a_code_and_repeats_are_idempotent() {
    let mut gw = Gw::new();
    let first = gw.pair(0.0, "gpu-node-1", SECRET);
    let code = code_of(&first);
    let bytes = code.as_bytes();
    assert!(
        code.len() == 7
            && bytes[..3].iter().all(u8::is_ascii_uppercase)
            && bytes[3] == b'-'
            && bytes[4..].iter().all(u8::is_ascii_digit),
        "{code}"
    );
    assert_eq!(
        String::from_utf8(first.to_http().body).unwrap(),
        format!(r#"{{"status":"pending","pairingCode":"{code}"}}"#)
    );
    assert_eq!(
        gw.events(),
        [PairingEvent::Requested {
            code: code.clone(),
            node_id: "gpu-node-1".into(),
            name: Some("rack 3, slot 2".into()),
            platform: Some("linux".into()),
        }]
    );
    let persisted = gw.persisted();
    let [PairingPersist::Put(record)] = persisted.as_slice() else {
        panic!("{persisted:?}")
    };
    assert_eq!(record.stage, PairingStage::Waiting);
    assert_eq!(record.secret_sha256, hash_secret(SECRET));
    assert_eq!(record.expires_at_unix_ms, UNIX_AT_ZERO_MS + 900_000);
    // Every 3 s, the same answer, and nothing new to persist or report.
    for k in 1..=10 {
        assert_eq!(gw.pair(3.0 * f64::from(k), "gpu-node-1", SECRET), first);
    }
    assert!(gw.persisted().is_empty() && gw.events().is_empty());
    let listed = gw.pairing.list_pending(gw.clock.at(30.0));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].code, code);
    assert_eq!(listed[0].node_id, "gpu-node-1");
    assert_eq!(listed[0].name.as_deref(), Some("rack 3, slot 2"));
    assert_eq!(listed[0].age, Duration::from_secs(30));
    assert_eq!(listed[0].expires_in, Duration::from_secs(870));
    assert_eq!(listed[0].approved_scopes, None);
    // The code is found whatever its case.
    let lower = code.to_ascii_lowercase();
    assert_eq!(
        gw.pairing.pending(gw.clock.at(30.0), &format!(" {lower} ")),
        Some(listed[0].clone())
    );
}

#[test]
fn repeats_closer_than_one_second_are_refused() {
    let mut gw = Gw::new();
    let first = gw.pair(0.0, "n1", SECRET);
    let retry = refused(
        &gw.pair(0.25, "n1", SECRET),
        429,
        RestErrorCode::RateLimited,
    );
    assert_eq!(retry, Some(750));
    assert_eq!(
        gw.pair(1.0, "n1", SECRET),
        first,
        "1 s after the last answered one"
    );
    assert_eq!(
        refused(&gw.pair(1.5, "n1", SECRET), 429, RestErrorCode::RateLimited),
        Some(500)
    );
}

#[test]
fn another_secret_for_an_open_pairing_is_forbidden() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "n1", SECRET));
    let reply = gw.pair(0.5, "n1", "s_another");
    refused(&reply, 403, RestErrorCode::Forbidden);
    // It holds until the pairing ends; then the other secret opens its own.
    gw.pairing.reject(gw.clock.at(10.0), &code, None).unwrap();
    let other = code_of(&gw.pair(11.0, "n1", "s_another"));
    assert_ne!(other, code);
}

#[test]
fn approval_delivers_the_token_on_the_next_poll() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "gpu-node-1", SECRET));
    gw.persisted();
    gw.events();
    gw.approve(10.0, &code, &["screen.capture", "screen.*", "system.info"]);
    // Approved, not minted: the node book knows nothing yet.
    assert!(gw.nodes.get("gpu-node-1").is_none());
    let listed = gw.pairing.list_pending(gw.clock.at(10.0));
    assert_eq!(
        listed[0].approved_scopes.as_deref(),
        Some(&["screen.*".to_owned(), "system.info".to_owned()][..])
    );
    let persisted = gw.persisted();
    assert!(matches!(
        persisted.as_slice(),
        [PairingPersist::Put(r)] if matches!(r.stage, PairingStage::Approved { .. })
    ));
    // The next poll, at 12 s, mints and delivers the token.
    let reply = gw.pair(12.0, "gpu-node-1", SECRET);
    let token = token_of(&reply);
    assert_eq!(token.node_id(), "gpu-node-1");
    assert_eq!(
        token.secret().len(),
        43,
        "256 bits, base64url without padding"
    );
    assert!(token
        .secret()
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    let record = gw.nodes.get("gpu-node-1").unwrap().clone();
    assert_eq!(record.secret_sha256, hash_secret(token.secret()));
    assert_eq!(record.state, NodeState::Approved);
    assert_eq!(record.scopes, ["screen.*", "system.info"]);
    assert_eq!(record.name.as_deref(), Some("rack 3, slot 2"));
    assert_eq!(record.paired_at_unix_ms, UNIX_AT_ZERO_MS + 12_000);
    assert_eq!(
        gw.nodes.authenticate(
            gw.clock.at(13.0),
            &token.to_string(),
            &Source("192.0.2.1".into())
        ),
        Ok("gpu-node-1".to_owned())
    );
    assert_eq!(
        gw.events(),
        [PairingEvent::Delivered {
            node_id: "gpu-node-1".into(),
            reissued: false
        }]
    );
    let persisted = gw.persisted();
    assert!(matches!(
        persisted.as_slice(),
        [PairingPersist::Put(r)] if r.stage == PairingStage::Delivered {
            token_sha256: hash_secret(token.secret()),
            delivered_at_unix_ms: UNIX_AT_ZERO_MS + 12_000,
        }
    ));
    // The pairing is no longer open; the operator's list is empty.
    assert!(gw.pairing.list_pending(gw.clock.at(12.0)).is_empty());
    // A repeat (the answer was lost) gets the same body until the secret expires...
    assert_eq!(gw.pair(15.0, "gpu-node-1", SECRET), reply);
    assert_eq!(gw.pair(899.0, "gpu-node-1", SECRET), reply);
    assert_eq!(
        gw.nodes.get("gpu-node-1").unwrap(),
        &record,
        "not re-minted"
    );
    // ... and `expired` after.
    assert_eq!(
        gw.pair(900.0, "gpu-node-1", SECRET),
        answer(PairResponse::Expired)
    );
    // Another secret for the paired nodeId: 409.
    refused(
        &gw.pair(20.0, "gpu-node-1", "s_thief"),
        409,
        RestErrorCode::Conflict,
    );
}

#[test]
fn operator_mistakes_are_errors() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "n1", SECRET));
    let now = gw.clock.at(1.0);
    assert_eq!(
        gw.pairing.approve(now, "ZZZ-000", &[], &gw.nodes),
        Err(PairingError::UnknownCode {
            code: "ZZZ-000".into()
        })
    );
    assert!(matches!(
        gw.pairing
            .approve(now, &code, &["Not A Scope".to_owned()], &gw.nodes),
        Err(PairingError::InvalidScopes(_))
    ));
    // Another record for the nodeId was imported meanwhile.
    let mut imported = nodelink_core::gateway::auth::NodeRecord {
        node_id: "n1".into(),
        secret_sha256: hash_secret("x"),
        state: NodeState::Approved,
        scopes: vec![],
        name: None,
        platform: None,
        paired_at_unix_ms: 0,
    };
    gw.nodes.insert(imported.clone()).unwrap();
    assert_eq!(
        gw.pairing.approve(now, &code, &[], &gw.nodes),
        Err(PairingError::AlreadyPaired {
            node_id: "n1".into()
        })
    );
    imported.state = NodeState::Revoked {
        reason: String::new(),
        at_unix_ms: None,
    };
    gw.nodes.insert(imported).unwrap();
    gw.pairing
        .approve(now, &code.to_ascii_lowercase(), &[], &gw.nodes)
        .unwrap();
    assert_eq!(
        gw.pairing.approve(now, &code, &[], &gw.nodes),
        Err(PairingError::AlreadyApproved { code: code.clone() })
    );
    // Approved, not collected: it can still be rejected.
    gw.pairing
        .reject(now, &code, Some("changed my mind".into()))
        .unwrap();
    assert_eq!(
        gw.pair(2.0, "n1", SECRET),
        answer(PairResponse::Rejected {
            reason: Some("changed my mind".into())
        })
    );
    assert!(matches!(
        gw.pairing.reject(now, &code, None),
        Err(PairingError::UnknownCode { .. })
    ));
}

#[test]
fn pending_pairing_expires_at_15_minutes() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "n1", SECRET));
    gw.events();
    gw.persisted();
    assert_eq!(
        gw.pair(899.999, "n1", SECRET),
        answer(PairResponse::Pending {
            pairing_code: code.clone()
        })
    );
    gw.wake(900.0);
    assert_eq!(
        gw.events(),
        [PairingEvent::Expired {
            code: code.clone(),
            node_id: "n1".into()
        }]
    );
    let persisted = gw.persisted();
    assert!(matches!(
        persisted.as_slice(),
        [PairingPersist::Put(r)] if r.stage == PairingStage::Expired {
            forget_at_unix_ms: UNIX_AT_ZERO_MS + 1_800_000
        }
    ));
    assert!(gw.pairing.list_pending(gw.clock.at(900.0)).is_empty());
    assert!(matches!(
        gw.pairing
            .approve(gw.clock.at(900.0), &code, &[], &gw.nodes),
        Err(PairingError::UnknownCode { .. })
    ));
    assert_eq!(gw.pair(901.0, "n1", SECRET), answer(PairResponse::Expired));
    // The nodeId is free for a new secret at once.
    let fresh = code_of(&gw.pair(902.0, "n1", "s_fresh"));
    gw.persisted();
    gw.events();
    // The expired pairing is remembered for another 15 minutes, then forgotten.
    assert_eq!(gw.pair(1799.0, "n1", SECRET), answer(PairResponse::Expired));
    gw.run_to(1800.0);
    assert!(matches!(
        gw.persisted().as_slice(),
        [PairingPersist::Delete { node_id, secret_sha256 }]
            if node_id == "n1" && *secret_sha256 == hash_secret(SECRET)
    ));
    // The fresh one expires on its own schedule.
    gw.wake(1802.0);
    assert!(
        matches!(gw.events().as_slice(), [PairingEvent::Expired { code, .. }] if *code == fresh)
    );
}

#[test]
fn an_approval_nobody_collects_lapses_without_a_token() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "n1", SECRET));
    gw.approve(60.0, &code, &["system.info"]);
    gw.wake(900.0);
    assert!(gw.nodes.get("n1").is_none(), "no token was ever minted");
    assert_eq!(gw.pair(901.0, "n1", SECRET), answer(PairResponse::Expired));
}

#[test]
fn a_late_wake_up_expires_and_forgets_in_one_go() {
    let mut gw = Gw::new();
    gw.pair(0.0, "n1", SECRET);
    gw.persisted();
    gw.pairing.handle_timeout(gw.clock.at(5000.0));
    let persisted = gw.persisted();
    assert!(matches!(
        persisted.as_slice(),
        [PairingPersist::Put(_), PairingPersist::Delete { .. }]
    ));
    assert_eq!(gw.pairing.counts(), (0, 0));
    assert_eq!(gw.pairing.poll_timeout(), None);
}

#[test]
fn rejected_pairing_is_reported() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "n1", SECRET));
    let view = gw
        .pairing
        .reject(gw.clock.at(5.0), &code, Some("unknown device".into()))
        .unwrap();
    assert_eq!(view.code, code);
    let reply = gw.pair(6.0, "n1", SECRET);
    assert_eq!(
        String::from_utf8(reply.to_http().body).unwrap(),
        r#"{"status":"rejected","reason":"unknown device"}"#
    );
    assert_eq!(gw.pair(899.0, "n1", SECRET), reply);
    assert_eq!(gw.pair(900.0, "n1", SECRET), answer(PairResponse::Expired));
    // A rejection without a reason.
    let code = code_of(&gw.pair(7.0, "n2", SECRET));
    gw.pairing.reject(gw.clock.at(8.0), &code, None).unwrap();
    assert_eq!(
        String::from_utf8(gw.pair(9.0, "n2", SECRET).to_http().body).unwrap(),
        r#"{"status":"rejected"}"#
    );
}

#[test]
fn a_revoked_node_is_told_expired_and_pairs_again_with_a_new_secret() {
    let mut gw = Gw::new();
    let code = code_of(&gw.pair(0.0, "n1", SECRET));
    gw.approve(3.0, &code, &[]);
    let token = token_of(&gw.pair(6.0, "n1", SECRET));
    gw.nodes
        .revoke(gw.clock.at(9.0), "n1", "admin_revoked")
        .unwrap();
    // The old secret can never fetch the old token again.
    assert_eq!(gw.pair(12.0, "n1", SECRET), answer(PairResponse::Expired));
    assert_eq!(gw.pair(15.0, "n1", SECRET), answer(PairResponse::Expired));
    // A new secret opens a new pairing; its approval replaces the record.
    let code = code_of(&gw.pair(12.0, "n1", "s_new"));
    gw.approve(13.0, &code, &["system.info"]);
    let new_token = token_of(&gw.pair(15.0, "n1", "s_new"));
    assert_ne!(new_token, token);
    assert!(gw.nodes.is_approved("n1"));
    assert_eq!(
        gw.nodes.get("n1").unwrap().secret_sha256,
        hash_secret(new_token.secret())
    );
}

#[test]
fn pairing_requests_are_rate_limited_per_source() {
    let mut gw = Gw::new();
    let mut first = None;
    for k in 0..20 {
        let reply = gw.pair_from(0.0, &format!("n{k}"), SECRET, "192.0.2.1");
        first.get_or_insert(reply.clone());
        code_of(&reply);
    }
    // The 21st new pairing from that address: 20 per minute, refilled one every 3 s.
    let reply = gw.pair_from(0.0, "n20", SECRET, "192.0.2.1");
    assert_eq!(
        refused(&reply, 429, RestErrorCode::RateLimited),
        Some(3_000)
    );
    // Refusals count too, but repeats of known pairings never do and are still answered.
    assert_eq!(gw.pair_from(1.0, "n0", SECRET, "192.0.2.1"), first.unwrap());
    // Another address is not concerned.
    code_of(&gw.pair_from(1.0, "n20", SECRET, "198.51.100.7"));
    assert_eq!(
        refused(
            &gw.pair_from(2.0, "n21", SECRET, "192.0.2.1"),
            429,
            RestErrorCode::RateLimited
        ),
        Some(1_000)
    );
    code_of(&gw.pair_from(3.0, "n21", SECRET, "192.0.2.1"));
}

#[test]
fn open_pairings_are_capped() {
    let mut config = PairingConfig::new(GATEWAY_URL);
    config.max_open = 2;
    let mut gw = Gw::with(config);
    code_of(&gw.pair_from(0.0, "a", SECRET, "192.0.2.1"));
    code_of(&gw.pair_from(100.0, "b", SECRET, "192.0.2.2"));
    let reply = gw.pair_from(200.0, "c", SECRET, "192.0.2.3");
    // Retry when the oldest expires, at 900 s.
    assert_eq!(
        refused(&reply, 429, RestErrorCode::RateLimited),
        Some(700_000)
    );
    gw.run_to(900.0);
    code_of(&gw.pair_from(900.0, "c", SECRET, "192.0.2.3"));
}

#[test]
fn malformed_requests_are_invalid() {
    let mut gw = Gw::new();
    let source = Source("192.0.2.1".into());
    let now = gw.clock.at(0.0);
    let reply = gw.pairing.pair_body(
        now,
        b"{\"nodeId\":\"n1\"}",
        &source,
        &mut gw.nodes,
        &mut gw.rng,
    );
    refused(&reply, 400, RestErrorCode::InvalidRequest);
    let reply = gw.pair(0.0, "bad.id", SECRET);
    refused(&reply, 400, RestErrorCode::InvalidRequest);
    let reply = gw.pair(0.0, "n1", "");
    refused(&reply, 400, RestErrorCode::InvalidRequest);
    let ok = gw.pairing.pair_body(
        now,
        br#"{"nodeId":"n1","pairingSecret":"s_1","name":"a\u0007b"}"#,
        &source,
        &mut gw.nodes,
        &mut gw.rng,
    );
    code_of(&ok);
    assert_eq!(
        gw.pairing.list_pending(now)[0].name.as_deref(),
        Some("a b"),
        "control characters never reach an operator's terminal"
    );
}
