//! The plain data every stage shares: WAL positions, the decoded change and its table, the
//! names tables go by, the event mapping makes of a change, the transaction id the ack tracker
//! hands out, and the JSON string escaping every stage that writes JSON text uses. It knows
//! nothing of walhook's other modules; they all build on it.

mod change;
mod event;
mod json;
mod lsn;
mod table_name;
mod txn;

pub use change::{Change, Datum, Operation, ReplicaIdentity, RowImage, Table, TableColumn};
pub use event::Event;
pub use json::push_json_string;
pub use lsn::{Lsn, ParseLsnError};
pub use table_name::TableName;
pub use txn::TxnId;
