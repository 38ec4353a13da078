//! The test support itself: the throwaway cluster is what walhook needs.

use crate::support::TestDb;

#[tokio::test]
async fn cluster_has_logical_wal_and_separate_databases() {
    // GIVEN two test databases
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    // WHEN each is asked its name and wal_level
    let ca = a.client().await;
    let cb = b.client().await;
    let name_a: String = ca
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    let name_b: String = cb
        .query_one("SELECT current_database()::text", &[])
        .await
        .unwrap()
        .get(0);
    let wal: String = ca.query_one("SHOW wal_level", &[]).await.unwrap().get(0);
    // THEN they are distinct and logical decoding is on
    assert_eq!(name_a, a.name());
    assert_eq!(name_b, b.name());
    assert_ne!(name_a, name_b);
    assert_eq!(wal, "logical");
}
