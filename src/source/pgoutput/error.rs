//! Why a replication message could not be decoded.

use std::str::Utf8Error;

/// A message from the walsender did not have the shape protocol version 1 gives it.
///
/// Every kind means the same thing to the caller: the byte stream is not what walhook
/// understands, and guessing where the next message starts would risk silently skipping or
/// misreading changes. The replication connection should stop and restart from the last confirmed
/// LSN, so no kind here is retried in place. `what` names the field being read, so the operator
/// sees which part of which message was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field was complete.
    #[error("message truncated while reading {what}: needed {needed} bytes, {remaining} left")]
    Truncated {
        what: &'static str,
        needed: usize,
        remaining: usize,
    },

    /// A tag byte that protocol version 1 does not define, e.g. a streaming message ('S', 'E',
    /// 'c', 'A') that only a later protocol version sends.
    #[error("unknown {what} tag {} (0x{tag:02X})", char::from(*tag).escape_default())]
    UnknownTag { what: &'static str, tag: u8 },

    /// A NUL-terminated string had no NUL before the end of the message.
    #[error("{what} is not NUL-terminated")]
    UnterminatedString { what: &'static str },

    /// A name that must be text was not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        what: &'static str,
        #[source]
        source: Utf8Error,
    },

    /// A count or length field was negative.
    #[error("{what} is negative ({count})")]
    NegativeCount { what: &'static str, count: i32 },

    /// Bytes were left over after a complete message: the sender and walhook disagree about the
    /// format, so nothing decoded from it can be trusted.
    #[error("{count} unexpected bytes after a complete {what}")]
    TrailingBytes { what: &'static str, count: usize },
}
