//! The store contract against a schema of its own per test.

use std::sync::Arc;

use async_trait::async_trait;
use walhook::state::contract::{contract_tests, Backend};
use walhook::state::Store;

use super::Schema;

#[async_trait]
impl Backend for Schema {
    async fn open(&self) -> Arc<dyn Store> {
        Schema::open(self).await
    }
}

contract_tests!(Schema::new().await);
