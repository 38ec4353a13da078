//! The walsender's CopyData framing around pgoutput (the "Streaming Replication Protocol"):
//! what the server sends inside CopyData once `START_REPLICATION` runs, and the standby status
//! update walhook sends back to confirm progress.
//!
//! Pure, like the pgoutput decoder: the connection hands in the body of each CopyData message
//! and writes out the bytes of each status update.

use bytes::BufMut;

use super::pgoutput::{Cursor, DecodeError, PgTimestamp};
use crate::model::Lsn;

/// One message from the walsender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMessage<'a> {
    XLogData(XLogData<'a>),
    PrimaryKeepalive(PrimaryKeepalive),
}

/// A chunk of WAL: for a logical slot, exactly one pgoutput message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XLogData<'a> {
    pub wal_start: Lsn,
    /// The server's current end of WAL (not of this message).
    pub wal_end: Lsn,
    pub send_time: PgTimestamp,
    /// The pgoutput message, for [`crate::source::LogicalMessage::decode`].
    pub data: &'a [u8],
}

/// The server's heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    pub wal_end: Lsn,
    pub send_time: PgTimestamp,
    /// The server will drop the connection after `wal_sender_timeout` unless a standby status
    /// update answers soon, so this must be answered before any slow work.
    pub reply_requested: bool,
}

impl<'a> ReplicationMessage<'a> {
    /// Decodes the body of one CopyData message. Never panics; the result borrows from `buf`.
    pub fn decode(buf: &'a [u8]) -> Result<Self, DecodeError> {
        let mut c = Cursor::new(buf);
        match c.u8("replication message tag")? {
            b'w' => {
                let wal_start = c.lsn("XLogData WAL start")?;
                let wal_end = c.lsn("XLogData WAL end")?;
                let send_time = PgTimestamp(c.i64("XLogData send time")?);
                let data = c.take(c.remaining(), "XLogData payload")?;
                Ok(Self::XLogData(XLogData {
                    wal_start,
                    wal_end,
                    send_time,
                    data,
                }))
            }
            b'k' => {
                let keepalive = PrimaryKeepalive {
                    wal_end: c.lsn("keepalive WAL end")?,
                    send_time: PgTimestamp(c.i64("keepalive send time")?),
                    reply_requested: c.u8("keepalive reply flag")? != 0,
                };
                c.finish("primary keepalive")?;
                Ok(Self::PrimaryKeepalive(keepalive))
            }
            tag => Err(DecodeError::UnknownTag {
                what: "replication message",
                tag,
            }),
        }
    }
}

/// The standby status update ('r'): tells the server how far walhook has got. The slot's
/// retained WAL is freed up to `flush`, so `flush` must only ever be a position whose every
/// event is settled (see the ack tracker); walhook writes nothing locally, so `write` and
/// `apply` carry the same value by convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    pub write: Lsn,
    pub flush: Lsn,
    pub apply: Lsn,
    pub client_time: PgTimestamp,
    /// Ask the server to answer with a keepalive at once (used to probe a silent connection).
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Encoded size: tag, three LSNs, a timestamp and the reply flag.
    pub const LEN: usize = 1 + 8 + 8 + 8 + 8 + 1;

    /// The body of the CopyData message to send.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        let mut w = &mut out[..];
        // `w` has exactly LEN bytes of room, which the puts below fill.
        w.put_u8(b'r');
        w.put_u64(self.write.0);
        w.put_u64(self.flush.0);
        w.put_u64(self.apply.0);
        w.put_i64(self.client_time.0);
        w.put_u8(u8::from(self.reply_requested));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAL_START: [u8; 8] = [0, 0, 0, 0x16, 0xB3, 0x74, 0xD8, 0x48];
    const WAL_END: [u8; 8] = [0, 0, 0, 0x16, 0xB3, 0x74, 0xD9, 0x00];
    const SEND_TIME: [u8; 8] = [0x00, 0x02, 0xE1, 0x4B, 0x6A, 0x5B, 0x0C, 0x20];

    fn xlogdata(payload: &[u8]) -> Vec<u8> {
        [&[b'w'][..], &WAL_START, &WAL_END, &SEND_TIME, payload].concat()
    }

    fn keepalive(reply: u8) -> Vec<u8> {
        [&[b'k'][..], &WAL_END, &SEND_TIME, &[reply]].concat()
    }

    #[test]
    fn decodes_xlogdata_with_its_payload() {
        let buf = xlogdata(b"B\x00payload");
        let msg = ReplicationMessage::decode(&buf).unwrap();
        assert_eq!(
            msg,
            ReplicationMessage::XLogData(XLogData {
                wal_start: Lsn(0x16_B374_D848),
                wal_end: Lsn(0x16_B374_D900),
                send_time: PgTimestamp(0x0002_E14B_6A5B_0C20),
                data: b"B\x00payload",
            })
        );
    }

    #[test]
    fn decodes_xlogdata_with_empty_payload() {
        let buf = xlogdata(b"");
        let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::decode(&buf) else {
            panic!("not XLogData");
        };
        assert_eq!(x.data, b"");
    }

    #[test]
    fn decodes_keepalive_with_and_without_reply_request() {
        for (byte, reply_requested) in [(0, false), (1, true)] {
            let buf = keepalive(byte);
            assert_eq!(
                ReplicationMessage::decode(&buf).unwrap(),
                ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
                    wal_end: Lsn(0x16_B374_D900),
                    send_time: PgTimestamp(0x0002_E14B_6A5B_0C20),
                    reply_requested,
                })
            );
        }
    }

    #[test]
    fn rejects_truncated_headers_and_keepalives() {
        let x = xlogdata(b"");
        let k = keepalive(1);
        for buf in [&x, &k] {
            for len in 0..buf.len() {
                assert!(
                    ReplicationMessage::decode(&buf[..len]).is_err(),
                    "accepted {len}-byte prefix of {buf:?}"
                );
            }
        }
        assert_eq!(
            ReplicationMessage::decode(&k[..10]),
            Err(DecodeError::Truncated {
                what: "keepalive send time",
                needed: 8,
                remaining: 1
            })
        );
    }

    #[test]
    fn rejects_trailing_bytes_after_keepalive() {
        let mut buf = keepalive(0);
        buf.push(0);
        assert_eq!(
            ReplicationMessage::decode(&buf),
            Err(DecodeError::TrailingBytes {
                what: "primary keepalive",
                count: 1
            })
        );
    }

    #[test]
    fn rejects_unknown_tags() {
        assert_eq!(
            ReplicationMessage::decode(b"r"),
            Err(DecodeError::UnknownTag {
                what: "replication message",
                tag: b'r'
            })
        );
    }

    #[test]
    fn encodes_status_update_byte_for_byte() {
        let update = StandbyStatusUpdate {
            write: Lsn(0x0102_0304_0506_0708),
            flush: Lsn(0x16_B374_D848),
            apply: Lsn(0),
            client_time: PgTimestamp(-2),
            reply_requested: true,
        };
        let expected: [u8; 34] = [
            b'r', //
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, //
            0x00, 0x00, 0x00, 0x16, 0xB3, 0x74, 0xD8, 0x48, //
            0, 0, 0, 0, 0, 0, 0, 0, //
            0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, //
            1,
        ];
        assert_eq!(update.encode(), expected);
        let quiet = StandbyStatusUpdate {
            reply_requested: false,
            ..update
        };
        assert_eq!(quiet.encode()[33], 0);
    }

    #[test]
    fn pg_timestamp_converts_between_epochs() {
        // 2000-01-01T00:00:00Z is 946684800 Unix seconds.
        assert_eq!(PgTimestamp(0).unix_micros(), 946_684_800_000_000);
        assert_eq!(
            PgTimestamp::from_unix_micros(0),
            PgTimestamp(-946_684_800_000_000)
        );
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(946_684_800_000_123);
        assert_eq!(PgTimestamp::from_system_time(t), PgTimestamp(123));
        let before = std::time::UNIX_EPOCH - std::time::Duration::from_micros(5);
        assert_eq!(
            PgTimestamp::from_system_time(before),
            PgTimestamp(-946_684_800_000_005)
        );
        assert_eq!(PgTimestamp(i64::MAX).unix_micros(), i64::MAX);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(10_000))]

        #[test]
        fn random_bodies_never_panic(
            tag in proptest::sample::select(b"wkr".to_vec()),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let mut buf = vec![tag];
            buf.extend_from_slice(&body);
            for b in [&body, &buf] {
                if let Err(e) = ReplicationMessage::decode(b) {
                    proptest::prop_assert!(!e.to_string().is_empty());
                }
            }
        }
    }
}
