//! Negotiate and the WebSocket upgrade: versions, ids, 404 / 409, expiry, skip-negotiation.

use super::*;
use nodelink_core::gateway::hub::ConnState;

#[test]
fn negotiate_v1_then_upgrade_with_the_token_then_handshake_json() {
    let mut sim = Sim::new();
    let reply = sim.negotiate(0.0, "negotiateVersion=1");
    assert_eq!(reply.status, 200);
    let c = connection(&reply);
    let token = c.connection_token.clone().unwrap();
    assert_eq!(
        body(&reply),
        format!(
            "{{\"negotiateVersion\":1,\"connectionId\":\"{}\",\"connectionToken\":\"{token}\",\
             \"availableTransports\":[{{\"transport\":\"WebSockets\",\"transferFormats\":[\"Text\",\"Binary\"]}}]}}",
            c.connection_id
        )
    );
    // 128 random bits each, base64url without padding; the token is not the public id.
    assert_eq!(c.connection_id.len(), 22);
    assert_eq!(token.len(), 22);
    assert_ne!(c.connection_id, token);
    assert_eq!(sim.server.pending_negotiations(), 1);

    let step = sim.open(1.0, 1, &format!("id={token}")).unwrap();
    assert!(step.is_empty());
    assert_eq!(sim.server.state_of(ConnId(1)), Some(ConnState::Handshaking));
    assert_eq!(sim.server.pending_negotiations(), 0);

    let step = sim.frame(2.0, 1, handshake(HubProtocol::Json, 1));
    assert_eq!(step.texts(ConnId(1)), vec!["{}\\x1e"]);
    assert_eq!(
        step.events,
        vec![HubServerEvent::Connected {
            conn: ConnId(1),
            node: NODE.into(),
            protocol: HubProtocol::Json,
            stateful: false
        }]
    );
    assert_eq!(sim.server.state_of(ConnId(1)), Some(ConnState::Open));
    assert_eq!(sim.server.protocol_of(ConnId(1)), Some(HubProtocol::Json));
    assert_eq!(sim.server.node_of(ConnId(1)).map(|n| &**n), Some(NODE));
}

#[test]
fn negotiate_without_a_version_answers_version_0_whose_id_opens_the_socket() {
    let mut sim = Sim::new();
    let reply = sim.negotiate(0.0, "access_token=abc123.s3cret");
    let c = connection(&reply);
    assert_eq!(c.negotiate_version, 0);
    assert_eq!(c.connection_token, None);
    assert!(body(&reply).starts_with("{\"negotiateVersion\":0,\"connectionId\":"));
    assert!(!body(&reply).contains("connectionToken"));
    sim.open(1.0, 1, &format!("id={}", c.connection_id))
        .unwrap();
    assert_eq!(sim.server.state_of(ConnId(1)), Some(ConnState::Handshaking));
}

#[test]
fn a_newer_negotiate_version_is_answered_with_version_1() {
    let mut sim = Sim::new();
    for query in [
        "negotiateVersion=7",
        "negotiateVersion=99999999999999999999",
    ] {
        let reply = sim.negotiate(0.0, query);
        assert_eq!(reply.status, 200, "{query}");
        assert_eq!(connection(&reply).negotiate_version, 1, "{query}");
    }
}

#[test]
fn a_negotiate_version_that_is_not_a_number_is_400() {
    let mut sim = Sim::new();
    let reply = sim.negotiate(0.0, "negotiateVersion=-1");
    assert_eq!(reply.status, 400);
    assert_eq!(
        body(&reply),
        "{\"error\":\"negotiate query parameter `negotiateVersion` has an invalid value `-1`\"}"
    );
    assert_eq!(sim.negotiate(0.0, "negotiateVersion=one").status, 400);
    assert_eq!(sim.negotiate(0.0, "useStatefulReconnect=yes").status, 400);
    assert_eq!(sim.server.pending_negotiations(), 0);
}

#[test]
fn stateful_reconnect_is_granted_only_when_asked_for_with_version_1_and_allowed() {
    let mut sim = Sim::new();
    let reply = sim.negotiate(0.0, "negotiateVersion=1&useStatefulReconnect=true");
    assert!(body(&reply).starts_with("{\"useStatefulReconnect\":true,\"negotiateVersion\":1,"));
    assert!(connection(&reply).use_stateful_reconnect);
    let reply = sim.negotiate(0.0, "negotiateVersion=1");
    assert!(!connection(&reply).use_stateful_reconnect);
    // Version 0 has no secret token to bind a resumed socket to.
    let reply = sim.negotiate(0.0, "useStatefulReconnect=true");
    assert!(!connection(&reply).use_stateful_reconnect);

    let mut off = Sim::with(HubServerConfig {
        stateful_reconnect: false,
        ..HubServerConfig::default()
    });
    let reply = off.negotiate(0.0, "negotiateVersion=1&useStatefulReconnect=true");
    assert!(!connection(&reply).use_stateful_reconnect);
}

#[test]
fn ids_come_from_the_rng_so_the_same_seed_gives_the_same_answer() {
    let mut a = Sim::new();
    let mut b = Sim::new();
    let first = a.negotiate(0.0, "negotiateVersion=1");
    assert_eq!(first, b.negotiate(0.0, "negotiateVersion=1"));
    assert_ne!(first, a.negotiate(0.0, "negotiateVersion=1"));
}

#[test]
fn unknown_id_is_404_and_second_socket_409() {
    let mut sim = Sim::new();
    let refused = sim.open(0.0, 1, "id=nope").unwrap_err();
    assert_eq!(refused.status, 404);
    assert_eq!(body(&refused), "{\"error\":\"No Connection with that ID\"}");

    let token = sim.negotiate_token(0.0, "negotiateVersion=1");
    sim.open(1.0, 1, &format!("id={token}")).unwrap();
    let refused = sim.open(2.0, 2, &format!("id={token}")).unwrap_err();
    assert_eq!(refused.status, 409);
    assert_eq!(
        body(&refused),
        "{\"error\":\"Connection ID already in use\"}"
    );
    // Open, a plain connection still refuses a second socket.
    sim.frame(3.0, 1, handshake(HubProtocol::Json, 1));
    assert_eq!(
        sim.open(4.0, 3, &format!("id={token}")).unwrap_err().status,
        409
    );
    assert_eq!(sim.server.connection_count(), 1);
}

#[test]
fn the_id_of_another_node_is_404() {
    let mut sim = Sim::new();
    let token = sim.negotiate_token(0.0, "negotiateVersion=1");
    let refused = sim
        .open_as(1.0, 1, "someone-else", &format!("id={token}"))
        .unwrap_err();
    assert_eq!(refused.status, 404);
    // Still usable by its own node.
    sim.open(2.0, 2, &format!("id={token}")).unwrap();
    // And once bound, still 404 (not 409) to another node.
    let refused = sim
        .open_as(3.0, 3, "someone-else", &format!("id={token}"))
        .unwrap_err();
    assert_eq!(refused.status, 404);
}

#[test]
fn a_negotiated_id_unused_for_30s_is_forgotten() {
    let mut sim = Sim::new();
    let token = sim.negotiate_token(0.0, "negotiateVersion=1");
    assert_eq!(sim.poll_timeout_secs(), Some(30.0));
    assert!(sim.timeout(29.999).is_empty());
    assert_eq!(sim.server.pending_negotiations(), 1);
    assert!(sim.timeout(30.0).is_empty());
    assert_eq!(sim.server.pending_negotiations(), 0);
    assert_eq!(sim.poll_timeout_secs(), None);
    assert_eq!(
        sim.open(30.0, 1, &format!("id={token}"))
            .unwrap_err()
            .status,
        404
    );
}

#[test]
fn a_negotiated_id_opened_in_time_does_not_expire() {
    let mut sim = Sim::new();
    let token = sim.negotiate_token(0.0, "negotiateVersion=1");
    sim.open(29.9, 1, &format!("id={token}")).unwrap();
    sim.frame(29.95, 1, handshake(HubProtocol::Json, 1));
    sim.timeout(30.0);
    assert_eq!(sim.server.state_of(ConnId(1)), Some(ConnState::Open));
}

#[test]
fn a_socket_without_id_is_a_skip_negotiation_connection() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "access_token=abc123.s3cret").unwrap();
    sim.open(0.0, 2, "id=").unwrap();
    assert_eq!(sim.server.state_of(ConnId(1)), Some(ConnState::Handshaking));
    assert_eq!(sim.server.state_of(ConnId(2)), Some(ConnState::Handshaking));
    assert_eq!(
        sim.server.connections().collect::<Vec<_>>(),
        vec![(ConnId(1), NODE), (ConnId(2), NODE)]
    );
}

#[test]
fn too_many_unused_negotiations_of_one_node_are_429() {
    let mut sim = Sim::with(HubServerConfig {
        max_pending_negotiations: 2,
        ..HubServerConfig::default()
    });
    let token = sim.negotiate_token(0.0, "negotiateVersion=1");
    sim.negotiate_token(0.0, "negotiateVersion=1");
    let refused = sim.negotiate(0.0, "negotiateVersion=1");
    assert_eq!(refused.status, 429);
    assert_eq!(
        body(&refused),
        "{\"error\":\"Too many pending negotiations for this node\"}"
    );
    // Another node is not affected; using an id frees a place.
    let now = sim.at(0.0);
    let other = sim
        .server
        .negotiate(now, "other", "negotiateVersion=1", &mut sim.rng);
    assert_eq!(other.status, 200);
    sim.open(1.0, 1, &format!("id={token}")).unwrap();
    assert_eq!(sim.negotiate(1.0, "negotiateVersion=1").status, 200);
}

#[test]
fn a_socket_number_in_use_is_refused_with_500() {
    let mut sim = Sim::new();
    sim.open(0.0, 1, "").unwrap();
    let refused = sim.open(1.0, 1, "").unwrap_err();
    assert_eq!(refused.status, 500);
    assert_eq!(sim.server.connection_count(), 1);
}

#[test]
fn the_id_of_an_ended_connection_is_404() {
    let mut sim = Sim::new();
    let token = sim.negotiate_token(0.0, "negotiateVersion=1");
    sim.open(1.0, 1, &format!("id={token}")).unwrap();
    sim.frame(2.0, 1, handshake(HubProtocol::Json, 1));
    let step = sim.closed(3.0, 1, None);
    assert_eq!(
        disconnects(&step),
        vec![(
            ConnId(1),
            DisconnectReason::SocketClosed { code: None },
            false
        )]
    );
    assert!(step.out.is_empty());
    assert_eq!(
        sim.open(4.0, 2, &format!("id={token}")).unwrap_err().status,
        404
    );
}

#[test]
fn the_server_never_prints_a_connection_token() {
    let mut sim = Sim::new();
    let token = sim.negotiate_token(0.0, "negotiateVersion=1&useStatefulReconnect=true");
    sim.open(0.0, 1, &format!("id={token}")).unwrap();
    let printed = format!("{:?}", sim.server);
    assert!(!printed.contains(&token), "{printed}");
}
