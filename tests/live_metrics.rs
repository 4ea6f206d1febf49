//! `qscale run` as a child process on demo scalers, and its live /metrics:
//! Prometheus's `promtool check metrics` (Debian's `prometheus` package,
//! installed by scripts/prometheus.sh) finds no problem in it, every counter
//! series with a bounded label set exists at 0 before anything went wrong,
//! and a reload that removes a scaler removes all of its series.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qscale::contract::{SourceError, TargetError};

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A minimal HTTP/1.0 GET: (status, body).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A demo scaler on its own simulated queue: it never fails.
fn demo_scaler(name: &str) -> String {
    format!(
        r#"
[[scaler]]
name = "{name}"
poll_interval = "1s"
[scaler.source]
kind = "demo"
queue = "{name}"
pattern = "constant:rate=5"
[scaler.target]
kind = "demo"
queue = "{name}"
seconds_per_message = 0.5
startup_delay = "1s"
initial_replicas = 1
[scaler.policy]
min_replicas = 1
max_replicas = 10
messages_per_replica = 5
"#
    )
}

struct Daemon {
    child: Child,
    addr: SocketAddr,
}

impl Daemon {
    fn start(config: &Path) -> Daemon {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_qscale"))
            .args(["run", "--config", config.to_str().expect("utf-8 path")])
            .env("QSCALE__SERVER__LISTEN", addr.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qscale run");
        let d = Daemon { child, addr };
        wait_until(Duration::from_secs(20), "qscale serves /healthz", || {
            get(addr, "/healthz").is_some()
        });
        d
    }

    fn metrics(&self) -> String {
        let (status, body) = get(self.addr, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200, "{body}");
        body
    }

    fn scaler_names(&self) -> Vec<String> {
        let (_, body) = get(self.addr, "/status").expect("/status answers");
        let v: serde_json::Value = serde_json::from_str(&body).expect("/status is JSON");
        v["scalers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counter series a demo scaler starts with, each at 0.
fn zero_series(scaler: &str) -> Vec<String> {
    let mut want = Vec::new();
    for e in SourceError::METRIC_LABELS {
        want.push(format!(
            "qscale_source_errors_total{{error=\"{e}\",scaler=\"{scaler}\",source=\"demo\"}} 0"
        ));
    }
    for e in TargetError::METRIC_LABELS {
        want.push(format!(
            "qscale_target_errors_total{{error=\"{e}\",scaler=\"{scaler}\",target=\"demo\"}} 0"
        ));
    }
    want
}

#[test]
fn promtool_finds_no_problem_in_the_live_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("qscale.toml");
    std::fs::write(&cfg, format!("{}{}", demo_scaler("a"), demo_scaler("b"))).unwrap();
    let daemon = Daemon::start(&cfg);
    // After a poll, so the gauges and histograms of a poll are there too.
    wait_until(Duration::from_secs(20), "a first poll", || {
        daemon
            .metrics()
            .contains("qscale_replicas{kind=\"desired\",scaler=\"b\"}")
    });
    let text = daemon.metrics();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): install Debian's prometheus package \
                 (`bash scripts/prometheus.sh` does)"
            )
        });
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write /metrics to promtool");
    let out = promtool.wait_with_output().expect("promtool runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics found problems:\n{said}\nin:\n{text}"
    );
}

#[test]
fn zero_series_exist_before_any_error_and_vanish_when_a_reload_removes_the_scaler() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("qscale.toml");
    std::fs::write(
        &cfg,
        format!("{}{}", demo_scaler("kept"), demo_scaler("gone")),
    )
    .unwrap();
    let daemon = Daemon::start(&cfg);
    let text = daemon.metrics();
    for scaler in ["kept", "gone"] {
        for line in zero_series(scaler) {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        for d in ["up", "down"] {
            let series =
                format!("qscale_scale_operations_total{{direction=\"{d}\",scaler=\"{scaler}\"}} ");
            assert!(text.contains(&series), "missing {series} in\n{text}");
        }
        let stamp =
            format!("qscale_last_successful_poll_timestamp_seconds{{scaler=\"{scaler}\"}} ");
        assert!(text.contains(&stamp), "missing {stamp} in\n{text}");
    }

    std::fs::write(&cfg, demo_scaler("kept")).unwrap();
    let kill = Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(kill.success());
    wait_until(Duration::from_secs(20), "the reload drops \"gone\"", || {
        daemon.scaler_names() == ["kept"]
    });
    let text = daemon.metrics();
    assert!(
        !text.contains("scaler=\"gone\""),
        "series of the removed scaler remain:\n{text}"
    );
    for line in zero_series("kept") {
        assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
    }
}
