//! The node's HTTP client: pairing, polling, the REST heartbeat and the hub's negotiate, as the
//! machine asks for them ([`HttpCall`]). ureq is blocking, so every call runs on
//! `smol::unblock`; the machine keeps at most one request per sub-machine in flight, so a handful
//! of blocking threads is the most this ever takes.

use std::time::Duration;

use nodelink_core::node::http::{HttpCall, HttpError, HttpResponse, HttpResult, Method};

use super::tls::TrustRoots;

/// The largest response body read; a larger one is a failed request (the machine retries).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// A ureq agent with the node's trust roots and timeouts. Cheap to clone (the agent is shared).
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
}

impl HttpClient {
    /// `timeout`: the whole call, connect to last body byte (a request that takes longer is
    /// reported as failed and the machine's retry rules apply).
    pub fn new(roots: &TrustRoots, timeout: Duration) -> HttpClient {
        let certs = roots
            .certs
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
            .collect::<Vec<_>>();
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
            .build();
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .tls_config(tls)
            .user_agent(format!("nodelink/{}", env!("CARGO_PKG_VERSION")))
            .build();
        HttpClient {
            agent: config.new_agent(),
        }
    }

    /// Makes `call` to `url`, blocking. Any status is an answer; only a transport failure is an
    /// `HttpError` (its text never contains the bearer token).
    pub fn call_blocking(&self, url: &str, call: &HttpCall) -> HttpResult {
        let bearer = call.bearer.as_ref().map(|token| token.bearer());
        let response = match call.method {
            Method::Get => {
                let mut request = self.agent.get(url);
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer.as_str());
                }
                request.call()
            }
            Method::Post => {
                let mut request = self.agent.post(url);
                if let Some(bearer) = &bearer {
                    request = request.header("Authorization", bearer.as_str());
                }
                match &call.body {
                    Some(body) => request
                        .content_type("application/json")
                        .send(body.as_slice()),
                    None => request.send_empty(),
                }
            }
        };
        let response = response.map_err(|e| HttpError(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|e| HttpError(format!("reading the answer ({status}): {e}")))?;
        Ok(HttpResponse { status, body })
    }

    /// [`HttpClient::call_blocking`] on smol's blocking pool.
    pub async fn call(&self, url: String, call: HttpCall) -> HttpResult {
        let client = self.clone();
        smol::unblock(move || client.call_blocking(&url, &call)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::tls::TlsOptions;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-shot HTTP server: answers the first request with `answer` and returns what it read.
    fn one_shot(answer: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the body (Content-Length) is complete.
            loop {
                let n = socket.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            socket.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&seen).to_string()
        });
        (url, handle)
    }

    fn client() -> HttpClient {
        let roots = TrustRoots::load(&TlsOptions {
            extra_ca_pem: None,
            skip_platform_roots: true,
        })
        .unwrap();
        HttpClient::new(&roots, Duration::from_secs(5))
    }

    #[test]
    fn a_post_carries_the_bearer_and_json_and_any_status_is_an_answer() {
        let (url, server) = one_shot(
            "HTTP/1.1 409 Conflict\r\nContent-Length: 20\r\nConnection: close\r\n\r\n{\"error\":\"conflict\"}",
        );
        let token = nodelink_core::wire::rest::NodeToken::parse("n1.s3cret").unwrap();
        let call = HttpCall {
            method: Method::Post,
            path: "/api/nodes/me/heartbeat".into(),
            bearer: Some(token),
            body: Some(b"{\"a\":1}".to_vec()),
        };
        let answer = client()
            .call_blocking(&format!("{url}/api/nodes/me/heartbeat"), &call)
            .unwrap();
        assert_eq!(answer.status, 409);
        assert_eq!(answer.body, b"{\"error\":\"conflict\"}".to_vec());
        let seen = server.join().unwrap();
        assert!(
            seen.starts_with("POST /api/nodes/me/heartbeat HTTP/1.1"),
            "{seen}"
        );
        assert!(
            seen.contains("authorization: Bearer n1.s3cret")
                || seen.contains("Authorization: Bearer n1.s3cret"),
            "{seen}"
        );
        assert!(
            seen.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{seen}"
        );
        assert!(seen.ends_with("{\"a\":1}"), "{seen}");
    }

    #[test]
    fn a_refused_connection_is_an_error_without_the_token() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", listener.local_addr().unwrap());
        drop(listener);
        let token = nodelink_core::wire::rest::NodeToken::parse("n1.topsecret").unwrap();
        let call = HttpCall {
            method: Method::Get,
            path: "/x".into(),
            bearer: Some(token),
            body: None,
        };
        let error = client().call_blocking(&url, &call).unwrap_err();
        assert!(!error.0.contains("topsecret"), "{error}");
    }
}
