//! `qscale run` writes plain log lines, without ANSI escape codes, when its
//! stderr is not a terminal (a pipe, a file, a container's log collector),
//! and honours `NO_COLOR` on a terminal. The terminal case runs the daemon
//! under a real pseudo-terminal from util-linux's `script` (Debian's
//! essential `bsdutils`), stopped after a few seconds by coreutils' `timeout`.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ESC: u8 = 0x1b;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A one-scaler demo config listening on a free loopback port.
fn demo_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("qscale.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{}"
[[scaler]]
name = "logs"
poll_interval = "1s"
[scaler.source]
kind = "demo"
pattern = "constant:rate=5"
[scaler.target]
kind = "demo"
seconds_per_message = 0.5
[scaler.policy]
max_replicas = 5
messages_per_replica = 5
"#,
            free_port()
        ),
    )
    .expect("write config");
    path
}

#[test]
fn logs_into_a_pipe_carry_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["run", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qscale run");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stderr.read_to_end(&mut out);
        out
    });
    // Let it start, poll and scale (each logs a line), then stop it.
    std::thread::sleep(Duration::from_secs(3));
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -TERM");
    let t = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
    let out = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("qscale started"), "{text}");
    assert!(text.contains("SIGTERM: shutting down"), "{text}");
    assert!(text.contains(" INFO "), "plain level names: {text}");
    assert!(
        !out.contains(&ESC),
        "an escape code in logs written to a pipe: {text:?}"
    );
}

/// Run `qscale run` on a pseudo-terminal for three seconds; everything it
/// wrote to the terminal.
fn on_a_terminal(no_color: Option<&str>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = demo_config(dir.path());
    let cmd = format!(
        "timeout -s TERM 3 {} run --config {}",
        env!("CARGO_BIN_EXE_qscale"),
        cfg.display()
    );
    let mut c = Command::new("script");
    c.args(["-q", "-f", "-c", &cmd, "/dev/null"])
        .env("RUST_LOG", "info")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    match no_color {
        Some(v) => c.env("NO_COLOR", v),
        None => c.env_remove("NO_COLOR"),
    };
    let out = c
        .output()
        .expect("util-linux `script` runs (Debian package bsdutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("qscale started"), "{text}");
    out.stdout
}

#[test]
fn a_terminal_gets_colours_unless_no_color_is_set() {
    let coloured = on_a_terminal(None);
    assert!(
        coloured.contains(&ESC),
        "no colour on a terminal: {:?}",
        String::from_utf8_lossy(&coloured)
    );
    let plain = on_a_terminal(Some("1"));
    assert!(
        !plain.contains(&ESC),
        "NO_COLOR=1 still coloured: {:?}",
        String::from_utf8_lossy(&plain)
    );
}
