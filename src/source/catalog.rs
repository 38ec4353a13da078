//! Resolving a type OID the built-in table does not know (enums, domains, composites, ranges,
//! extension types and arrays of them) from the database's own catalog. The type is always
//! taken from `pg_type` / `pg_attribute`, never guessed from a value's text.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio_postgres::Client;

use super::value::{PgType, TypeRegistry};

/// OIDs below this are assigned by initdb; user types and extensions get larger ones.
const FIRST_NORMAL_OID: u32 = 16384;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("could not read type {oid} from the catalog")]
    Query {
        oid: u32,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("type {oid} does not exist; was it dropped while walhook was reading its columns?")]
    NotFound { oid: u32 },
    #[error("type {oid} contains itself; Postgres forbids that, so the catalog is inconsistent")]
    Cycle { oid: u32 },
    #[error("type {oid} is a pseudo-type (typtype `{typtype}`), which a table column cannot have")]
    Unsupported { oid: u32, typtype: char },
}

const TYPE_SQL: &str = "\
    SELECT t.typtype, t.typbasetype, t.typelem, t.typrelid, t.typcategory, t.typlen, \
           e.typdelim AS elemdelim, \
           EXISTS (SELECT 1 FROM pg_cast c \
                   WHERE c.castsource = t.oid AND c.casttarget = 'json'::regtype \
                     AND c.castmethod = 'f') AS json_cast \
    FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem \
    WHERE t.oid = $1";

const FIELDS_SQL: &str = "\
    SELECT attname::text, atttypid FROM pg_attribute \
    WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum";

/// The encoding of type `oid`: from `registry` when known, otherwise read from the catalog,
/// together with every type it contains, and added to `registry`.
///
/// Domains resolve to their base type, enums, ranges, multiranges and other base types to
/// [`PgType::Other`]. An extension type with a cast to `json` (PostGIS `geometry`, `hstore`)
/// is also `Other`: `to_jsonb()` would call that cast, which walhook cannot do, so such values
/// arrive as strings of their text and a warning says so.
pub async fn resolve_type(
    client: &Client,
    oid: u32,
    registry: &mut TypeRegistry,
) -> Result<Arc<PgType>, CatalogError> {
    let mut visiting = Vec::new();
    resolve(client, oid, registry, &mut visiting).await
}

/// Boxed for the recursion into element, base and field types; `visiting` holds the types being
/// resolved further up, so a cycle ends in an error instead of an endless loop.
fn resolve<'a>(
    client: &'a Client,
    oid: u32,
    registry: &'a mut TypeRegistry,
    visiting: &'a mut Vec<u32>,
) -> Pin<Box<dyn Future<Output = Result<Arc<PgType>, CatalogError>> + Send + 'a>> {
    Box::pin(async move {
        if let Some(known) = registry.get(oid) {
            return Ok(known.clone());
        }
        if visiting.contains(&oid) {
            return Err(CatalogError::Cycle { oid });
        }
        visiting.push(oid);
        let resolved = resolve_uncached(client, oid, registry, visiting).await;
        visiting.pop();
        let ty = resolved?;
        registry.insert(oid, ty.clone());
        Ok(ty)
    })
}

async fn resolve_uncached(
    client: &Client,
    oid: u32,
    registry: &mut TypeRegistry,
    visiting: &mut Vec<u32>,
) -> Result<Arc<PgType>, CatalogError> {
    let query_error = |source| CatalogError::Query { oid, source };
    let row = client
        .query_opt(TYPE_SQL, &[&oid])
        .await
        .map_err(query_error)?
        .ok_or(CatalogError::NotFound { oid })?;
    let typtype = char_column(row.try_get("typtype").map_err(query_error)?);
    let base: u32 = row.try_get("typbasetype").map_err(query_error)?;
    let element: u32 = row.try_get("typelem").map_err(query_error)?;
    let relid: u32 = row.try_get("typrelid").map_err(query_error)?;
    let category = char_column(row.try_get("typcategory").map_err(query_error)?);
    let typlen: i16 = row.try_get("typlen").map_err(query_error)?;
    let element_delimiter: Option<i8> = row.try_get("elemdelim").map_err(query_error)?;
    let json_cast: bool = row.try_get("json_cast").map_err(query_error)?;

    match typtype {
        'd' => resolve(client, base, registry, visiting).await,
        'c' => {
            let rows = client
                .query(FIELDS_SQL, &[&relid])
                .await
                .map_err(query_error)?;
            let mut fields = Vec::with_capacity(rows.len());
            for row in rows {
                let name: String = row.try_get(0).map_err(query_error)?;
                let field_oid: u32 = row.try_get(1).map_err(query_error)?;
                let field_type = resolve(client, field_oid, registry, visiting).await?;
                fields.push((name, field_type));
            }
            Ok(Arc::new(PgType::Composite { fields }))
        }
        // A true array: varlena with an element type (int2vector and oidvector also match but
        // are built in).
        'b' if element != 0 && typlen == -1 => {
            let element_type = resolve(client, element, registry, visiting).await?;
            Ok(Arc::new(PgType::Array {
                element: element_type,
                delimiter: element_delimiter.map_or(b',', |d| d as u8),
            }))
        }
        'b' | 'e' | 'r' | 'm' => {
            if json_cast && oid >= FIRST_NORMAL_OID {
                tracing::warn!(
                    type_oid = oid,
                    type_category = %category,
                    "type has a cast to json that to_jsonb() would use; its values are sent as strings of their text"
                );
            }
            Ok(Arc::new(PgType::Other))
        }
        other => Err(CatalogError::Unsupported {
            oid,
            typtype: other,
        }),
    }
}

/// A `"char"` column (one byte) as a character.
fn char_column(value: i8) -> char {
    char::from(value as u8)
}
