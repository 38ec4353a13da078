//! Checked big-endian reads over a borrowed message.

use super::DecodeError;
use crate::model::Lsn;

/// Reads fields from the front of a message. Every read checks the length first and returns a
/// [`DecodeError`] naming the field instead of panicking: the bytes come from the network.
/// Slices and strings borrow from the message, so decoding copies no values.
#[derive(Debug, Clone)]
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { rest: buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated {
                what,
                needed: n,
                remaining: self.rest.len(),
            })?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated {
                what,
                needed: N,
                remaining: self.rest.len(),
            })?;
        self.rest = tail;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.array::<1>(what).map(u8::from_be_bytes)
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        self.array(what).map(i16::from_be_bytes)
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.array(what).map(i32::from_be_bytes)
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.array(what).map(u32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        self.array(what).map(i64::from_be_bytes)
    }

    pub(crate) fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        self.array(what).map(u64::from_be_bytes).map(Lsn)
    }

    /// An Int16 count; Postgres never sends a negative one, so one means a corrupt message.
    pub(crate) fn count_i16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| DecodeError::NegativeCount {
            what,
            count: i32::from(n),
        })
    }

    /// An Int32 count (a number of items, or a length in bytes).
    pub(crate) fn count_i32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.i32(what)?;
        usize::try_from(n).map_err(|_| DecodeError::NegativeCount { what, count: n })
    }

    /// An Int32 length followed by that many bytes.
    pub(crate) fn len_prefixed(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.count_i32(what)?;
        self.take(len, what)
    }

    /// A NUL-terminated string. Names (schemas, tables, columns, prefixes) must be UTF-8 to be
    /// used as JSON keys and in config matching, so invalid ones are rejected here, once.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let nul = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString { what })?;
        let (bytes, tail) = self
            .rest
            .split_at_checked(nul)
            .ok_or(DecodeError::UnterminatedString { what })?;
        // `tail` starts with the NUL found above.
        self.rest = tail.get(1..).unwrap_or_default();
        std::str::from_utf8(bytes).map_err(|source| DecodeError::InvalidUtf8 { what, source })
    }

    /// Ends a message: anything left over means the format is not what we think it is.
    pub(crate) fn finish(self, what: &'static str) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { what, count }),
        }
    }
}
