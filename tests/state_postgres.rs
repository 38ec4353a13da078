//! The Postgres state store against a real server: the store contract, written once in
//! `walhook::state::contract` and run here as for SQLite, and what only a server can get
//! wrong (a schema it must refuse, a user without privileges, a lost connection, writers in
//! two processes).

mod check;
mod contract;
mod fencing;
mod leadership;
mod migrate;
mod pause;
mod run;
mod server;

use std::sync::Arc;

use walhook::state::{PostgresStore, StateError};

use crate::support::TestDb;

/// A state schema of its own in a database of its own.
pub(crate) struct Schema {
    db: TestDb,
    name: String,
}

impl Schema {
    pub(crate) async fn new() -> Schema {
        let db = TestDb::new().await;
        // Not the default: the schema name must reach every statement.
        let name = "walhook_state".to_string();
        Schema { db, name }
    }

    pub(crate) fn url(&self) -> String {
        self.db.url()
    }

    /// Opens the store as `url`'s user, through walhook's own connection code.
    pub(crate) async fn open_as(&self, url: &str) -> Result<PostgresStore, StateError> {
        let url = url.to_string();
        PostgresStore::open(
            format!("test database {}", self.db.name()),
            &self.name,
            move || {
                let url = url.clone();
                async move { walhook::source::connect_sql_url(&url).await }
            },
        )
        .await
    }

    pub(crate) async fn open(&self) -> Arc<PostgresStore> {
        Arc::new(self.open_as(&self.url()).await.expect("open the store"))
    }
}
