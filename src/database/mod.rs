//! Database administration: what walhook creates, checks and watches in Postgres besides the
//! replication stream itself. The publication, slot and canary table (`provision`: `walhook
//! setup`, `teardown`, and `walhook run`'s first start), the prerequisites `walhook check`
//! reports, the slot's row in `pg_replication_slots` (`slot_info`) and the guard that watches
//! it, and the quoting of the SQL walhook writes itself. It imports only the model.

pub mod canary_table;
pub mod prerequisites;
pub mod provision;
mod server;
pub mod slot_guard;
pub mod slot_info;
pub(crate) mod sql;

pub use server::server_version;
