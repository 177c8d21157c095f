//! The node's HTTP requests (pairing, negotiate, polling, the REST heartbeat) with ureq, each on
//! a helper thread so the loop never blocks; the answer comes back through the [`Notifier`].

use std::time::Duration;

use nodelink_core::node::http::{HttpCall, HttpError, HttpResponse, HttpResult, Method};
use nodelink_core::node::RequestId;
use ureq::Agent;

use crate::notify::{Msg, Notifier};

/// One agent (keep-alive connections shared) for every request of a node.
#[derive(Clone)]
pub(crate) struct HttpClient {
    agent: Agent,
    max_body: u64,
}

impl HttpClient {
    pub(crate) fn new(
        timeout: Duration,
        max_body: u64,
        #[cfg(feature = "tls")] tls: &crate::tls::Tls,
    ) -> HttpClient {
        let config = Agent::config_builder()
            // Every status goes to the machine: it judges 4xx/5xx itself.
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            // ureq's 128 KiB buffers stay allocated with each pooled connection; the node's
            // requests are small JSON (bodies stream past the buffer), so 16 KiB is plenty.
            .input_buffer_size(16 * 1024)
            .output_buffer_size(16 * 1024)
            .max_idle_connections(2)
            .user_agent(concat!("nodelink-node/", env!("CARGO_PKG_VERSION")));
        #[cfg(feature = "tls")]
        let config = config.tls_config(tls.ureq_config());
        HttpClient {
            agent: config.build().into(),
            max_body,
        }
    }

    /// Makes the request on a new thread and reports its result.
    pub(crate) fn start(&self, request: RequestId, url: String, call: HttpCall, notify: Notifier) {
        let client = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nodelink-http".into())
            .spawn({
                let notify = notify.clone();
                move || {
                    let result = client.perform(&url, call);
                    notify.send(Msg::Http { request, result });
                }
            });
        if let Err(e) = spawned {
            notify.send(Msg::Http {
                request,
                result: Err(HttpError(format!("cannot start a request thread: {e}"))),
            });
        }
    }

    fn perform(&self, url: &str, call: HttpCall) -> HttpResult {
        let bearer = call.bearer.as_ref().map(|token| token.bearer());
        let sent = match call.method {
            Method::Get => {
                let mut builder = self.agent.get(url);
                if let Some(bearer) = &bearer {
                    builder = builder.header("Authorization", bearer);
                }
                builder.call()
            }
            Method::Post => {
                let mut builder = self
                    .agent
                    .post(url)
                    .header("Content-Type", "application/json");
                if let Some(bearer) = &bearer {
                    builder = builder.header("Authorization", bearer);
                }
                match &call.body {
                    Some(body) => builder.send(&body[..]),
                    None => builder.send_empty(),
                }
            }
        };
        let mut response = sent.map_err(|e| HttpError(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(self.max_body)
            .read_to_vec()
            .map_err(|e| HttpError(format!("reading the answer: {e}")))?;
        Ok(HttpResponse { status, body })
    }
}
