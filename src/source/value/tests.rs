//! Arrays, composites and their nesting, through the public entry point; and a property test
//! that no input makes any type panic or emit invalid JSON.

use std::sync::Arc;

use proptest::prelude::*;

use super::{encode_text, PgType, ValueError};

fn array(element: PgType) -> PgType {
    PgType::Array {
        element: Arc::new(element),
        delimiter: b',',
    }
}

fn composite(fields: &[(&str, PgType)]) -> PgType {
    PgType::Composite {
        fields: fields
            .iter()
            .map(|(name, ty)| (name.to_string(), Arc::new(ty.clone())))
            .collect(),
    }
}

fn json(ty: &PgType, text: &str) -> Result<String, ValueError> {
    let mut out = String::from("prefix");
    let result = encode_text(ty, text.as_bytes(), &mut out);
    match result {
        Ok(()) => Ok(out["prefix".len()..].to_string()),
        Err(e) => {
            assert_eq!(
                out, "prefix",
                "a failed encode must leave the buffer as it was"
            );
            Err(e)
        }
    }
}

#[test]
fn arrays_nest_by_dimension_and_drop_bounds() {
    let ints = array(PgType::Int);
    for (text, want) in [
        ("{}", "[]"),
        ("{1,2,3}", "[1,2,3]"),
        ("{{1,NULL},{3,4}}", "[[1,null],[3,4]]"),
        ("[0:1]={1,2}", "[1,2]"),
        ("[1:1][-2:-1]={{1,2}}", "[[1,2]]"),
        ("{{{1}}}", "[[[1]]]"),
        (" { 1 , 2 } ", "[1,2]"),
        ("{null,NuLl}", "[null,null]"),
    ] {
        assert_eq!(json(&ints, text).as_deref(), Ok(want), "{text}");
    }
}

#[test]
fn array_elements_unquote_and_unescape() {
    let texts = array(PgType::Text);
    for (text, want) in [
        (
            r#"{"a\\b","NULL","null"," x ","",NULL,"a,b","{}"}"#,
            r#"["a\\b","NULL","null"," x ","",null,"a,b","{}"]"#,
        ),
        (
            r#"{"say \"hi\"",plain,esc\,aped}"#,
            r#"["say \"hi\"","plain","esc,aped"]"#,
        ),
        ("{\"\t\"}", r#"["\t"]"#),
        ("{é,☃}", r#"["é","☃"]"#),
        (r#"{\NULL}"#, r#"["NULL"]"#),
    ] {
        assert_eq!(json(&texts, text).as_deref(), Ok(want), "{text}");
    }
    let boxes = PgType::Array {
        element: Arc::new(PgType::Other),
        delimiter: b';',
    };
    assert_eq!(
        json(&boxes, "{(3,4),(1,2);(7,8),(5,6)}").as_deref(),
        Ok(r#"["(3,4),(1,2)","(7,8),(5,6)"]"#)
    );
    let stamps = array(PgType::Timestamptz);
    assert_eq!(
        json(&stamps, r#"{"2026-11-26 17:51:10.57433+00",infinity,NULL}"#).as_deref(),
        Ok(r#"["2026-11-26T17:51:10.57433+00:00","infinity",null]"#)
    );
    let docs = array(PgType::Json);
    assert_eq!(
        json(&docs, r#"{"{\"a\": 1}",[1]}"#).as_deref(),
        Ok(r#"[{"a": 1},[1]]"#)
    );
}

#[test]
fn malformed_arrays_are_errors() {
    let ints = array(PgType::Int);
    for text in [
        "",
        "{",
        "}",
        "{1,2",
        "{1,,2}",
        "{1,}",
        "{,1}",
        "1,2",
        "{1}x",
        "{1}}",
        "{{1}",
        "{\"1}",
        "{1\\",
        "[1:2]{1,2}",
        "[1:2={1,2}",
        "{{{{{{{1}}}}}}}",
        "{a}",
        "{1 2}",
        "{1\"2\"}",
    ] {
        assert!(json(&ints, text).is_err(), "{text:?}");
    }
}

#[test]
fn vectors_are_space_separated() {
    let v = PgType::Vector {
        element: Arc::new(PgType::Int),
    };
    assert_eq!(json(&v, "1 2 3").as_deref(), Ok("[1,2,3]"));
    assert_eq!(json(&v, "").as_deref(), Ok("[]"));
    let arr = array(v.clone());
    assert_eq!(json(&arr, r#"{"1 2","3"}"#).as_deref(), Ok("[[1,2],[3]]"));
    assert!(json(&v, "1 x").is_err());
}

#[test]
fn composites_become_objects() {
    let inner = composite(&[("a", PgType::Int), ("b", array(PgType::Text))]);
    let outer = composite(&[
        ("x", inner.clone()),
        ("y", PgType::Text),
        ("z", PgType::Timestamptz),
        ("w", PgType::Float),
    ]);
    assert_eq!(
        json(&inner, r#"(1,"{a,""b c""}")"#).as_deref(),
        Ok(r#"{"a":1,"b":["a","b c"]}"#)
    );
    assert_eq!(json(&inner, "(,)").as_deref(), Ok(r#"{"a":null,"b":null}"#));
    let text = r#"("(1,""{""""a\\\\""""b"""","""""""",NULL}"")","q,""x","2026-11-26 18:17:31.00751+00",1e+3)"#;
    assert_eq!(
        json(&outer, text).as_deref(),
        Ok(
            r#"{"x":{"a":1,"b":["a\"b","",null]},"y":"q,\"x","z":"2026-11-26T18:17:31.00751+00:00","w":1000}"#
        )
    );
    let texts = composite(&[
        ("a", PgType::Text),
        ("b", PgType::Text),
        ("c", PgType::Text),
    ]);
    assert_eq!(
        json(&texts, r#"("",,"a""b\\c")"#).as_deref(),
        Ok(r#"{"a":"","b":null,"c":"a\"b\\c"}"#)
    );
    assert_eq!(json(&composite(&[]), "()").as_deref(), Ok("{}"));
    let one = composite(&[("only", PgType::Int)]);
    assert_eq!(json(&one, "()").as_deref(), Ok(r#"{"only":null}"#));
    let rows = array(one.clone());
    assert_eq!(
        json(&rows, r#"{"(1)","()",NULL}"#).as_deref(),
        Ok(r#"[{"only":1},{"only":null},null]"#)
    );
    let odd_key = composite(&[("we\"ird", PgType::Bool)]);
    assert_eq!(json(&odd_key, "(t)").as_deref(), Ok(r#"{"we\"ird":true}"#));
}

#[test]
fn malformed_composites_are_errors() {
    let two = composite(&[("a", PgType::Int), ("b", PgType::Text)]);
    assert_eq!(
        json(&two, "(1)"),
        Err(ValueError::FieldCount { expected: 2 })
    );
    assert_eq!(
        json(&two, "(1,a,b)"),
        Err(ValueError::FieldCount { expected: 2 })
    );
    for text in [
        "", "(", "1,a", "(1,a", "(1,\"a)", "(1,a)x", "(x,a)", "(1,a\\",
    ] {
        assert!(json(&two, text).is_err(), "{text:?}");
    }
}

/// Every kind of type, nested a little, for the property test.
fn all_types() -> Vec<PgType> {
    let scalars = [
        PgType::Bool,
        PgType::Int,
        PgType::Float,
        PgType::Numeric,
        PgType::Json,
        PgType::Text,
        PgType::Bytea,
        PgType::Date,
        PgType::Time,
        PgType::TimeTz,
        PgType::Timestamp,
        PgType::Timestamptz,
        PgType::Other,
    ];
    let mut all: Vec<PgType> = scalars.to_vec();
    all.extend(scalars.iter().cloned().map(array));
    all.push(PgType::Vector {
        element: Arc::new(PgType::Int),
    });
    let row = composite(&[
        ("a", PgType::Int),
        ("b", array(PgType::Text)),
        ("c", PgType::Json),
    ]);
    all.push(array(row.clone()));
    all.push(composite(&[("r", row), ("t", PgType::Timestamptz)]));
    all
}

/// Bytes drawn mostly from the characters the parsers care about, so random input reaches
/// deep into them instead of failing at the first byte.
fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => proptest::sample::select(b"{}()[]:=,;\"\\ -+.eE0123456789tfNULnaIy BCT".to_vec()),
        1 => any::<u8>(),
    ];
    proptest::collection::vec(byte, 0..48)
}

proptest! {
    #[test]
    fn any_input_gives_valid_json_or_an_error(text in interesting_bytes()) {
        for ty in all_types() {
            let mut out = String::from("[");
            match encode_text(&ty, &text, &mut out) {
                Ok(()) => {
                    out.push(']');
                    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&out);
                    prop_assert!(parsed.is_ok(), "{ty:?} on {text:?} gave invalid JSON {out}");
                }
                Err(_) => prop_assert_eq!(&out, "["),
            }
        }
    }

    #[test]
    fn any_string_round_trips(s in any::<String>()) {
        let mut out = String::new();
        encode_text(&PgType::Text, s.as_bytes(), &mut out).unwrap();
        let parsed: String = serde_json::from_str(&out).unwrap();
        prop_assert_eq!(parsed, s);
    }
}
