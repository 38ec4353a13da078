//! Value encoding against Postgres's own `to_jsonb()`: for each value, the JSON walhook builds
//! from the value's text output equals what `to_jsonb()` gives in the same session settings.

use std::sync::Arc;

use serde_json::Value;
use walhook::source::{encode_text, resolve_type, CatalogError, PgType, TypeRegistry};

use crate::support::TestDb;

/// The settings the replication session runs with.
const SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; \
    SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'";

const SCHEMA: &str = r#"
    CREATE TYPE mood AS ENUM ('ok', 'sad', 'it''s "complicated"');
    CREATE DOMAIN posint AS int CHECK (VALUE > 0);
    CREATE DOMAIN tags AS text[];
    CREATE TYPE inner_t AS (a int, b text[]);
    CREATE TYPE outer_t AS (x inner_t, y text, z timestamptz, w float8, m mood, d posint,
                            "odd ""key""" numeric);
    CREATE TYPE dropped_t AS (a int, gone text, c text);
    ALTER TYPE dropped_t DROP ATTRIBUTE gone;
    CREATE DOMAIN inner_dom AS inner_t;
    CREATE TYPE floatrange AS RANGE (subtype = float8);
    CREATE TABLE shaped (id int, label text);
"#;

/// One SQL expression per value, covering every category `to_jsonb()` distinguishes.
const CASES: &[&str] = &[
    // bool and integers
    "true",
    "false",
    "0::int2",
    "(-32768)::int2",
    "32767::int2",
    "(-2147483648)::int4",
    "2147483647::int4",
    "(-9223372036854775808)::int8",
    "9223372036854775807::int8",
    // floats: printed as numeric_in reads their text
    "'1.5'::float4",
    "'-0'::float4",
    "'NaN'::float4",
    "'Infinity'::float4",
    "'-Infinity'::float4",
    "'3.4028235e38'::float4",
    "'1e-45'::float4",
    "'0.1'::float8",
    "'-0'::float8",
    "'NaN'::float8",
    "'Infinity'::float8",
    "'-Infinity'::float8",
    "'1e308'::float8",
    "'1.7976931348623157e308'::float8",
    "'5e-324'::float8",
    "'2.2250738585072014e-308'::float8",
    "'123456789012345678'::float8",
    "'-1.5e-7'::float8",
    "1e15::float8",
    "1e16::float8",
    "1e-4::float8",
    "1e-5::float8",
    // numeric: exact digits
    "'1234567890123456789012345678901234567890'::numeric",
    "'-0.0000000000000000000000000000000000000001'::numeric",
    "'NaN'::numeric",
    "'Infinity'::numeric",
    "'-Infinity'::numeric",
    "12.50::numeric",
    "0::numeric",
    "'-0.00'::numeric",
    "1e100::numeric",
    "'12345678901234567890.123456789012345678901234567890'::numeric(60,40)",
    // strings
    "''::text",
    "'plain'::text",
    r#"E'quote " backslash \\ slash / tab \t newline \n cr \r bell \x07 esc \x1b del \x7f'::text"#,
    "'unicode é ☃ 𝄞 日本語 \u{200b}'::text",
    "'x'::\"char\"",
    "'abc'::char(5)",
    "'v'::varchar(3)",
    "'nm'::name",
    "'{\"not\": \"json\"}'::text",
    // bytea
    "'\\x'::bytea",
    "'\\x00ff10'::bytea",
    // json and jsonb: embedded
    r#"'{"a": [1, 2.50, {"b": null}], "c": "\u00e9\n", "d": true}'::json"#,
    r#"'{"a": 1, "a": [1.0, 1e2, -0]}'::json"#,
    r#"'  [ ]  '::json"#,
    r#"'"str"'::json"#,
    r#"'{"z": 1e-3, "y": {"x": [[[[]]]]}, "w": "\"\\"}'::jsonb"#,
    "'[]'::jsonb",
    "'12345678901234567890.5'::jsonb",
    "(repeat('[', 120) || repeat(']', 120))::jsonb",
    "(repeat('{\"a\": [', 60) || '1' || repeat(']}', 60))::json",
    // dates and times
    "'2026-11-26'::date",
    "'0044-03-15 BC'::date",
    "'4713-01-01 BC'::date",
    "'5874897-12-31'::date",
    "'infinity'::date",
    "'-infinity'::date",
    "'17:51:10.57433'::time",
    "'24:00:00'::time",
    "'00:00:00'::time",
    "'17:51:10.57433+02'::timetz",
    "'00:00:00-05:30'::timetz",
    "'12:00:00+01:02:03'::timetz",
    "'2026-11-26 17:51:10.57433'::timestamp",
    "'2026-11-26 17:51:10'::timestamp",
    "'0044-03-15 12:00:01.5 BC'::timestamp",
    "'4713-01-01 00:00:00 BC'::timestamp",
    "'294276-12-31 23:59:59.999999'::timestamp",
    "'10000-01-01 00:00:00'::timestamp",
    "'infinity'::timestamp",
    "'-infinity'::timestamp",
    "'2026-11-26 17:51:10.57433+00'::timestamptz",
    "'2020-01-01 00:00:00+05:30'::timestamptz",
    "'0044-03-15 12:00:01.5+00 BC'::timestamptz",
    "'infinity'::timestamptz",
    "'-infinity'::timestamptz",
    // everything to_jsonb() prints as a string of the text
    "'1 day 02:00:00'::interval",
    "'-1 year -2 mons +3 days -04:05:06.7'::interval",
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
    "'10.0.0.1'::inet",
    "'2001:db8::/32'::cidr",
    "'08:00:2b:01:02:03'::macaddr",
    "'08:00:2b:01:02:03:04:05'::macaddr8",
    "'12.34'::money",
    "B'1010'::bit(4)",
    "B'101'::varbit",
    "42::oid",
    "'pg_class'::regclass",
    "'12345'::xid8",
    "'0/16B3748'::pg_lsn",
    "'<a href=\"x\">t &amp; u</a>'::xml",
    "'a fat cat'::tsvector",
    "'fat & cat'::tsquery",
    "'(1.5,2)'::point",
    "'(1,2),(3,4)'::box",
    "'((0,0),(1,0),(1,1))'::polygon",
    "'<(0,0),1>'::circle",
    "'{1,2,3}'::line",
    "'[(0,0),(1,1)]'::lseg",
    "'[(0,0),(1,1),(2,0)]'::path",
    "'[1,5)'::int4range",
    "'empty'::int4range",
    "'[\"2026-01-01 00:00:00+00\",infinity)'::tstzrange",
    "'{[1,3), [5,7)}'::int4multirange",
    "'ok'::mood",
    "'it''s \"complicated\"'::mood",
    "5::posint",
    "'[1.5,2.5)'::floatrange",
    // arrays
    "'{}'::int[]",
    "'{{1,NULL},{3,4}}'::int[]",
    "'[0:1]={1,2}'::int[]",
    "'[1:1][-2:-1]={{1,2}}'::int[]",
    "'{{{1}},{{2}}}'::int8[]",
    r#"ARRAY['a"b', E'c\\d', '', NULL, 'NULL', 'null', ' sp ', 'a,b', '{x}', E'tab\t', 'é']"#,
    "'{{a,b},{\"c d\",NULL}}'::text[]",
    "ARRAY['2026-11-26 17:51:10.57433+00'::timestamptz, 'infinity', NULL]",
    "ARRAY['2026-11-26 17:51:10'::timestamp, '0044-03-15 00:00:00 BC']",
    "ARRAY['2026-11-26'::date, '-infinity']",
    "ARRAY['17:51:10+02'::timetz]",
    "ARRAY['(1,2),(3,4)'::box, '(5,6),(7,8)']",
    r#"ARRAY['{"a": 1}'::jsonb, '[1, "x"]', 'null']"#,
    r#"ARRAY['{"a": 1}'::json, NULL]"#,
    "ARRAY[1.5::numeric, 'NaN', '-Infinity']",
    "ARRAY['NaN'::float8, '-0', '1e308', '1.5e-7']",
    "'{t,f,NULL}'::bool[]",
    "'{\"\\\\x00\",\"\\\\xff\"}'::bytea[]",
    "ARRAY['ok', 'it''s \"complicated\"']::mood[]",
    "ARRAY[1, 2]::posint[]",
    "ARRAY['[1,5)'::int4range, 'empty']",
    "ARRAY['1 day'::interval]",
    "ARRAY[42::oid]",
    "'1 2 3'::int2vector",
    "'1 2'::oidvector",
    "ARRAY['1 2'::int2vector, '3']",
    "'{a,\"b c\"}'::tags",
    // composites
    r#"ROW(ROW(1, ARRAY['a"b', '', NULL]), 'q,"x', '2026-11-26 17:51:10.57433+00', 1e300, 'ok', 5, 1.50)::outer_t"#,
    "ROW(NULL, NULL, NULL, NULL, NULL, NULL, NULL)::outer_t",
    "ROW(ROW(NULL, '{}'), '', NULL, 'NaN', 'it''s \"complicated\"', NULL, 'NaN')::outer_t",
    r#"ROW(ROW(7, ARRAY[E'back\\slash', '(paren)', ' ']), E'(\\)', '-infinity', '-0', 'sad', 1, -0.001)::outer_t"#,
    "ROW(1, 'c')::dropped_t",
    "ROW(1, '{x}')::inner_dom",
    "ROW(2, 'label')::shaped",
    r#"ARRAY[ROW(ROW(1, ARRAY['x']), 'y', NULL, 2.5, 'ok', 3, 0)::outer_t, NULL, ROW(NULL, '"', 'infinity', '-Infinity', NULL, NULL, 1)::outer_t]"#,
    "ARRAY[ROW(1, '{a,b}')::inner_t, ROW(NULL, NULL)::inner_t]",
];

#[tokio::test]
async fn every_value_encodes_as_to_jsonb_gives_it() {
    // GIVEN a database with user enums, domains, composites and a range, in the replication
    // session's settings
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(SESSION).await.unwrap();
    client.batch_execute(SCHEMA).await.unwrap();
    let mut registry = TypeRegistry::builtin();
    let mut failures = Vec::new();

    let version = server_major(&client).await;
    for case in CASES.iter().filter(|case| exists_in(case, version)) {
        // WHEN the value's text output is encoded with the type the catalog resolves for it
        let sql = format!(
            "SELECT format('%s', v), to_jsonb(v)::text, pg_typeof(v)::oid FROM (SELECT {case} AS v) s"
        );
        let row = client
            .query_one(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{case}: {e}"));
        let (text, expected, oid): (String, String, u32) = (row.get(0), row.get(1), row.get(2));
        let ty = resolve_type(&client, oid, &mut registry)
            .await
            .unwrap_or_else(|e| panic!("{case}: resolving type {oid}: {e}"));
        let mut out = String::new();
        if let Err(e) = encode_text(&ty, text.as_bytes(), &mut out) {
            failures.push(format!("{case}: text {text:?} failed: {e}"));
            continue;
        }

        // THEN it is the same JSON value as to_jsonb(), and, where no json is embedded, with
        // the very same number digits
        let ours: Value = match serde_json::from_str(&out) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("{case}: invalid JSON {out}: {e}"));
                continue;
            }
        };
        let theirs: Value = serde_json::from_str(&expected).unwrap();
        let same = if embeds_json(&ty) {
            same_value(&ours, &theirs)
        } else {
            ours == theirs
        };
        if !same {
            failures.push(format!(
                "{case}: text {text:?}\n  walhook:  {out}\n  to_jsonb: {expected}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn catalog_resolves_user_types_into_the_registry() {
    // GIVEN user types nested in each other
    let db = TestDb::new().await;
    let client = db.client().await;
    client.batch_execute(SCHEMA).await.unwrap();
    let oid = |name: &'static str| {
        let client = &client;
        async move {
            let row = client
                .query_one("SELECT $1::text::regtype::oid", &[&name])
                .await
                .unwrap();
            row.get::<_, u32>(0)
        }
    };
    let mut registry = TypeRegistry::builtin();

    // WHEN the outer composite type is resolved
    let outer = resolve_type(&client, oid("outer_t").await, &mut registry)
        .await
        .unwrap();

    // THEN its fields carry their resolved types, in attribute order, domains as their base
    let text_array = registry.get(1009).unwrap().clone();
    let inner = Arc::new(PgType::Composite {
        fields: vec![
            ("a".into(), Arc::new(PgType::Int)),
            ("b".into(), text_array),
        ],
    });
    let want = PgType::Composite {
        fields: vec![
            ("x".into(), inner.clone()),
            ("y".into(), Arc::new(PgType::Text)),
            ("z".into(), Arc::new(PgType::Timestamptz)),
            ("w".into(), Arc::new(PgType::Float)),
            ("m".into(), Arc::new(PgType::Other)),
            ("d".into(), Arc::new(PgType::Int)),
            ("odd \"key\"".into(), Arc::new(PgType::Numeric)),
        ],
    };
    assert_eq!(*outer, want);
    // AND the nested types are now in the registry, so they are not read again
    assert_eq!(
        registry.get(oid("inner_t").await).map(|t| &**t),
        Some(&*inner)
    );
    assert_eq!(
        registry.get(oid("posint").await).map(|t| &**t),
        Some(&PgType::Int)
    );
    assert_eq!(
        registry.get(oid("mood").await).map(|t| &**t),
        Some(&PgType::Other)
    );
    let dropped = resolve_type(&client, oid("dropped_t").await, &mut registry)
        .await
        .unwrap();
    match &*dropped {
        PgType::Composite { fields } => {
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["a", "c"]);
        }
        other => panic!("dropped_t resolved to {other:?}"),
    }
    let mood_array = resolve_type(&client, oid("mood[]").await, &mut registry)
        .await
        .unwrap();
    assert_eq!(
        *mood_array,
        PgType::Array {
            element: Arc::new(PgType::Other),
            delimiter: b','
        }
    );

    // AND an unknown OID or a pseudo-type is an error, not a guess
    let missing = resolve_type(&client, 4_000_000_000, &mut registry).await;
    assert!(
        matches!(missing, Err(CatalogError::NotFound { oid: 4_000_000_000 })),
        "{missing:?}"
    );
    let record = resolve_type(&client, 2249, &mut registry).await;
    assert!(
        matches!(
            record,
            Err(CatalogError::Unsupported {
                oid: 2249,
                typtype: 'p'
            })
        ),
        "{record:?}"
    );
}

#[tokio::test]
async fn builtin_table_matches_the_catalog() {
    // GIVEN the built-in registry and a server's pg_type
    let db = TestDb::new().await;
    let client = db.client().await;
    let registry = TypeRegistry::builtin();
    let oids: Vec<u32> = registry.oids().collect();

    // WHEN every OID it knows is looked up
    let rows = client
        .query(
            "SELECT t.oid, t.typname::text, t.typelem, t.typtype::text, \
                    t.typlen = -1 AND t.typelem <> 0 AS is_array, e.typdelim::text \
             FROM pg_type t LEFT JOIN pg_type e ON e.oid = t.typelem WHERE t.oid = ANY($1)",
            &[&oids],
        )
        .await
        .unwrap();

    // THEN each exists, but for types of a later Postgres than the server's, and each array's
    // element and delimiter are the catalog's
    let version = server_major(&client).await;
    let found: Vec<u32> = rows.iter().map(|r| r.get(0)).collect();
    let missing: Vec<u32> = oids
        .iter()
        .copied()
        .filter(|oid| !found.contains(oid))
        .filter(|oid| {
            LATER_TYPES
                .iter()
                .all(|(later, since)| later != oid || *since <= version)
        })
        .collect();
    assert_eq!(
        missing,
        Vec::<u32>::new(),
        "built-in OIDs not in Postgres {version}'s pg_type"
    );
    for row in &rows {
        let (oid, name, elem, is_array): (u32, String, u32, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(4));
        let ty = registry.get(oid).unwrap();
        match &**ty {
            PgType::Array { element, delimiter } => {
                assert!(is_array, "{name} is not an array");
                assert_eq!(Some(element), registry.get(elem), "{name}'s element");
                let delim: String = row.get(5);
                assert_eq!(delim.as_bytes(), [*delimiter], "{name}'s delimiter");
            }
            PgType::Vector { .. } => assert!(matches!(name.as_str(), "int2vector" | "oidvector")),
            _ => assert!(!is_array || name == "name", "{name} is an array"),
        }
    }
    // AND every built-in base, range and multirange type and their arrays are known
    let rows = client
        .query(
            "SELECT t.oid, t.typname::text FROM pg_type t \
             LEFT JOIN pg_type e ON e.oid = t.typelem \
             WHERE t.oid < 16384 AND t.typtype IN ('b', 'r', 'm') \
               AND coalesce(e.typtype, 'b') NOT IN ('c', 'p') AND t.typnamespace = 'pg_catalog'::regnamespace",
            &[],
        )
        .await
        .unwrap();
    let missing: Vec<String> = rows
        .iter()
        .filter(|r| registry.get(r.get(0)).is_none())
        .map(|r| r.get(1))
        .collect();
    assert!(
        missing.is_empty(),
        "built-in types missing from the table: {missing:?}"
    );
}

fn embeds_json(ty: &PgType) -> bool {
    match ty {
        PgType::Json => true,
        PgType::Array { element, .. } | PgType::Vector { element } => embeds_json(element),
        PgType::Composite { fields } => fields.iter().any(|(_, t)| embeds_json(t)),
        _ => false,
    }
}

/// JSON equality with numbers compared by value: `json` keeps its numbers' text (`1e2`) where
/// `jsonb` prints them as numeric (`100`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            decimal_normal_form(&x.to_string()) == decimal_normal_form(&y.to_string())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// `(negative, significant digits, exponent of the first digit)`; zero is `(false, "", 0)`.
fn decimal_normal_form(number: &str) -> (bool, String, i64) {
    let (negative, rest) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().unwrap()),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int}{frac}");
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0').to_string();
    if significant.is_empty() {
        return (false, significant, 0);
    }
    let first_digit_exponent = int.len() as i64 - 1 - leading as i64 + exponent;
    (negative, significant, first_digit_exponent)
}

/// Built-in types walhook knows that Postgres 12 lacks: (OID, the major that added it).
const LATER_TYPES: &[(u32, u32)] = &[
    (4191, 13), // regcollation
    (4192, 13), // _regcollation
    (5038, 13), // pg_snapshot
    (5039, 13), // _pg_snapshot
    (5069, 13), // xid8
    (271, 13),  // _xid8
    (4451, 14), // int4multirange and the other multiranges, with their arrays
    (4532, 14),
    (4533, 14),
    (4534, 14),
    (4535, 14),
    (4536, 14),
    (6150, 14),
    (6151, 14),
    (6152, 14),
    (6153, 14),
    (6155, 14),
    (6157, 14),
    (4600, 14), // pg_brin_bloom_summary
    (4601, 14), // pg_brin_minmax_multi_summary
];

/// The server's major version.
async fn server_major(client: &tokio_postgres::Client) -> u32 {
    let number: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    u32::try_from(number / 10_000).unwrap()
}

/// Whether a case's value exists in Postgres `version` (xid8 and arrays of the vector types
/// came in 13; multiranges and numeric infinities in 14).
fn exists_in(case: &str, version: u32) -> bool {
    let numeric_infinity = case.contains("numeric") && case.contains("Infinity'");
    // An array of int2vector or oidvector values is refused by Postgres 12.
    let vector_array = case.starts_with("ARRAY[") && case.contains("vector");
    !((case.contains("multirange") || numeric_infinity) && version < 14
        || (case.contains("xid8") || vector_array) && version < 13)
}
