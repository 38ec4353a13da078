//! walhook's text logs as the real binary writes them: plain on a pipe or in a file (what a log
//! collector reads), coloured only on a terminal, and never when `NO_COLOR` is set.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The start of an ANSI escape sequence (colours, bold, dim).
const ESCAPE: &str = "\u{1b}[";

/// A config whose database nothing listens at: `walhook run` logs what the state file holds,
/// then stops at connecting. Returns its path.
fn unreachable_config(name: &str) -> PathBuf {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("walhook-logs-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("walhook.toml");
    std::fs::write(
        &path,
        format!(
            "[source]\nurl = \"postgres://walhook:pw@127.0.0.1:{port}/app?sslmode=disable\"\n\
             [subscribers.billing]\nurl = \"http://127.0.0.1:9/\"\n\
             [[events]]\ntype = \"o\"\ntable = \"public.orders\"\nsubscribers = [\"billing\"]\n"
        ),
    )
    .unwrap();
    path
}

/// `walhook run` with `config`, at log level info, as a shell command line.
fn run_line(config: &Path) -> String {
    format!(
        "'{}' --config '{}' run",
        env!("CARGO_BIN_EXE_walhook"),
        config.display()
    )
}

/// Runs `line` in a shell on a pseudo-terminal (`script`), with `NO_COLOR` as given; returns
/// its exit code and what the terminal showed.
fn on_a_terminal(line: &str, no_color: Option<&str>) -> (Option<i32>, String) {
    let mut command = Command::new("script");
    command
        .args(["-qec", line, "/dev/null"])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("WALHOOK_CONFIG")
        .stdin(Stdio::null());
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    let out = command.output().expect("run `script` (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn logs_on_a_pipe_carry_no_colour_codes() {
    // GIVEN walhook run with its stderr piped, and NO_COLOR unset
    let config = unreachable_config("pipe");
    let out = Command::new(env!("CARGO_BIN_EXE_walhook"))
        .arg("--config")
        .arg(&config)
        .arg("run")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("WALHOOK_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // THEN it logged, and stopped with the cause, in plain text
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(" INFO walhook::app: state file at start subscriber=billing held=0"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: cannot connect to Postgres"),
        "{stderr}"
    );
    assert!(!stderr.contains(ESCAPE), "{stderr:?}");
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let config = unreachable_config("terminal");
    let line = run_line(&config);
    // GIVEN a terminal WHEN NO_COLOR is unset THEN the log lines are coloured
    let (code, shown) = on_a_terminal(&line, None);
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("state file at start"), "{shown}");
    assert!(shown.contains(ESCAPE), "{shown:?}");
    // WHEN NO_COLOR is empty THEN that asks for nothing: still coloured
    let (_, shown) = on_a_terminal(&line, Some(""));
    assert!(shown.contains(ESCAPE), "{shown:?}");
    // WHEN NO_COLOR has any other value THEN plain text
    for value in ["1", "0", "false"] {
        let (code, shown) = on_a_terminal(&line, Some(value));
        assert_eq!(code, Some(1), "{shown}");
        assert!(shown.contains("state file at start"), "{shown}");
        assert!(!shown.contains(ESCAPE), "NO_COLOR={value}: {shown:?}");
    }
    let _ = std::fs::remove_dir_all(config.parent().unwrap());
}
