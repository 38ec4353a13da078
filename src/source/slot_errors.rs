//! Slot problems as the replication connection reports them: the server's error, read as the
//! [`SlotProblem`] it means, so walhook stops with what to do instead of retrying forever.

use super::replication::ReplicationError;
use super::stream::SourceError;
use crate::database::slot_guard::SlotProblem;

/// Recognises a slot problem in an error from the replication connection.
pub fn explain(slot: &str, error: &SourceError) -> Option<SlotProblem> {
    let SourceError::Replication(ReplicationError::Server { code, message, .. }) = error else {
        return None;
    };
    let slot = slot.to_string();
    match code.as_str() {
        // undefined_object: "replication slot \"x\" does not exist"
        "42704" => Some(SlotProblem::Missing { slot }),
        // object_in_use: "replication slot \"x\" is active for PID 123"
        "55006" => {
            let pid = message
                .rsplit(' ')
                .next()
                .unwrap_or("?")
                .trim_end_matches('.')
                .to_string();
            Some(SlotProblem::InUse { slot, pid })
        }
        // object_not_in_prerequisite_state: "can no longer get changes from replication slot"
        "55000"
            if message.contains("can no longer get changes") || message.contains("invalidated") =>
        {
            Some(SlotProblem::Lost { slot })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: &str, message: &str) -> SourceError {
        SourceError::Replication(ReplicationError::Server {
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
        })
    }

    #[test]
    fn recognises_slot_errors() {
        assert_eq!(
            explain(
                "s",
                &server("42704", "replication slot \"s\" does not exist")
            ),
            Some(SlotProblem::Missing { slot: "s".into() })
        );
        assert_eq!(
            explain(
                "s",
                &server("55006", "replication slot \"s\" is active for PID 4242")
            ),
            Some(SlotProblem::InUse {
                slot: "s".into(),
                pid: "4242".into()
            })
        );
        assert_eq!(
            explain(
                "s",
                &server(
                    "55000",
                    "can no longer get changes from replication slot \"s\""
                )
            ),
            Some(SlotProblem::Lost { slot: "s".into() })
        );
        assert_eq!(
            explain("s", &server("57P01", "terminating connection")),
            None
        );
        assert!(SlotProblem::Lost { slot: "s".into() }
            .to_string()
            .contains("`walhook teardown`, then `walhook setup --apply`"));
    }
}
