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
