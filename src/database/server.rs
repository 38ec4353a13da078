//! What the server is, as the checks and the backfill planner need to know it.

use tokio_postgres::Client;

/// The server's version: `server_version_num` (e.g. 150018) and its text (e.g. `15.18`).
pub async fn server_version(client: &Client) -> Result<(i32, String), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('server_version')",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}
