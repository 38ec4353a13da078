//! The plain data every stage shares: WAL positions, the decoded change and its table, the
//! names tables go by, the event mapping makes of a change. It knows nothing of walhook's
//! other modules; they all build on it.

mod change;
mod lsn;
mod table_name;

pub use change::{Change, Datum, Operation, ReplicaIdentity, RowImage, Table, TableColumn};
pub use lsn::{Lsn, ParseLsnError};
pub use table_name::TableName;
