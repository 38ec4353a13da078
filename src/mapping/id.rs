//! Event ids (DESIGN.md "The webhook request"): deterministic, so that a receiver can
//! de-duplicate an event delivered again after a crash or restart. Written digit by digit, as
//! this runs once per event.

use crate::model::Lsn;

use super::body::{push_decimal, push_hex, LOWER_HEX, UPPER_HEX};

/// What the ids of one change's events are made of.
#[derive(Debug, Clone, Copy)]
pub(super) enum IdBase {
    /// `evt_<commit LSN as 16 upper-case hex digits>_<index of the change in its transaction>`.
    Change { commit_lsn: Lsn, index: u32 },
    /// `bf_<backfill id>_<16 lower-case hex digits of the FNV-1a of the row's key text>`.
    Read { backfill: i64, key_hash: u64 },
}

impl IdBase {
    /// The id of the event of rule `n` among the rules that apply, numbered from 0 in config
    /// order; `None` when only one rule applies (no suffix).
    pub(super) fn id(self, n: Option<usize>) -> String {
        let mut id = String::with_capacity(48);
        match self {
            Self::Change { commit_lsn, index } => {
                id.push_str("evt_");
                push_hex(commit_lsn.0, 16, UPPER_HEX, &mut id);
                id.push('_');
                push_decimal(u64::from(index), &mut id);
            }
            Self::Read { backfill, key_hash } => {
                id.push_str("bf_");
                if backfill < 0 {
                    id.push('-');
                }
                push_decimal(backfill.unsigned_abs(), &mut id);
                id.push('_');
                push_hex(key_hash, 16, LOWER_HEX, &mut id);
            }
        }
        if let Some(n) = n {
            id.push('_');
            push_decimal(n as u64, &mut id);
        }
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_those_of_the_design() {
        let change = IdBase::Change {
            commit_lsn: Lsn(0x16B_3748),
            index: 3,
        };
        assert_eq!(change.id(None), "evt_00000000016B3748_3");
        assert_eq!(change.id(Some(0)), "evt_00000000016B3748_3_0");
        let extreme = IdBase::Change {
            commit_lsn: Lsn(u64::MAX),
            index: u32::MAX,
        };
        assert_eq!(
            extreme.id(Some(12)),
            format!("evt_{:016X}_{}_12", u64::MAX, u32::MAX)
        );
        for backfill in [0, 7, -7, i64::MAX, i64::MIN] {
            for key_hash in [0, 0xaf63_dc4c_8601_ec8c, u64::MAX] {
                let read = IdBase::Read { backfill, key_hash };
                assert_eq!(read.id(None), format!("bf_{backfill}_{key_hash:016x}"));
                assert_eq!(read.id(Some(1)), format!("bf_{backfill}_{key_hash:016x}_1"));
            }
        }
    }
}
