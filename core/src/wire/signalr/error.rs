//! Decode errors of the hub protocol, shared by the JSON and MessagePack encodings.

/// Why a record or message could not be decoded. Every variant says what a human needs to fix the
/// sender: the message kind, the field, and what was expected.
///
/// Severity: [`DecodeError::is_ignorable`] errors (an unknown message type) are skipped silently
/// as the official clients do; [`DecodeError::is_fatal`] errors mean the byte stream can no longer
/// be delimited and the connection must be closed; every other error loses one record only.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON / MessagePack at all.
    #[error("malformed {encoding}: {detail}")]
    Syntax {
        encoding: &'static str,
        detail: String,
    },
    /// A record or message is not valid UTF-8 where text is required.
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: &'static str },
    /// A required field is absent.
    #[error("{message} message is missing the required field `{field}`")]
    MissingField {
        message: &'static str,
        field: &'static str,
    },
    /// A field is present with the wrong type.
    #[error("{message} message: field `{field}` must be {expected}")]
    WrongType {
        message: &'static str,
        field: &'static str,
        expected: &'static str,
    },
    /// A field has the right type but a value outside what the protocol allows.
    #[error("{message} message: field `{field}` is invalid: {detail}")]
    InvalidValue {
        message: &'static str,
        field: &'static str,
        detail: String,
    },
    /// A Completion carries both `result` and `error`.
    #[error(
        "Completion message has both `result` and `error`; a completion carries one or neither"
    )]
    ResultAndError,
    /// The `type` is not one of the nine known types: skip the message.
    #[error("unknown hub message type {message_type}; ignored")]
    UnknownMessageType { message_type: i64 },
    /// A record (JSON) or message body (MessagePack) is longer than the configured limit.
    #[error("record of at least {size} bytes exceeds the limit of {limit} bytes")]
    RecordTooLarge { size: usize, limit: usize },
    /// A MessagePack length prefix is longer than 5 bytes or above 2^31 - 1.
    #[error("invalid MessagePack length prefix: {detail}")]
    InvalidLengthPrefix { detail: String },
}

impl DecodeError {
    /// An unknown message type: skip it, as the official JS client does.
    pub fn is_ignorable(&self) -> bool {
        matches!(self, DecodeError::UnknownMessageType { .. })
    }

    /// The stream can no longer be split into records: close the connection.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DecodeError::RecordTooLarge { .. } | DecodeError::InvalidLengthPrefix { .. }
        )
    }
}
