//! The LLM dialect's gateway checks per-node tokens with the hub gateway's node book, so that a
//! node paired and approved once may connect with either dialect (docs/protocol.md 8.12).

use std::time::Instant;

use super::Gateway;
use crate::gateway::auth::AuthError;
use crate::gateway::llm::NodeTokenCheck;
use crate::gateway::Source;

impl NodeTokenCheck for Gateway {
    /// Exactly the hub's check (section 10.2), with its failure budgets: a wrong token counts
    /// against `source`, a revoked node is refused.
    fn check_node_token(
        &mut self,
        now: Instant,
        token: &str,
        source: &Source,
    ) -> Result<String, AuthError> {
        self.book.authenticate(now, token, source)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gateway::auth::{hash_secret, NodeRecord, NodeState};
    use crate::gateway::{GatewayConfig, StoreRecord};

    fn record(node_id: &str, secret: &str, state: NodeState) -> StoreRecord {
        StoreRecord::Node(Box::new(NodeRecord {
            node_id: node_id.into(),
            secret_sha256: hash_secret(secret),
            state,
            scopes: Vec::new(),
            name: None,
            platform: None,
            paired_at_unix_ms: 0,
        }))
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // an arbitrary origin for a simulated clock
    fn per_node_tokens_are_checked_by_the_node_book() {
        let now = Instant::now();
        let mut gateway = Gateway::new(
            GatewayConfig::new("http://gw"),
            now,
            Duration::from_secs(1_700_000_000),
            [7; 32],
        )
        .unwrap();
        let revoked = NodeState::Revoked {
            reason: "gone".into(),
            at_unix_ms: None,
        };
        gateway
            .restore(
                now,
                [
                    record("n1", "s3cret", NodeState::Approved),
                    record("n2", "other", revoked),
                ],
            )
            .unwrap();
        let source = Source("10.0.0.1".into());
        assert_eq!(
            gateway.check_node_token(now, "n1.s3cret", &source),
            Ok("n1".to_string())
        );
        assert!(gateway.check_node_token(now, "n1.wrong", &source).is_err());
        assert!(gateway.check_node_token(now, "n2.other", &source).is_err());
        assert!(gateway
            .check_node_token(now, "not-a-token", &source)
            .is_err());
    }
}
