//! Connect requests: 4001, 4002, shared and per-node tokens, replacement.

use super::*;
use nodelink_core::gateway::auth::AuthError;
use nodelink_core::gateway::llm::{
    Credential, GoneBecause, LlmUsageError, NoNodeTokens, Refusal, TaskError,
};
use nodelink_core::wire::llm::{ConnectError, NodeIdentity};

fn close_line(out: &[LlmGatewayOutput]) -> String {
    let closes = closes(out);
    assert_eq!(closes.len(), 1, "one close: {out:?}");
    format!("{} {}", closes[0].1, closes[0].2)
}

#[test]
fn a_node_with_the_shared_token_is_accepted() {
    let mut g = Gw::new();
    let out = g.node(0.0, 1, MODEL, "rig 1", 2);
    assert_eq!(
        out,
        vec![LlmGatewayOutput::Event(LlmGatewayEvent::NodeAccepted {
            conn: ConnId(1),
            identity: NodeIdentity {
                model: MODEL.to_owned(),
                name: "rig 1".to_owned()
            },
            max_concurrency: 2,
            credential: Credential::Shared,
        })]
    );
    let nodes = g.gw.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].max_concurrency, 2);
}

#[test]
fn missing_or_invalid_parameters_close_with_4001() {
    let cases = [
        ("/ws", vec!["token", "model", "max_concurrency", "name"]),
        ("/ws?model=m&max_concurrency=1&name=n", vec!["token"]),
        ("/ws?token=s3cr%3Dt&max_concurrency=1&name=n", vec!["model"]),
        ("/ws?token=s3cr%3Dt&model=m&name=n", vec!["max_concurrency"]),
        ("/ws?token=s3cr%3Dt&model=m&max_concurrency=1", vec!["name"]),
        (
            "/ws?token=s3cr%3Dt&model=&max_concurrency=1&name=n",
            vec!["model"],
        ),
    ];
    for (i, (target, missing)) in cases.into_iter().enumerate() {
        let mut g = Gw::new();
        let out = g.connect(1.0, i as u64, target);
        assert_eq!(closes(&out)[0].1, 4001, "{target}");
        assert_eq!(
            events(&out),
            vec![LlmGatewayEvent::NodeRefused {
                conn: ConnId(i as u64),
                refusal: Refusal::Parameters(ConnectError::MissingParameters { names: missing }),
            }],
            "{target}"
        );
        assert!(g.gw.nodes().is_empty());
    }
    for bad in ["0", "-1", "x", "4.0", "99999999999"] {
        let mut g = Gw::new();
        let out = g.connect(
            1.0,
            1,
            &format!("/ws?token=s3cr%3Dt&model=m&max_concurrency={bad}&name=n"),
        );
        assert_eq!(closes(&out)[0].1, 4001, "{bad}");
        assert!(g.gw.nodes().is_empty());
    }
    // The close a node sees, pinned.
    let mut g = Gw::new();
    let out = g.connect(1.0, 1, "/ws?model=llama-3-8b&max_concurrency=2");
    insta::assert_snapshot!("gwllm_close_4001", close_line(&out));
}

#[test]
fn a_bad_token_closes_with_4002_and_never_echoes_it() {
    let mut g = Gw::new();
    let out = g.connect(
        0.0,
        1,
        "/ws?token=wrong-secret&model=m&max_concurrency=1&name=n",
    );
    insta::assert_snapshot!("gwllm_close_4002", close_line(&out));
    let [LlmGatewayEvent::NodeRefused {
        refusal: Refusal::Token(error),
        ..
    }] = &events(&out)[..]
    else {
        panic!("{out:?}")
    };
    assert!(!format!("{out:?}").contains("wrong-secret"));
    assert!(matches!(error, AuthError::Malformed(_)));
    assert!(g.gw.nodes().is_empty());
    // A near miss of the shared token (a prefix, one more byte) is refused too.
    for token in ["s3cr", "s3cr%3Dtt", "S3cr%3Dt"] {
        let out = g.connect(
            0.0,
            2,
            &format!("/ws?token={token}&model=m&max_concurrency=1&name=n"),
        );
        assert_eq!(closes(&out)[0].1, 4002, "{token}");
    }
}

#[test]
fn per_node_tokens_are_checked_with_the_node_book() {
    let mut g = Gw::new();
    let out = g.connect(
        0.0,
        1,
        &format!("/ws?token=n1.{SECRET}&model=m&max_concurrency=1&name=n"),
    );
    let [LlmGatewayEvent::NodeAccepted { credential, .. }] = &events(&out)[..] else {
        panic!("{out:?}")
    };
    assert_eq!(credential, &Credential::Node("n1".to_owned()));
    let out = g.connect(
        0.0,
        2,
        "/ws?token=n1.not-the-secret&model=m&max_concurrency=1&name=o",
    );
    assert_eq!(closes(&out)[0].1, 4002);
    assert!(matches!(
        &events(&out)[..],
        [LlmGatewayEvent::NodeRefused {
            refusal: Refusal::Token(AuthError::BadSecret { .. }),
            ..
        }]
    ));
    // Revoked in the book: refused from then on.
    g.book.revoke(g.at(1.0), "n1", "stolen").unwrap();
    let out = g.connect(
        2.0,
        3,
        &format!("/ws?token=n1.{SECRET}&model=m&max_concurrency=1&name=p"),
    );
    assert!(matches!(
        &events(&out)[..],
        [LlmGatewayEvent::NodeRefused {
            refusal: Refusal::Token(AuthError::Revoked { .. }),
            ..
        }]
    ));
}

#[test]
fn without_a_shared_token_only_node_tokens_count() {
    let mut g = Gw::with(LlmGatewayConfig::default());
    let out = g.connect(
        0.0,
        1,
        "/ws?token=s3cr%3Dt&model=m&max_concurrency=1&name=n",
    );
    assert_eq!(closes(&out)[0].1, 4002);
    // And with a verifier that knows no node, even a well-formed node token is refused.
    let now = g.at(0.0);
    g.gw.handle_connect(
        now,
        ConnId(2),
        &format!("/ws?token=n1.{SECRET}&model=m&max_concurrency=1&name=n"),
        &Source("x".to_owned()),
        &mut NoNodeTokens,
    )
    .unwrap();
    assert_eq!(closes(&g.drain())[0].1, 4002);
}

#[test]
fn a_conn_id_in_use_is_caller_misuse() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "a", 1);
    let now = g.at(0.0);
    let err =
        g.gw.handle_connect(now, ConnId(1), "/ws", &Source("x".into()), &mut g.book)
            .unwrap_err();
    assert_eq!(err, LlmUsageError::ConnInUse(ConnId(1)));
}

#[test]
fn a_new_connection_replaces_the_old_and_takes_its_unstarted_tasks() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "rig", 2);
    let (t1, out1) = g.submit(1.0, MODEL);
    let (t2, out2) = g.submit(1.0, MODEL);
    assert_eq!(sent_tasks(&out1), vec![(1, t1.0)]);
    assert_eq!(sent_tasks(&out2), vec![(1, t2.0)]);

    // The same identity again, with one slot: the old connection goes with 4000 and its tasks
    // are re-sent on the new one (the one slot takes t1; t2 waits for it).
    let out = g.node(5.0, 2, MODEL, "rig", 1);
    insta::assert_snapshot!("gwllm_close_4000", close_line(&out));
    assert_eq!(closes(&out)[0].0, 1);
    assert!(events(&out).contains(&LlmGatewayEvent::NodeGone {
        conn: ConnId(1),
        identity: NodeIdentity {
            model: MODEL.to_owned(),
            name: "rig".to_owned()
        },
        because: GoneBecause::Replaced { by: ConnId(2) },
        requeued: vec![t1, t2],
        failed: vec![],
    }));
    assert_eq!(sent_tasks(&out), vec![(2, t1.0)]);
    assert!(updates(&out).is_empty());
    assert_eq!(g.gw.nodes().len(), 1);
    assert_eq!(g.gw.nodes()[0].running, vec![t1]);

    // Frames still arriving on the replaced connection are ignored.
    assert!(g.data(5.5, 1, t1, b"late").is_empty());
    assert!(g.finished(5.5, 1, t1).is_empty());
    assert!(g.closed(5.5, 1).is_empty());

    // t1 finishes on the new connection; t2 follows at that instant.
    g.data(6.0, 2, t1, b"hello");
    let out = g.finished(6.0, 2, t1);
    assert_eq!(updates(&out)[0], (t1, TaskUpdate::Done));
    assert_eq!(sent_tasks(&out), vec![(2, t2.0)]);
}

#[test]
fn replacement_fails_a_task_whose_text_reached_the_user() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "rig", 2);
    let (t1, _) = g.submit(1.0, MODEL);
    let (t2, _) = g.submit(1.0, MODEL);
    assert_eq!(texts(&g.data(2.0, 1, t1, b"Hel")), vec!["Hel"]);
    let out = g.node(3.0, 2, MODEL, "rig", 2);
    assert_eq!(
        updates(&out),
        vec![(t1, TaskUpdate::Failed(TaskError::NodeLost))]
    );
    assert_eq!(sent_tasks(&out), vec![(2, t2.0)]);
    assert_eq!(TaskError::NodeLost.to_string(), "node disconnected");
    // No stop goes to the replaced connection: it is closed.
    assert!(stops(&out).is_empty());
}

#[test]
fn the_identity_is_the_pair_not_the_joined_string() {
    let mut g = Gw::new();
    g.node(0.0, 1, "a-b", "c", 1);
    let out = g.node(0.0, 2, "a", "b-c", 1);
    assert!(closes(&out).is_empty());
    assert_eq!(g.gw.nodes().len(), 2);
}

#[test]
fn a_refused_connect_never_replaces_a_node() {
    let mut g = Gw::new();
    g.node(0.0, 1, MODEL, "rig", 1);
    let (t, _) = g.submit(0.0, MODEL);
    // The identity of a connected node, with a bad token, then with a bad max_concurrency.
    let out = g.connect(
        1.0,
        2,
        "/ws?token=guess&model=llama-3-8b&max_concurrency=1&name=rig",
    );
    assert_eq!(closes(&out), vec![(2, 4002, "Invalid token".to_owned())]);
    let out = g.connect(
        1.0,
        3,
        "/ws?token=s3cr%3Dt&model=llama-3-8b&max_concurrency=0&name=rig",
    );
    assert_eq!(closes(&out)[0].0, 3);
    assert_eq!(closes(&out)[0].1, 4001);
    let nodes = g.gw.nodes();
    assert_eq!(nodes.len(), 1);
    assert_eq!((nodes[0].conn, &nodes[0].running), (ConnId(1), &vec![t]));
    // What the shell still reports about a refused connection is ignored.
    assert!(g.heartbeat(1.5, 2).is_empty());
    assert!(g.closed(1.5, 2).is_empty());
}
