//! What the integration tests share: a real Postgres and a fresh database per test.

#![allow(dead_code)]

pub mod json;
mod postgres;
pub mod python;
pub mod receiver;

#[allow(unused_imports)]
pub use postgres::{find_bin_dir, Cluster, Server, SUPERUSER_PASSWORD};

/// A fresh database of its own for one test; its name is also unique cluster-wide, so tests
/// use it for their slot and publication names too.
pub struct TestDb {
    name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = Server::get();
        let name = server.unique_name("t");
        let admin = connect(&server.superuser_url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        TestDb { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A superuser URL for this database.
    pub fn url(&self) -> String {
        Server::get().superuser_url(&self.name)
    }

    /// A superuser SQL connection to this database.
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url()).await
    }
}

/// A plain (no TLS) tokio-postgres connection, driven on the current runtime.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// walhook's logs in the test output (shown for failing tests), filtered by `RUST_LOG`
/// (default `walhook=debug`).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("walhook=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
