//! Helpers shared by core's integration tests.
#![allow(dead_code)] // each test file uses a subset

/// Shows text frame bytes as they are pinned in snapshots and in docs/protocol.md: UTF-8 text as
/// is, the 0x1E record separator and other control bytes as `\xNN` escapes.
pub fn text(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c as u32) < 0x20 || c as u32 == 0x7f {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Shows binary frame bytes as lowercase hex pairs separated by spaces.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A virtual clock for tests: every instant is an offset from ONE real `Instant`, taken once,
/// so tests state exact times (`clock.at(30.0)`) and never sleep.
#[derive(Clone, Copy, Debug)]
pub struct SimClock {
    pub origin: std::time::Instant,
}

impl Default for SimClock {
    fn default() -> Self {
        Self::new()
    }
}

impl SimClock {
    #[allow(clippy::disallowed_methods)] // the one real clock read: an arbitrary origin
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }

    /// The instant `secs` seconds after the origin (nanosecond precision for small values).
    pub fn at(&self, secs: f64) -> std::time::Instant {
        self.origin + std::time::Duration::from_secs_f64(secs)
    }

    /// Seconds from the origin to `at`, for readable assertion messages.
    pub fn secs(&self, at: std::time::Instant) -> f64 {
        at.duration_since(self.origin).as_secs_f64()
    }
}
/// The hub messages of one WebSocket frame sent after the handshake (by either side). Checks
/// what every sender must guarantee: the frame kind matches the protocol (JSON in Text,
/// MessagePack in Binary), the frame holds whole records only, and at least one.
pub fn decode_frame(
    protocol: nodelink_core::wire::signalr::HubProtocol,
    frame: &nodelink_core::node::WsFrame,
) -> Result<Vec<nodelink_core::wire::signalr::HubMessage>, String> {
    use nodelink_core::node::WsFrame;
    use nodelink_core::wire::signalr::framing::RecordDecoder;
    use nodelink_core::wire::signalr::HubProtocol;
    match (protocol, frame) {
        (HubProtocol::Json, WsFrame::Text(_)) | (HubProtocol::MessagePack, WsFrame::Binary(_)) => {}
        _ => {
            return Err(format!(
                "{protocol:?} sent in the wrong frame kind: {frame:?}"
            ))
        }
    }
    let mut decoder = RecordDecoder::new(usize::MAX);
    decoder.set_protocol(protocol);
    decoder.push(frame.as_bytes());
    let mut messages = Vec::new();
    while let Some(message) = decoder.next_message().map_err(|e| e.to_string())? {
        messages.push(message);
    }
    if decoder.buffered_len() != 0 {
        return Err(format!("a frame ends inside a record: {frame:?}"));
    }
    if messages.is_empty() {
        return Err("an empty frame".to_owned());
    }
    Ok(messages)
}

pub mod sim;
pub mod world;
