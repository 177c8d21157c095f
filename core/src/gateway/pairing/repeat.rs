//! Answering a repeat of a known pairing: its status, or its token (minted at the first poll
//! after approval, unwrapped on later ones, reissued after a restart).

use std::time::{Duration, Instant};

use super::{mint, PairReply, PairingBook, PairingEvent, PairingPersist, PairingStage, SettledKey};
use crate::gateway::auth::{hash_secret, NodeBook, NodeRecord, NodeState};
use crate::rng::Rng;
use crate::time::saturating_add;
use crate::wire::rest::{NodeToken, PairResponse, RestErrorCode};

impl PairingBook {
    pub(super) fn repeat_open(
        &mut self,
        now: Instant,
        node_id: &str,
        secret: &str,
        book: &mut NodeBook,
        rng: &mut Rng,
    ) -> PairReply {
        let min = self.config.min_repeat_interval;
        let entry = self.open.get_mut(node_id).expect("the caller found it");
        if let Some(retry) = throttle(&mut entry.last_request, now, min) {
            return PairReply::rate_limited("at most one pairing request per second", retry);
        }
        let scopes = match &entry.record.stage {
            PairingStage::Approved { scopes, .. } => scopes.clone(),
            _ => {
                return PairReply::Answer(PairResponse::Pending {
                    pairing_code: entry.record.code.clone(),
                })
            }
        };
        let mut entry = self.take_open(node_id).expect("the caller found it");
        if book.is_approved(node_id) {
            // Another token of this nodeId was inserted since the approval.
            self.expire_entry(entry);
            return PairReply::refused(RestErrorCode::Conflict, "nodeId is already paired");
        }
        let at = self.clock.unix_ms(now);
        let raw = mint::mint(rng);
        let token = mint::token(node_id, &raw);
        let token_sha256 = hash_secret(token.secret());
        book.put(NodeRecord {
            node_id: node_id.to_owned(),
            secret_sha256: token_sha256,
            state: NodeState::Approved,
            scopes,
            name: entry.record.name.clone(),
            platform: entry.record.platform.clone(),
            paired_at_unix_ms: at,
        });
        entry.record.stage = PairingStage::Delivered {
            token_sha256,
            delivered_at_unix_ms: at,
        };
        entry.wrapped = Some(mint::wrap(&raw, secret));
        self.events.push_back(PairingEvent::Delivered {
            node_id: node_id.to_owned(),
            reissued: false,
        });
        let deadline = entry.expires_at;
        self.settle(entry, deadline);
        self.approved(token)
    }

    pub(super) fn repeat_settled(
        &mut self,
        now: Instant,
        key: SettledKey,
        secret: &str,
        book: &mut NodeBook,
        rng: &mut Rng,
    ) -> PairReply {
        let min = self.config.min_repeat_interval;
        let entry = self.settled.get_mut(&key).expect("the caller found it");
        if let Some(retry) = throttle(&mut entry.last_request, now, min) {
            return PairReply::rate_limited("at most one pairing request per second", retry);
        }
        let token_sha256 = match &entry.record.stage {
            PairingStage::Rejected { reason, .. } => {
                return PairReply::Answer(PairResponse::Rejected {
                    reason: reason.clone(),
                })
            }
            PairingStage::Delivered { token_sha256, .. } => *token_sha256,
            _ => return PairReply::Answer(PairResponse::Expired),
        };
        let current = book
            .get(&key.0)
            .filter(|r| r.is_approved() && r.secret_sha256 == token_sha256)
            .cloned();
        let Some(mut current) = current else {
            // Revoked or paired anew since: this pairing is used up.
            let entry = self.settled.remove(&key).expect("the caller found it");
            self.settled_deadlines.remove(&key);
            self.expire_entry(entry);
            return PairReply::Answer(PairResponse::Expired);
        };
        if let Some(wrapped) = entry.wrapped {
            return self.approved(mint::token(&key.0, &mint::wrap(&wrapped, secret)));
        }
        // Delivered before a restart: the answer was lost with it. Mint a replacement.
        let at = self.clock.unix_ms(now);
        let raw = mint::mint(rng);
        let token = mint::token(&key.0, &raw);
        current.secret_sha256 = hash_secret(token.secret());
        entry.record.stage = PairingStage::Delivered {
            token_sha256: current.secret_sha256,
            delivered_at_unix_ms: at,
        };
        entry.wrapped = Some(mint::wrap(&raw, secret));
        self.persist
            .push_back(PairingPersist::Put(entry.record.clone()));
        book.put(current);
        self.events.push_back(PairingEvent::Delivered {
            node_id: key.0,
            reissued: true,
        });
        self.approved(token)
    }

    fn approved(&self, token: NodeToken) -> PairReply {
        PairReply::Answer(PairResponse::Approved {
            token,
            gateway_url: self.config.gateway_url.clone(),
        })
    }
}

/// Refuses a request within `min` of the previous one of the same pairing; else records it.
fn throttle(last: &mut Option<Instant>, now: Instant, min: Duration) -> Option<Duration> {
    if let Some(previous) = *last {
        let next = saturating_add(previous, min);
        if now < next {
            return Some(next.duration_since(now));
        }
    }
    *last = Some(now);
    None
}
