//! Transaction ids: how the stages name a transaction to the ack tracker.

/// A transaction (or a caught-up marker) the ack tracker follows, by stream position. Only the
/// tracker hands these out; the other stages carry them back to it when events settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxnId(u64);

impl TxnId {
    /// The transaction at `position` in the tracker's stream order.
    pub(crate) fn new(position: u64) -> Self {
        Self(position)
    }

    /// The position the tracker gave it.
    pub(crate) fn position(self) -> u64 {
        self.0
    }
}
