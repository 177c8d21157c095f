//! A small blocking client of the operator API (ureq), for the CLI and the demo.

use std::time::Duration;

use serde_json::{json, Value};

/// Requests that do not wait for a command give up after this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A waiting dispatch gets the command's timeout plus this.
const WAIT_MARGIN: Duration = Duration::from_secs(10);
/// The largest answer read (a command's result is at most 64 MiB of JSON).
const MAX_ANSWER: u64 = 80 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the gateway at {url}: {detail}")]
    Transport { url: String, detail: String },
    /// The gateway refused: its status and its `error` message.
    #[error("the gateway answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("the gateway's answer cannot be read: {0}")]
    Decode(String),
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The operator API of one gateway, with its admin token.
pub struct OperatorClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl OperatorClient {
    pub fn new(base_url: &str, admin_token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .into();
        OperatorClient {
            base: base_url.trim_end_matches('/').to_string(),
            token: admin_token.trim().to_string(),
            agent,
        }
    }

    /// A client of an HTTPS gateway whose certificate is signed by one of `pem`'s certificates
    /// (a private CA, or the gateway's self-signed certificate) instead of the public roots.
    pub fn with_root_certs_pem(
        base_url: &str,
        admin_token: &str,
        pem: &[u8],
    ) -> Result<Self, ClientError> {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
            .map(|c| c.map(|c| ureq::tls::Certificate::from_der(&c).to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ClientError::Decode(format!("the root certificates: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::Decode("no certificate in the PEM".into()));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .tls_config(tls)
            .build()
            .into();
        Ok(OperatorClient {
            base: base_url.trim_end_matches('/').to_string(),
            token: admin_token.trim().to_string(),
            agent,
        })
    }

    pub fn nodes(&self) -> Result<Vec<Value>, ClientError> {
        array(self.get("/api/admin/nodes")?)
    }

    pub fn node(&self, node: &str) -> Result<Value, ClientError> {
        self.get(&format!("/api/admin/nodes/{}", escape(node)))
    }

    pub fn pairings(&self) -> Result<Vec<Value>, ClientError> {
        array(self.get("/api/admin/pairings")?)
    }

    pub fn approve(&self, code: &str, scopes: &[String]) -> Result<(), ClientError> {
        let path = format!("/api/admin/pairings/{}/approve", escape(code));
        self.post(&path, &json!({ "scopes": scopes }), REQUEST_TIMEOUT)
            .map(drop)
    }

    pub fn reject(&self, code: &str) -> Result<(), ClientError> {
        let path = format!("/api/admin/pairings/{}/reject", escape(code));
        self.post(&path, &json!({}), REQUEST_TIMEOUT).map(drop)
    }

    pub fn revoke(&self, node: &str, reason: &str) -> Result<(), ClientError> {
        let path = format!("/api/admin/nodes/{}/revoke", escape(node));
        self.post(&path, &json!({ "reason": reason }), REQUEST_TIMEOUT)
            .map(drop)
    }

    pub fn set_scopes(&self, node: &str, scopes: &[String]) -> Result<(), ClientError> {
        let path = format!("/api/admin/nodes/{}/scopes", escape(node));
        self.post(&path, &json!({ "scopes": scopes }), REQUEST_TIMEOUT)
            .map(drop)
    }

    /// Dispatches `command`; `wait`: blocks for its outcome (the command's JSON with `status`
    /// `finished`, `ok` and `result`), else returns `{"commandId": ...}` at once.
    pub fn send(
        &self,
        node: &str,
        command: &str,
        params: Value,
        timeout: Duration,
        wait: bool,
    ) -> Result<Value, ClientError> {
        let body = json!({
            "node": node,
            "command": command,
            "params": params,
            "timeoutMs": u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            "wait": wait,
        });
        let limit = if wait {
            timeout.saturating_add(WAIT_MARGIN)
        } else {
            REQUEST_TIMEOUT
        };
        self.post("/api/admin/commands", &body, limit)
    }

    /// A command's status, with its outcome once finished.
    pub fn command(&self, command_id: &str) -> Result<Value, ClientError> {
        self.get(&format!("/api/admin/commands/{}", escape(command_id)))
    }

    pub fn cancel(&self, command_id: &str) -> Result<(), ClientError> {
        let path = format!("/api/admin/commands/{}/cancel", escape(command_id));
        self.post(&path, &json!({}), REQUEST_TIMEOUT).map(drop)
    }

    fn get(&self, path: &str) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let answer = self
            .agent
            .get(&url)
            .header("authorization", &format!("Bearer {}", self.token))
            .call();
        self.answer(&url, answer)
    }

    fn post(&self, path: &str, body: &Value, timeout: Duration) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let answer = self
            .agent
            .post(&url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("authorization", &format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .send(body.to_string());
        self.answer(&url, answer)
    }

    fn answer(
        &self,
        url: &str,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ClientError> {
        let mut response = answer.map_err(|e| ClientError::Transport {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| ClientError::Decode(e.to_string()))?
        };
        if (200..300).contains(&status) {
            Ok(value)
        } else {
            let message = value
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| text.trim().to_string(), str::to_string);
            Err(ClientError::Api { status, message })
        }
    }
}

fn array(value: Value) -> Result<Vec<Value>, ClientError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(ClientError::Decode(format!(
            "expected a JSON array, got {other}"
        ))),
    }
}

/// Escapes a path segment (ids are plain, but nothing may break the route).
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
