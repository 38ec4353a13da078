//! The errors `walhook run` stops with, as the operator reads them: [`crate::error_chain`]
//! joins an error and its causes, so a message that repeats its cause's text would say
//! everything twice.

use std::error::Error;
use std::io;

use super::AppError;
use crate::api::ApiError;
use crate::database::prerequisites::{self, Finding, Verdict};
use crate::database::provision::ProvisionError;
use crate::database::slot_guard::SlotProblem;
use crate::delivery::WorkerError;
use crate::source::{slot_errors, ConnectError, OpenError, ReplicationError, SourceError};
use crate::state::StateError;

/// The text of each link of `e`'s chain, outermost first.
fn links(e: &(dyn Error + 'static)) -> Vec<String> {
    let mut texts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(cause) = source {
        texts.push(cause.to_string());
        source = cause.source();
    }
    texts
}

/// Panics when a link's text contains the text of a cause further down its chain.
fn assert_each_cause_once(e: &(dyn Error + 'static)) {
    let texts = links(e);
    for (i, outer) in texts.iter().enumerate() {
        for inner in &texts[i + 1..] {
            assert!(
                !outer.contains(inner.as_str()),
                "`{inner}` appears twice in `{}`",
                crate::error_chain(e)
            );
        }
    }
}

fn server_error(code: &str, message: &str) -> SourceError {
    SourceError::Replication(ReplicationError::Server {
        code: code.into(),
        message: message.into(),
        detail: None,
        hint: None,
    })
}

fn sqlite_error(code: i32, message: &str) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), Some(message.into()))
}

#[test]
fn a_slot_in_use_is_said_once() {
    // GIVEN the server's answer when another process streams from the slot, read as the
    // pipeline reads it
    let problem = slot_errors::explain(
        "walhook",
        &server_error(
            "55006",
            "replication slot \"walhook\" is active for PID 19010",
        ),
    )
    .expect("a slot problem");
    let e = AppError::from(problem);
    // THEN the message is the problem's, once, with the fix
    let text = crate::error_chain(&e);
    assert_eq!(
        text,
        "replication slot `walhook` is in use by another process (PID 19010): another walhook \
         (or another tool) streams from it. Stop that process, or give this walhook its own \
         source.slot"
    );
    assert_each_cause_once(&e);
}

#[test]
fn every_cause_appears_once_in_the_chain() {
    let addr = "127.0.0.1:5432".to_string();
    let state = std::path::PathBuf::from("/var/lib/walhook/walhook-state.db");
    let errors: Vec<AppError> = vec![
        SlotProblem::Lost {
            slot: "walhook".into(),
        }
        .into(),
        SlotProblem::Missing {
            slot: "walhook".into(),
        }
        .into(),
        server_error("55000", "logical decoding requires wal_level >= logical").into(),
        SourceError::Replication(ReplicationError::Io {
            addr: addr.clone(),
            source: io::ErrorKind::ConnectionReset.into(),
        })
        .into(),
        SourceError::Replication(ReplicationError::Open(OpenError::Io {
            addr: addr.clone(),
            source: io::ErrorKind::ConnectionRefused.into(),
        }))
        .into(),
        ConnectError::Open(OpenError::Io {
            addr: addr.clone(),
            source: io::Error::new(io::ErrorKind::TimedOut, "connection timed out"),
        })
        .into(),
        ProvisionError::SlotActive {
            slot: "walhook".into(),
            pid: 19010,
        }
        .into(),
        ProvisionError::MissingTables(vec!["public.orders".into()]).into(),
        StateError::from_sqlite(
            state.clone(),
            "open",
            sqlite_error(26, "file is not a database"),
        )
        .into(),
        WorkerError {
            subscriber: "billing".into(),
            source: Box::new(StateError::from_sqlite(
                state,
                "store pending events",
                sqlite_error(13, "database or disk is full"),
            )),
        }
        .into(),
        prerequisites::ready_to_run(&[Finding {
            verdict: Verdict::Blocks,
            summary: "wal_level is `replica`; logical decoding needs `logical`".into(),
            fix: Some("ALTER SYSTEM SET wal_level = logical;  -- then restart Postgres".into()),
        }])
        .unwrap_err()
        .into(),
        ApiError::Listen {
            addr: "127.0.0.1:9187".parse().unwrap(),
            source: io::ErrorKind::AddrInUse.into(),
        }
        .into(),
    ];
    for e in &errors {
        assert_each_cause_once(e);
    }
}
