//! The command line beyond the listeners: `--version`, and `--log-format json` (or
//! `log_format` in the config file) giving one JSON object per log line for log shippers.

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::process::{Command, Stdio};

use e2e::{Bridge, Listening, TempDir};

#[test]
fn version_prints_the_crate_version_and_exits_0() {
    let out = Command::new(Bridge::binary())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("bridge {}", env!("CARGO_PKG_VERSION")));
}

/// Starts the bridge with `args`, waits for its listening line, stops it with SIGTERM and
/// returns what it logged.
fn logs_of(args: &[&str]) -> String {
    let mut child = Command::new(Bridge::binary())
        .args([
            "--http",
            "127.0.0.1:0",
            "--mqtt",
            "127.0.0.1:0",
            "--data",
            "none",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The harness's reader: it gives up after a deadline rather than hang the test.
    let line = Listening::read_line(child.stdout.take().unwrap()).unwrap();
    assert!(line.starts_with("bridge listening:"), "{line}");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    logs
}

fn assert_json_lines(logs: &str) {
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.len() >= 3,
        "start, listening and stop are logged: {logs}"
    );
    for line in &lines {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        assert!(event["timestamp"].is_string(), "{line}");
        assert!(event["level"].is_string(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("bridge listening:")),
        "the listening line is logged too: {logs}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    assert_json_lines(&logs_of(&["--log-format", "json"]));
}

#[test]
fn log_format_in_the_config_file_works_too_and_text_is_the_default() {
    let dir = TempDir::new("log-format");
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    assert_json_lines(&logs_of(&["--config", config.to_str().unwrap()]));
    let text = logs_of(&[]);
    assert!(
        text.lines()
            .any(|l| l.contains("INFO") && !l.starts_with('{')),
        "{text}"
    );
    let bad = Command::new(Bridge::binary())
        .args(["--log-format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
