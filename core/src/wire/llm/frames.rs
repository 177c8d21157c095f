//! Node -> server frames: binary result frames and the text heartbeat.

/// The heartbeat: an empty text frame.
pub const HEARTBEAT: &str = "";

/// Bytes of the big-endian task id that opens every result frame.
pub const TASK_ID_LEN: usize = 4;

/// A text frame from a node, as a server classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeText<'a> {
    /// The empty frame: the node is alive.
    Heartbeat,
    /// Any other text. The dialect defines none: a server ignores it and reports it (the
    /// original server logs it); it still proves the node is alive.
    Unexpected(&'a str),
}

/// Classifies a text frame from a node.
pub fn decode_node_text(text: &str) -> NodeText<'_> {
    if text.is_empty() {
        NodeText::Heartbeat
    } else {
        NodeText::Unexpected(text)
    }
}

/// A binary result frame: `[u32 big-endian task id][UTF-8 text]`. `text: None` (the id alone)
/// means the task is finished; a data frame's text is never empty, because an empty one would
/// read as "finished".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResultFrame<'a> {
    pub id: u32,
    pub text: Option<&'a str>,
}

/// `ResultFrame::encode` was asked to write a data frame with empty text, which would be read as
/// the finished frame. A caller error: skip empty text, or send `ResultFrame::finished`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "result frame for task {id}: text is empty; an empty data frame would read as \"finished\""
)]
pub struct EmptyResultText {
    pub id: u32,
}

/// Why a binary frame from a node is not a valid result frame.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResultFrameError {
    /// Fewer than 4 bytes: there is no task id to attribute the frame to.
    #[error("result frame of {len} bytes is shorter than the 4-byte task id")]
    TooShort { len: usize },
    /// The text after the id is not valid UTF-8 on its own (a character was cut across frames,
    /// or the bytes are not text). `valid_up_to` counts text bytes, after the id.
    #[error("result frame for task {id}: text is not valid UTF-8 (valid up to byte {valid_up_to} of the text); each frame must hold whole characters")]
    NotUtf8 { id: u32, valid_up_to: usize },
}

impl ResultFrameError {
    /// The task id, when the frame had one.
    pub fn id(&self) -> Option<u32> {
        match self {
            ResultFrameError::TooShort { .. } => None,
            ResultFrameError::NotUtf8 { id, .. } => Some(*id),
        }
    }
}

impl<'a> ResultFrame<'a> {
    /// A data frame carrying `text` for task `id`.
    pub fn data(id: u32, text: &'a str) -> ResultFrame<'a> {
        ResultFrame {
            id,
            text: Some(text),
        }
    }

    /// The finished frame for task `id`.
    pub fn finished(id: u32) -> ResultFrame<'static> {
        ResultFrame { id, text: None }
    }

    /// Whether this is the finished frame.
    pub fn is_finished(&self) -> bool {
        self.text.is_none()
    }

    /// Appends the frame's bytes to `out` (which is not cleared, so a caller may reuse a buffer).
    /// Nothing is written on error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EmptyResultText> {
        if self.text == Some("") {
            return Err(EmptyResultText { id: self.id });
        }
        let text = self.text.unwrap_or("");
        out.reserve(TASK_ID_LEN + text.len());
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// The frame's bytes in a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EmptyResultText> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes a binary frame from a node; the text borrows from `bytes`.
    pub fn decode(bytes: &'a [u8]) -> Result<ResultFrame<'a>, ResultFrameError> {
        let Some((id, text)) = bytes.split_first_chunk::<TASK_ID_LEN>() else {
            return Err(ResultFrameError::TooShort { len: bytes.len() });
        };
        let id = u32::from_be_bytes(*id);
        if text.is_empty() {
            return Ok(ResultFrame::finished(id));
        }
        match std::str::from_utf8(text) {
            Ok(text) => Ok(ResultFrame::data(id, text)),
            Err(e) => Err(ResultFrameError::NotUtf8 {
                id,
                valid_up_to: e.valid_up_to(),
            }),
        }
    }
}
