//! What `walhook check` reads of the state database, changing nothing: whether walhook's
//! schema is there or may be created, and the lease.

use tokio_postgres::Client;

use super::lease::{lease_from_row, READ};
use super::session::{in_schema, quote_identifier, Failure};
use super::Lease;

/// The state schema as `check` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub schema_exists: bool,
    /// The user may create the schema (it is missing) or create in it (it exists).
    pub may_create: bool,
    /// The lease, once a walhook of this version led.
    pub lease: Option<Lease>,
}

/// Reads, with `client` connected as `[state] url`, what [`Inspection`] holds.
pub async fn inspect(client: &Client, schema: &str) -> Result<Inspection, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT n.oid IS NOT NULL,
                    CASE WHEN n.oid IS NULL
                         THEN has_database_privilege(current_database(), 'CREATE')
                         ELSE has_schema_privilege(n.oid, 'CREATE') AND has_schema_privilege(n.oid, 'USAGE')
                    END,
                    to_regclass(format('%I.leader', $1::text)) IS NOT NULL
               FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = $1",
            &[&schema],
        )
        .await?;
    let (schema_exists, may_create, has_lease): (bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2));
    let mut lease = None;
    if has_lease && may_create {
        let sql = in_schema(READ, &quote_identifier(schema));
        if let Some(row) = client.query_opt(&sql, &[]).await? {
            lease = match lease_from_row(&row) {
                Ok(l) => Some(l),
                Err(Failure::Sql(e)) => return Err(e),
                Err(Failure::Corrupt(_)) => None,
            };
        }
    }
    Ok(Inspection {
        schema_exists,
        may_create,
        lease,
    })
}
