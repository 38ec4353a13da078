//! The type model: how a column's Postgres type turns into JSON, and the table of built-in OIDs.

use std::collections::HashMap;
use std::sync::Arc;

/// How values of one Postgres type are encoded, following the categories `to_jsonb()` uses.
///
/// Domains do not appear here: a domain is encoded exactly as its base type, so the registry
/// maps a domain's OID straight to its base type's `PgType`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgType {
    /// `bool`: `true` / `false`.
    Bool,
    /// `int2`, `int4`, `int8`: a JSON number with the exact digits.
    Int,
    /// `float4`, `float8`: a JSON number with the digits `to_jsonb()` prints (it reads the
    /// float's text as `numeric`, so `1e+308` becomes 1 followed by 308 zeros, `-0` becomes
    /// `0`); `NaN`, `Infinity` and `-Infinity` as strings.
    Float,
    /// `numeric`: the exact digits as a JSON number; `NaN`, `Infinity`, `-Infinity` as strings.
    Numeric,
    /// `json`, `jsonb`: embedded as is, after checking that it is one valid JSON value.
    Json,
    /// `text`, `varchar`, `bpchar`, `name`, `"char"`: a JSON string.
    Text,
    /// `bytea`: a JSON string of its text (`\x...` with `bytea_output = hex`).
    Bytea,
    /// `date`: a string; the ISO text is already what `to_jsonb()` prints.
    Date,
    /// `time`: a string of the text.
    Time,
    /// `timetz`: a string of the text (`to_jsonb()` keeps `+02`, it does not write `+02:00`).
    TimeTz,
    /// `timestamp`: a string in XSD form, `2026-11-26T17:51:10.57433`.
    Timestamp,
    /// `timestamptz`: a string in XSD form, `2026-11-26T17:51:10.57433+00:00`.
    Timestamptz,
    /// An array of any dimension: nested JSON arrays; bounds are dropped as `to_jsonb()` does.
    /// `delimiter` is the element type's `typdelim` (`;` for `box`, `,` for everything else).
    Array { element: Arc<PgType>, delimiter: u8 },
    /// `int2vector` and `oidvector`: space-separated elements without braces, a JSON array.
    Vector { element: Arc<PgType> },
    /// A composite (row) type: a JSON object with one key per live attribute, in order.
    Composite { fields: Vec<(String, Arc<PgType>)> },
    /// Everything else (uuid, interval, inet, money, oid, enums, ranges, xml, ...): a JSON string
    /// of the text output, as `to_jsonb()` gives for types it has no category for.
    Other,
}

/// The types walhook knows, by OID. Starts with the built-ins ([`TypeRegistry::builtin`]); the
/// catalog resolver adds user types (enums, domains, composites, their arrays) as it meets them.
#[derive(Debug, Clone, Default)]
pub struct TypeRegistry {
    types: HashMap<u32, Arc<PgType>>,
}

impl TypeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every built-in scalar type and its array type, by their fixed OIDs.
    pub fn builtin() -> Self {
        let mut registry = Self::new();
        for (oid, array_oid, kind) in BUILTIN {
            let delimiter = if *oid == BOX_OID { b';' } else { b',' };
            registry.insert_with_array(*oid, *array_oid, Arc::new(kind.clone()), delimiter);
        }
        let int2 = Arc::new(PgType::Int);
        let oid = Arc::new(PgType::Other);
        let int2vector = PgType::Vector { element: int2 };
        let oidvector = PgType::Vector { element: oid };
        registry.insert_with_array(INT2VECTOR_OID, 1006, Arc::new(int2vector), b',');
        registry.insert_with_array(OIDVECTOR_OID, 1013, Arc::new(oidvector), b',');
        registry
    }

    fn insert_with_array(&mut self, oid: u32, array_oid: u32, ty: Arc<PgType>, delimiter: u8) {
        if array_oid != 0 {
            let element = ty.clone();
            self.insert(array_oid, Arc::new(PgType::Array { element, delimiter }));
        }
        self.insert(oid, ty);
    }

    pub fn get(&self, oid: u32) -> Option<&Arc<PgType>> {
        self.types.get(&oid)
    }

    /// Adds or replaces the type of `oid`.
    pub fn insert(&mut self, oid: u32, ty: Arc<PgType>) {
        self.types.insert(oid, ty);
    }

    /// Forgets `oid`, e.g. after a composite type was altered, so it is resolved afresh.
    pub fn remove(&mut self, oid: u32) -> Option<Arc<PgType>> {
        self.types.remove(&oid)
    }

    /// Every OID the registry knows, in no particular order.
    pub fn oids(&self) -> impl Iterator<Item = u32> + '_ {
        self.types.keys().copied()
    }
}

const BOX_OID: u32 = 603;
const INT2VECTOR_OID: u32 = 22;
const OIDVECTOR_OID: u32 = 30;

/// `(type OID, its array type's OID or 0, encoding)` for the built-in types, from Postgres's
/// `pg_type.dat` (the OIDs are fixed across versions; the integration tests check them).
const BUILTIN: &[(u32, u32, PgType)] = &[
    (16, 1000, PgType::Bool),
    (17, 1001, PgType::Bytea),
    (18, 1002, PgType::Text),    // "char"
    (19, 1003, PgType::Text),    // name
    (20, 1016, PgType::Int),     // int8
    (21, 1005, PgType::Int),     // int2
    (23, 1007, PgType::Int),     // int4
    (24, 1008, PgType::Other),   // regproc
    (25, 1009, PgType::Text),    // text
    (26, 1028, PgType::Other),   // oid: not a number for to_jsonb()
    (27, 1010, PgType::Other),   // tid
    (28, 1011, PgType::Other),   // xid
    (29, 1012, PgType::Other),   // cid
    (114, 199, PgType::Json),    // json
    (142, 143, PgType::Other),   // xml
    (194, 0, PgType::Other),     // pg_node_tree
    (600, 1017, PgType::Other),  // point
    (601, 1018, PgType::Other),  // lseg
    (602, 1019, PgType::Other),  // path
    (603, 1020, PgType::Other),  // box
    (604, 1027, PgType::Other),  // polygon
    (628, 629, PgType::Other),   // line
    (650, 651, PgType::Other),   // cidr
    (700, 1021, PgType::Float),  // float4
    (701, 1022, PgType::Float),  // float8
    (718, 719, PgType::Other),   // circle
    (774, 775, PgType::Other),   // macaddr8
    (790, 791, PgType::Other),   // money
    (829, 1040, PgType::Other),  // macaddr
    (869, 1041, PgType::Other),  // inet
    (1033, 1034, PgType::Other), // aclitem
    (1042, 1014, PgType::Text),  // bpchar
    (1043, 1015, PgType::Text),  // varchar
    (1082, 1182, PgType::Date),
    (1083, 1183, PgType::Time),
    (1114, 1115, PgType::Timestamp),
    (1184, 1185, PgType::Timestamptz),
    (1186, 1187, PgType::Other), // interval
    (1266, 1270, PgType::TimeTz),
    (1560, 1561, PgType::Other), // bit
    (1562, 1563, PgType::Other), // varbit
    (1700, 1231, PgType::Numeric),
    (1790, 2201, PgType::Other), // refcursor
    (2202, 2207, PgType::Other), // regprocedure
    (2203, 2208, PgType::Other), // regoper
    (2204, 2209, PgType::Other), // regoperator
    (2205, 2210, PgType::Other), // regclass
    (2206, 2211, PgType::Other), // regtype
    (2950, 2951, PgType::Other), // uuid
    (2970, 2949, PgType::Other), // txid_snapshot
    (3220, 3221, PgType::Other), // pg_lsn
    (3361, 0, PgType::Other),    // pg_ndistinct
    (3402, 0, PgType::Other),    // pg_dependencies
    (3614, 3643, PgType::Other), // tsvector
    (3615, 3645, PgType::Other), // tsquery
    (3642, 3644, PgType::Other), // gtsvector
    (3734, 3735, PgType::Other), // regconfig
    (3769, 3770, PgType::Other), // regdictionary
    (3802, 3807, PgType::Json),  // jsonb
    (3904, 3905, PgType::Other), // int4range
    (3906, 3907, PgType::Other), // numrange
    (3908, 3909, PgType::Other), // tsrange
    (3910, 3911, PgType::Other), // tstzrange
    (3912, 3913, PgType::Other), // daterange
    (3926, 3927, PgType::Other), // int8range
    (4072, 4073, PgType::Other), // jsonpath
    (4089, 4090, PgType::Other), // regnamespace
    (4096, 4097, PgType::Other), // regrole
    (4191, 4192, PgType::Other), // regcollation
    (4451, 6150, PgType::Other), // int4multirange
    (4532, 6151, PgType::Other), // nummultirange
    (4533, 6152, PgType::Other), // tsmultirange
    (4534, 6153, PgType::Other), // tstzmultirange
    (4535, 6155, PgType::Other), // datemultirange
    (4536, 6157, PgType::Other), // int8multirange
    (4600, 0, PgType::Other),    // pg_brin_bloom_summary
    (4601, 0, PgType::Other),    // pg_brin_minmax_multi_summary
    (5017, 0, PgType::Other),    // pg_mcv_list
    (5038, 5039, PgType::Other), // pg_snapshot
    (5069, 271, PgType::Other),  // xid8
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_knows_scalars_and_their_arrays() {
        let r = TypeRegistry::builtin();
        assert_eq!(r.get(20).map(|t| &**t), Some(&PgType::Int));
        assert_eq!(r.get(26).map(|t| &**t), Some(&PgType::Other));
        match r.get(1020).map(|t| &**t) {
            Some(PgType::Array { element, delimiter }) => {
                assert_eq!(**element, PgType::Other);
                assert_eq!(*delimiter, b';');
            }
            other => panic!("box[] is {other:?}"),
        }
        match r.get(1185).map(|t| &**t) {
            Some(PgType::Array { element, delimiter }) => {
                assert_eq!(**element, PgType::Timestamptz);
                assert_eq!(*delimiter, b',');
            }
            other => panic!("timestamptz[] is {other:?}"),
        }
        assert!(matches!(
            r.get(22).map(|t| &**t),
            Some(PgType::Vector { .. })
        ));
        assert!(r.get(16384).is_none());
    }
}
