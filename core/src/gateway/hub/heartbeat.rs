//! Heartbeats kept as text: the hub's answer to the gateway's hottest record.
//!
//! With [`HubServer::set_raw_heartbeats`] on, a JSON Heartbeat invocation of the usual shape is
//! checked by [`scan_heartbeat_with`] and handed over as a [`RawHeartbeat`] (its argument's text and
//! its `capabilities.slots`) instead of a decoded [`HeartbeatDto`]. Its `capabilities` object is
//! decoded only when its bytes differ from the last ones decoded on the connection (nodes send
//! the same capabilities every time). Anything unusual takes the general path and arrives as
//! [`HubServerEvent::Call`](super::HubServerEvent::Call), as it does with the switch off.
//!
//! The usual case is read straight from the shell's frame: a Text frame that is exactly one
//! Heartbeat record as nodes write it, on an open connection with nothing buffered, is matched
//! by the template scan ([`usual_heartbeat`]) without being copied into the connection's decoder
//! and without a UTF-8 check (a Text frame is a `String`). Any other frame goes through the
//! decoder as before.

use crate::wire::dto::{Capabilities, HeartbeatDto};
use crate::wire::signalr::json::{scan_heartbeat_with, usual_heartbeat, HeartbeatScan};

use super::HubServer;

/// A Heartbeat whose argument was checked to decode as a [`HeartbeatDto`], kept as its JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHeartbeat {
    json: String,
    slots: Option<u32>,
}

impl RawHeartbeat {
    /// `capabilities.slots`; `None` when the heartbeat has no `capabilities`.
    pub fn slots(&self) -> Option<u32> {
        self.slots
    }

    /// The argument's JSON text, as received.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The heartbeat decoded. Only a heartbeat made by hand can fail: the hub checked its own.
    pub fn decode(&self) -> Result<HeartbeatDto, serde_json::Error> {
        serde_json::from_str(&self.json)
    }
}

/// The last `capabilities` decoded on a connection: their text and their `slots`.
#[derive(Debug, Default)]
pub(super) struct CapabilitiesMemo {
    json: Vec<u8>,
    slots: u32,
}

/// A Heartbeat record recognized and checked, or `None` for the general path. `memo` holds the
/// connection's last decoded `capabilities`, updated when they change; the text is copied into
/// `spare` when there is one.
pub(super) fn raw_heartbeat(
    record: &[u8],
    memo: &mut Option<CapabilitiesMemo>,
    spare: &mut Option<String>,
) -> Option<RawHeartbeat> {
    let known = memo.as_ref().map(|memo| &memo.json[..]);
    let scan = scan_heartbeat_with(record, known)?;
    Some(RawHeartbeat {
        slots: slots(scan, memo)?,
        json: copy(scan.argument, spare),
    })
}

/// [`raw_heartbeat`] of a record known to be text (from a Text frame) and written as nodes
/// write it ([`usual_heartbeat`]): no UTF-8 check, and `None` for any other spelling.
/// Inlined, so that other records (a CommandResult) are told apart without a call.
#[inline]
pub(super) fn raw_usual_heartbeat(
    record: &str,
    memo: &mut Option<CapabilitiesMemo>,
    spare: &mut Option<String>,
) -> Option<RawHeartbeat> {
    let known = memo.as_ref().map(|memo| &memo.json[..]);
    let (scan, is_known) = usual_heartbeat(record, known)?;
    let slots = match (scan.capabilities, &*memo) {
        (Some(_), Some(memo)) if is_known => Some(memo.slots),
        _ => slots(scan, memo)?,
    };
    Some(RawHeartbeat {
        json: copy(scan.argument, spare),
        slots,
    })
}

/// The heartbeat's `capabilities.slots`, decoding the capabilities unless they are the ones in
/// `memo` (which then holds them); `None` if they do not decode.
fn slots(scan: HeartbeatScan<'_>, memo: &mut Option<CapabilitiesMemo>) -> Option<Option<u32>> {
    Some(match scan.capabilities {
        None => None,
        Some(json) => match memo {
            Some(memo) if memo.json == json.as_bytes() => Some(memo.slots),
            _ => {
                // New capabilities: decoded here, so that a bad one is reported precisely by the
                // general path, as it would be without this one.
                let capabilities: Capabilities = serde_json::from_str(json).ok()?;
                let memo = memo.get_or_insert_with(CapabilitiesMemo::default);
                memo.json.clear();
                memo.json.extend_from_slice(json.as_bytes());
                memo.slots = capabilities.slots;
                Some(capabilities.slots)
            }
        },
    })
}

/// `argument` as an owned string, in the spare buffer when there is one.
fn copy(argument: &str, spare: &mut Option<String>) -> String {
    match spare.take() {
        Some(mut buffer) => {
            buffer.clear();
            buffer.push_str(argument);
            buffer
        }
        None => argument.to_owned(),
    }
}

impl HubServer {
    /// Whether JSON Heartbeats arrive as [`HubServerEvent::Heartbeat`](super::HubServerEvent::Heartbeat)
    /// (kept as text, see [`RawHeartbeat`]) rather than decoded in a `Call`. Off by default.
    pub fn set_raw_heartbeats(&mut self, on: bool) {
        self.shared.raw_heartbeats = on;
    }

    /// Hands back a raw heartbeat the caller no longer needs (one it replaced): its buffer
    /// holds the next one's text, so that a steady stream of heartbeats allocates nothing.
    pub fn recycle_heartbeat(&mut self, heartbeat: RawHeartbeat) {
        self.shared.spare_heartbeat = Some(heartbeat.json);
    }
}
