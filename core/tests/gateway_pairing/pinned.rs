//! The pairing book's refusals: their statuses and bodies, pinned, and shown verbatim in the
//! spec part.

use nodelink_core::gateway::pairing::{PairReply, PairingConfig};
use nodelink_core::gateway::Source;

use super::{code_of, Gw, GATEWAY_URL, SECRET};

/// The refusals the pairing book pins (docs/gateway-parts/pairing.md).
fn pinned_bodies() -> Vec<String> {
    let mut config = PairingConfig::new(GATEWAY_URL);
    config.max_open = 2;
    let mut gw = Gw::with(config);
    let source = Source("192.0.2.9".into());
    let now = gw.clock.at(0.0);
    let mut out = Vec::new();
    let mut push = |reply: PairReply| {
        out.push(format!(
            "{} {}",
            reply.status(),
            String::from_utf8(reply.to_http().body).unwrap()
        ))
    };
    push(
        gw.pairing
            .pair_body(now, b"{}", &source, &mut gw.nodes, &mut gw.rng),
    );
    push(gw.pair(0.0, "gpu node", SECRET));
    push(gw.pair(0.0, "n1", ""));
    let code = code_of(&gw.pair(0.0, "n1", SECRET));
    push(gw.pair(0.0, "n1", "s_other"));
    push(gw.pair(0.25, "n1", SECRET));
    gw.approve(1.0, &code, &[]);
    gw.pair(1.0, "n1", SECRET);
    push(gw.pair(1.0, "n1", "s_other"));
    code_of(&gw.pair(1.0, "n2", SECRET));
    code_of(&gw.pair(300.0, "n3", SECRET));
    push(gw.pair(600.0, "n4", SECRET));
    for k in 0..20 {
        gw.pair_from(600.0, &format!("m{k}"), SECRET, "198.51.100.1");
    }
    push(gw.pair_from(600.0, "m20", SECRET, "198.51.100.1"));
    out
}

#[test]
fn refusals_have_the_pinned_statuses_and_bodies() {
    insta::assert_snapshot!(pinned_bodies().join("\n"), @r#"
    400 {"error":"invalid_request","message":"pair request body is invalid: missing field `nodeId` at line 1 column 2"}
    400 {"error":"invalid_request","message":"pair request body is invalid: field `nodeId`: nodeId contains ' ' at byte 3; only A-Z, a-z, 0-9, `-` and `_` are allowed"}
    400 {"error":"invalid_request","message":"pair request body is invalid: field `pairingSecret` is empty"}
    403 {"error":"forbidden","message":"nodeId has an open pairing with another secret"}
    429 {"error":"rate_limited","message":"at most one pairing request per second","retryAfterMs":750}
    409 {"error":"conflict","message":"nodeId is already paired"}
    429 {"error":"rate_limited","message":"too many pairings wait for approval","retryAfterMs":301000}
    429 {"error":"rate_limited","message":"too many pairing requests from this address","retryAfterMs":3000}
    "#);
}

#[test]
fn every_pinned_body_appears_verbatim_in_the_spec_part() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let part =
        std::fs::read_to_string(root.join("../docs/gateway-parts/pairing.md")).unwrap_or_default();
    let spec = std::fs::read_to_string(root.join("../docs/protocol.md")).unwrap_or_default();
    for line in pinned_bodies() {
        assert!(
            part.contains(&line) || spec.contains(&line),
            "not in docs/gateway-parts/pairing.md nor docs/protocol.md: {line}"
        );
    }
}
