//! The replication connection's socket with its buffers: complete backend messages out,
//! frontend messages in. Reads and writes are cancel-safe, so a caller may `select!` on them.

use std::io;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{DataRowBody, ErrorResponseBody, Header, Message};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ReplicationError;
use crate::source::connect::PgStream;

/// The largest message accepted from the server. Postgres never builds a bigger one (its
/// buffers stop at 1 GiB); a larger length means corrupt input, not a big row.
const MAX_MESSAGE_LEN: usize = 1 << 30;
/// Bytes requested from the socket per read once the buffer is full.
const READ_CHUNK: usize = 64 * 1024;
/// CopyBothResponse: START_REPLICATION succeeded. `postgres-protocol` does not parse it.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// One message from the server: a parsed one, or the CopyBothResponse the codec lacks.
pub(super) enum Frame {
    Message(Message),
    CopyBoth,
}

/// The socket with its read and write buffers. Reads fill `rbuf` and parse complete
/// messages out of it; writes go into `wbuf` and are flushed from there.
pub(super) struct Conn {
    stream: PgStream,
    rbuf: BytesMut,
    pub(super) wbuf: BytesMut,
    /// Bytes were written but a flush has not completed (it was cancelled, or failed).
    pub(super) unflushed: bool,
    pub(super) addr: String,
}

impl Conn {
    pub(super) fn new(stream: PgStream, addr: String) -> Conn {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(256),
            unflushed: false,
            addr,
        }
    }

    /// The next message. Cancel-safe: bytes read stay in `rbuf` until a message is complete.
    pub(super) async fn read(&mut self) -> Result<Frame, ReplicationError> {
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            let read = self.stream.read_buf(&mut self.rbuf).await;
            match read {
                Ok(0) => {
                    let eof = io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    );
                    return Err(self.io_err(eof));
                }
                Ok(_) => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
    }

    /// A complete message from the front of `rbuf`, if there is one.
    fn parse(&mut self) -> Result<Option<Frame>, ReplicationError> {
        let header = Header::parse(&self.rbuf).map_err(|e| self.decode_err(e))?;
        let Some(header) = header else {
            return Ok(None);
        };
        // The length counts itself but not the tag; Header::parse ensured it is >= 4.
        let total = usize::try_from(header.len())
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        if total > MAX_MESSAGE_LEN {
            let what = format!(
                "the server announced a {total}-byte message; Postgres never sends more than 1 GiB"
            );
            return Err(self.protocol(what));
        }
        if header.tag() == COPY_BOTH_RESPONSE_TAG {
            if self.rbuf.len() < total {
                self.rbuf.reserve(total - self.rbuf.len());
                return Ok(None);
            }
            // Its body (copy format, column formats) says nothing a replication client needs.
            self.rbuf.advance(total);
            return Ok(Some(Frame::CopyBoth));
        }
        match Message::parse(&mut self.rbuf) {
            Ok(message) => Ok(message.map(Frame::Message)),
            Err(e) => Err(self.decode_err(e)),
        }
    }

    /// Writes out everything in `wbuf`. Cancel-safe: what was not written stays in `wbuf`,
    /// and `unflushed` stays set until the stream has taken it all.
    pub(super) async fn flush(&mut self) -> Result<(), ReplicationError> {
        self.unflushed = true;
        while self.wbuf.has_remaining() {
            match self.stream.write_buf(&mut self.wbuf).await {
                Ok(0) => {
                    let closed = io::Error::new(io::ErrorKind::WriteZero, "the socket is closed");
                    return Err(self.io_err(closed));
                }
                Ok(_) => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        self.stream.flush().await.map_err(|e| self.io_err(e))?;
        self.unflushed = false;
        Ok(())
    }

    /// Sends Terminate and closes the socket; errors on the way out are not interesting.
    pub(super) async fn terminate(&mut self) -> Result<(), ReplicationError> {
        frontend::terminate(&mut self.wbuf);
        self.flush().await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }

    pub(super) fn row_text(
        &self,
        row: &DataRowBody,
    ) -> Result<Vec<Option<String>>, ReplicationError> {
        let buf = row.buffer();
        let mut values = Vec::new();
        let mut ranges = row.ranges();
        while let Some(range) = ranges.next().map_err(|e| self.decode_err(e))? {
            let value = match range {
                None => None,
                Some(range) => {
                    let bytes = buf.get(range).ok_or_else(|| {
                        self.protocol("DataRow shorter than its value lengths".into())
                    })?;
                    let text = std::str::from_utf8(bytes)
                        .map_err(|_| self.protocol("a text value that is not UTF-8".into()))?;
                    Some(text.to_string())
                }
            };
            values.push(value);
        }
        Ok(values)
    }

    /// The only row of a command's result, with at least `columns` values.
    pub(super) fn single_row(
        &self,
        mut rows: Vec<Vec<Option<String>>>,
        columns: usize,
        command: &str,
    ) -> Result<Vec<Option<String>>, ReplicationError> {
        match rows.pop() {
            Some(row) if rows.is_empty() && row.len() >= columns => Ok(row),
            _ => Err(self.protocol(format!("unexpected result shape for {command}"))),
        }
    }

    pub(super) fn server_err(&self, body: &ErrorResponseBody) -> ReplicationError {
        match server_fields(body) {
            Ok(err) => err,
            Err(e) => self.decode_err(e),
        }
    }

    pub(super) fn unexpected(&self, frame: &Frame, when: &str) -> ReplicationError {
        self.protocol(format!("unexpected {} {when}", frame_name(frame)))
    }

    pub(super) fn protocol(&self, what: String) -> ReplicationError {
        ReplicationError::Protocol {
            addr: self.addr.clone(),
            what,
            source: None,
        }
    }

    pub(super) fn decode_err(&self, source: io::Error) -> ReplicationError {
        ReplicationError::Protocol {
            addr: self.addr.clone(),
            what: "malformed message from the server".into(),
            source: Some(source),
        }
    }

    /// Only a NUL inside a string makes the frontend codec fail.
    pub(super) fn encode_err(&self, source: io::Error) -> ReplicationError {
        ReplicationError::Protocol {
            addr: self.addr.clone(),
            what: "cannot send a NUL character (in a slot name, publication name or query?)".into(),
            source: Some(source),
        }
    }

    pub(super) fn io_err(&self, source: io::Error) -> ReplicationError {
        ReplicationError::Io {
            addr: self.addr.clone(),
            source,
        }
    }
}

/// The fields of an ErrorResponse. Text that is not UTF-8 is replaced, never rejected: the
/// error itself matters more than its spelling.
fn server_fields(body: &ErrorResponseBody) -> Result<ReplicationError, io::Error> {
    let (mut code, mut message, mut detail, mut hint) = (None, None, None, None);
    let mut fields = body.fields();
    while let Some(field) = fields.next()? {
        let value = Some(String::from_utf8_lossy(field.value_bytes()).into_owned());
        match field.type_() {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = value,
            b'H' => hint = value,
            _ => {}
        }
    }
    Ok(ReplicationError::Server {
        code: code.unwrap_or_else(|| "XX000".into()),
        message: message.unwrap_or_else(|| "the server reported an error without a message".into()),
        detail,
        hint,
    })
}

fn frame_name(frame: &Frame) -> &'static str {
    let Frame::Message(message) = frame else {
        return "CopyBothResponse";
    };
    match message {
        Message::AuthenticationOk
        | Message::AuthenticationCleartextPassword
        | Message::AuthenticationMd5Password(_)
        | Message::AuthenticationSasl(_)
        | Message::AuthenticationSaslContinue(_)
        | Message::AuthenticationSaslFinal(_) => "authentication request",
        Message::BackendKeyData(_) => "BackendKeyData",
        Message::CommandComplete(_) => "CommandComplete",
        Message::CopyData(_) => "CopyData",
        Message::CopyDone => "CopyDone",
        Message::CopyInResponse(_) => "CopyInResponse",
        Message::CopyOutResponse(_) => "CopyOutResponse",
        Message::DataRow(_) => "DataRow",
        Message::ReadyForQuery(_) => "ReadyForQuery",
        Message::RowDescription(_) => "RowDescription",
        _ => "message",
    }
}
