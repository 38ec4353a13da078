#![allow(clippy::unwrap_used)]

use super::*;

fn parse(s: &str) -> ConnectSpec {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn tcp(host: &str, port: u16) -> Endpoint {
    Endpoint {
        host: Host::Tcp(host.into()),
        port,
    }
}

#[test]
fn parses_a_full_url() {
    let spec = parse(
        "postgres://walhook:s%40cr%3At@db.internal:6543/app?sslmode=verify-full\
         &sslrootcert=/etc/ca.pem&application_name=wh%20one&connect_timeout=7",
    );
    assert_eq!(
        spec,
        ConnectSpec {
            hosts: vec![tcp("db.internal", 6543)],
            user: "walhook".into(),
            password: Some("s@cr:t".into()),
            dbname: "app".into(),
            sslmode: SslMode::VerifyFull,
            sslrootcert: Some("/etc/ca.pem".into()),
            application_name: "wh one".into(),
            connect_timeout: Some(Duration::from_secs(7)),
        }
    );
}

#[test]
fn fills_in_libpq_defaults() {
    let spec = parse("postgresql://walhook@");
    assert_eq!(spec.hosts, vec![tcp("localhost", 5432)]);
    assert_eq!(spec.dbname, "walhook");
    assert_eq!(spec.password, None);
    assert_eq!(spec.sslmode, SslMode::Prefer);
    assert_eq!(spec.sslrootcert, None);
    assert_eq!(spec.application_name, "walhook");
    assert_eq!(spec.connect_timeout, None);
}

#[test]
fn reads_unix_socket_directories_ipv6_and_host_lists() {
    let unix = parse("postgres://u@%2Ftmp%2Fpg:5433/db");
    assert_eq!(
        unix.hosts,
        vec![Endpoint {
            host: Host::Unix("/tmp/pg".into()),
            port: 5433
        }]
    );
    assert_eq!(unix.hosts[0].to_string(), "/tmp/pg/.s.PGSQL.5433");
    let by_param = parse("postgres:///db?host=/var/run/postgresql&user=u");
    assert_eq!(
        by_param.hosts[0].host,
        Host::Unix("/var/run/postgresql".into())
    );
    let v6 = parse("postgres://u@[::1]:5444,db2,db3:7/db");
    assert_eq!(
        v6.hosts,
        vec![tcp("::1", 5444), tcp("db2", 5432), tcp("db3", 7)]
    );
    assert_eq!(v6.addresses(), "[::1]:5444,db2:5432,db3:7");
    let one_port = parse("postgres://u@a,b/db?port=6000");
    assert_eq!(one_port.hosts, vec![tcp("a", 6000), tcp("b", 6000)]);
}

#[test]
fn a_password_may_hold_a_raw_at_sign_and_plus_stays_plus() {
    let spec = parse("postgres://u:p@ss+w@h/db");
    assert_eq!(spec.password.as_deref(), Some("p@ss+w"));
    assert_eq!(spec.hosts, vec![tcp("h", 5432)]);
}

#[test]
fn parses_key_value_form() {
    // libpq's quoting: inside '...', \' is a quote and \\ a backslash.
    let spec = parse(
        r"host=/tmp port=5555 user=walhook password='it\'s a\\b' dbname = app sslmode=require",
    );
    assert_eq!(spec.password.as_deref(), Some(r"it's a\b"));
    assert_eq!(spec.dbname, "app");
    assert_eq!(spec.sslmode, SslMode::Require);
    assert_eq!(
        spec.hosts,
        vec![Endpoint {
            host: Host::Unix("/tmp".into()),
            port: 5555
        }]
    );
    let multi = parse("host=a,b port=1,2 user=u");
    assert_eq!(multi.hosts, vec![tcp("a", 1), tcp("b", 2)]);
}

#[test]
fn rejects_bad_input_with_a_precise_error() {
    let cases: &[(&str, SpecError)] = &[
        ("mysql://u@h/db", SpecError::Form),
        ("", SpecError::Form),
        ("postgres://h/db", SpecError::NoUser),
        (
            "postgres://u@h:99999/db",
            SpecError::BadPort {
                port: "99999".into(),
            },
        ),
        (
            "postgres://u@h:0/db",
            SpecError::BadPort { port: "0".into() },
        ),
        (
            "postgres://u@h:x/db",
            SpecError::BadPort { port: "x".into() },
        ),
        (
            "postgres://u@[::1/db",
            SpecError::BadHost {
                host: "[::1".into(),
            },
        ),
        (
            "postgres://u:%zz@h/db",
            SpecError::BadEscape {
                what: "the password",
            },
        ),
        (
            "postgres://u:%2@h/db",
            SpecError::BadEscape {
                what: "the password",
            },
        ),
        (
            "postgres://u@h/%ff",
            SpecError::NotUtf8 {
                what: "the database name",
            },
        ),
        ("postgres://u%00@h/db", SpecError::Nul { what: "the user" }),
        (
            "postgres://u@h/db?sslmode=allow",
            SpecError::BadSslMode {
                value: "allow".into(),
            },
        ),
        (
            "postgres://u@h/db?connect_timeout=soon",
            SpecError::BadTimeout {
                value: "soon".into(),
            },
        ),
        (
            "postgres://u@h/db?options=-c%20x",
            SpecError::UnknownParam {
                key: "options".into(),
            },
        ),
        (
            "postgres://u@a,b,c/db?port=1,2",
            SpecError::PortCount { ports: 2, hosts: 3 },
        ),
        ("host=h user", SpecError::KeyValue { at: 7 }),
        ("host=h =x", SpecError::KeyValue { at: 7 }),
        (
            "user=u password='open",
            SpecError::Unterminated {
                key: "password".into(),
            },
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(
            input.parse::<ConnectSpec>().as_ref(),
            Err(expected),
            "{input}"
        );
    }
}

#[test]
fn errors_never_quote_the_password() {
    for input in [
        "postgres://u:hunter2%zz@h/db",
        "postgres://u:hunter2@h:bad/db",
        "user=u password='hunter2",
        "user=u password=hunter2 nonsense",
    ] {
        let err = input.parse::<ConnectSpec>().unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{input}: {err}");
    }
}

#[test]
fn debug_and_display_redact_the_password() {
    let spec = parse("postgres://walhook:hunter2@db:5432/app?sslmode=require");
    let debug = format!("{spec:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    let shown = spec.to_string();
    assert_eq!(
        shown,
        "postgres://walhook@db:5432/app?sslmode=require&application_name=walhook"
    );
}

#[test]
fn display_parses_back_to_the_same_spec_without_password() {
    for input in [
        "postgres://w%20x@%2Ftmp%2Fa%20b:5433/my%2Fdb?sslmode=verify-ca&sslrootcert=/c%20a.pem",
        "postgres://u@[::1]:1,h2:2/db?application_name=a%26b&connect_timeout=3",
    ] {
        let spec = parse(input);
        let again = parse(&spec.to_string());
        assert_eq!(again, spec, "{input} -> {spec}");
    }
}

#[test]
fn sslmode_round_trips() {
    for mode in [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ] {
        assert_eq!(mode.to_string().parse::<SslMode>(), Ok(mode));
    }
}
