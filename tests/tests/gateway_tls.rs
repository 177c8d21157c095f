//! TLS: a self-signed certificate made at test time; pairing REST, the operator API (through
//! `OperatorClient`) and the metrics over HTTPS; plain HTTP and bad files are refused.
mod gateway_support;

use std::time::Duration;

use gateway_support::Scratch;
use nodelink::gateway::{OperatorClient, ServerConfig, ServerError, TlsFiles};
use serde_json::json;

fn tls_files(scratch: &Scratch) -> (TlsFiles, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("a certificate");
    let cert_pem = certified.cert.pem();
    let files = TlsFiles {
        cert: scratch.0.join("cert.pem"),
        key: scratch.0.join("key.pem"),
    };
    std::fs::write(&files.cert, &cert_pem).expect("written");
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).expect("written");
    (files, cert_pem)
}

fn config(scratch: &Scratch, tls: TlsFiles) -> ServerConfig {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("addr"), scratch.db());
    config.tls = Some(tls);
    config.threads = Some(2);
    config
}

#[test]
fn pairing_operator_api_and_metrics_over_https() {
    let scratch = Scratch::new("tls");
    let (files, cert_pem) = tls_files(&scratch);
    let gateway = nodelink::gateway::start(config(&scratch, files)).expect("starts");
    let url = gateway.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let client =
        OperatorClient::with_root_certs_pem(&url, gateway.admin_token(), cert_pem.as_bytes())
            .expect("a client");

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(vec![
                    ureq::tls::Certificate::from_pem(cert_pem.as_bytes()).expect("pem"),
                ])))
                .build(),
        )
        .build()
        .into();
    let mut answer = agent
        .post(&format!("{url}/api/nodes/me/pair"))
        .header("content-type", "application/json")
        .send(json!({"nodeId": "n1", "pairingSecret": "tls-secret-0123456789"}).to_string())
        .expect("pairs over TLS");
    assert_eq!(answer.status().as_u16(), 200);
    let body = answer.body_mut().read_to_string().expect("text");
    assert!(body.contains("\"pending\""), "{body}");

    let pairings = client.pairings().expect("the operator API over TLS");
    assert_eq!(pairings.len(), 1);
    assert_eq!(pairings[0]["nodeId"], "n1");
    let metrics = agent
        .get(&format!("{url}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    assert!(
        metrics.contains("nodelink_http_requests_total"),
        "{metrics}"
    );

    // Plain HTTP on the TLS port gets no answer, and the default roots do not trust it.
    let plain = url.replace("https://", "http://");
    assert!(agent.get(&format!("{plain}/metrics")).call().is_err());
    assert!(OperatorClient::new(&url, gateway.admin_token())
        .pairings()
        .is_err());
    gateway.shutdown();
}

#[test]
fn missing_or_bad_tls_files_are_refused_at_start() {
    let scratch = Scratch::new("tls-bad");
    let (files, _) = tls_files(&scratch);
    let missing = TlsFiles {
        cert: scratch.0.join("nope.pem"),
        key: files.key.clone(),
    };
    assert!(matches!(
        nodelink::gateway::start(config(&scratch, missing)),
        Err(ServerError::Tls(_))
    ));
    // The certificate given as the key: no private key in it.
    let swapped = TlsFiles {
        cert: files.cert.clone(),
        key: files.cert.clone(),
    };
    let error = nodelink::gateway::start(config(&scratch, swapped)).err();
    assert!(matches!(error, Some(ServerError::Tls(_))), "{error:?}");
}

/// A smol node behind a private CA: pairs over HTTPS, then its hub link is a `wss://` WebSocket
/// through the same TLS acceptor, and the gateway sees it online.
#[test]
fn a_node_pairs_and_connects_over_wss_trusting_a_private_ca() {
    use nodelink_core::node::executor::ExecutorSet;
    use nodelink_core::node::{Dialect, Identity, NodeConfig, NodeEvent, Transport};
    use nodelink_core::wire::signalr::HubProtocol;

    let scratch = Scratch::new("tls-node");
    let (files, cert_pem) = tls_files(&scratch);
    let ca_file = files.cert.clone();
    let gateway = nodelink::gateway::start(config(&scratch, files)).expect("starts");
    let url = gateway.url();
    let client =
        OperatorClient::with_root_certs_pem(&url, gateway.admin_token(), cert_pem.as_bytes())
            .expect("a client");

    let dialect = Dialect::Hub {
        protocol: HubProtocol::Json,
        transport: Transport::WebSocket,
    };
    let identity = Identity::Unpaired {
        node_id: Some("tls-node".into()),
    };
    let mut node = NodeConfig::new(url.clone(), dialect, identity);
    node.heartbeat_interval = Duration::from_millis(300);
    let mut runtime = nodelink::node::RuntimeConfig::new(node);
    runtime.tls.extra_ca_pem = Some(ca_file);
    runtime.tls.skip_platform_roots = true;
    runtime.state_dir = Some(nodelink::node::StateDir::new(scratch.0.join("node-state")));
    let handle = nodelink::node::spawn_node(runtime, ExecutorSet::new()).expect("node starts");

    let next = |what: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match handle.next_event(left) {
                Some(NodeEvent::PairingCode(code)) if what == "code" => return code,
                Some(NodeEvent::Connected { protocol_version }) if what == "connected" => {
                    return protocol_version
                }
                Some(_) => {}
                None => panic!("no {what} event within 10 s"),
            }
        }
    };
    let code = next("code");
    client.approve(&code, &[]).expect("approved over TLS");
    assert_eq!(next("connected"), "2026-04-01");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let node = client.node("tls-node").expect("the node's view");
        if node["online"] == true && node["lastHeartbeat"].is_object() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never online: {node}");
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.stop();
    assert!(handle.wait().is_success());
    gateway.shutdown();
}
