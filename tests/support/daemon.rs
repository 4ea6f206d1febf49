//! Helpers for tests that run the real `qscale run` binary as a child process
//! and look at it only from outside: its HTTP endpoints, its signals, its
//! exit code and its log.
//!
//! The HTTP client is a minimal HTTP/1.0 GET over a `TcpStream`, so these
//! tests depend on no HTTP client crate and see exactly what a probe sees.
//!
//! Include with `#[path = "support/daemon.rs"] mod daemon;`.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A minimal HTTP/1.0 GET: the status code and the body, or `None` when
/// nothing answers within a few seconds.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Poll `f` every 200 ms until it holds; fail the test after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of one sample line of a Prometheus text exposition, matched
/// by its exact series (`name{labels}` as qscale renders them, labels
/// sorted).
pub fn sample_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

/// A running `qscale run`, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub addr: SocketAddr,
    /// Where its stderr (the log) goes, when the test keeps it.
    pub log: Option<PathBuf>,
}

impl Daemon {
    /// `qscale run --config <config>` against the Kubernetes API in
    /// `kubeconfig`, with test AWS credentials.
    pub fn command(config: &Path, kubeconfig: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qscale"));
        cmd.args(["run", "--config", config.to_str().expect("utf-8 path")])
            .env("KUBECONFIG", kubeconfig)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null());
        cmd
    }

    /// Start with the log on the test's stderr.
    pub fn start(config: &Path, kubeconfig: &str, addr: SocketAddr) -> Daemon {
        let mut cmd = Daemon::command(config, kubeconfig);
        cmd.stderr(Stdio::inherit());
        Daemon::spawn(cmd, addr, None)
    }

    /// Start with the log (JSON lines) written to `log`, for the test to
    /// read afterwards.
    pub fn start_logging_to(
        config: &Path,
        kubeconfig: &str,
        addr: SocketAddr,
        log: &Path,
    ) -> Daemon {
        let file = std::fs::File::create(log).expect("create the daemon's log file");
        let mut cmd = Daemon::command(config, kubeconfig);
        cmd.args(["--log-format", "json"]).stderr(file);
        Daemon::spawn(cmd, addr, Some(log.to_path_buf()))
    }

    /// Spawn `cmd` and wait until it serves /healthz on `addr`.
    pub fn spawn(mut cmd: Command, addr: SocketAddr, log: Option<PathBuf>) -> Daemon {
        let child = cmd.spawn().expect("start qscale run");
        let mut d = Daemon { child, addr, log };
        let start = Instant::now();
        while get(addr, "/healthz").is_none() {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("qscale run exited with {st} before serving /healthz");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "qscale did not serve /healthz"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    pub fn metrics(&self) -> String {
        get(self.addr, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        let (_, body) = get(self.addr, "/status").expect("/status answers");
        serde_json::from_str(&body).expect("/status is JSON")
    }

    /// One scaler's entry of /status (`Null` when it has none).
    pub fn scaler(&self, name: &str) -> serde_json::Value {
        self.status()["scalers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The log lines written so far, parsed (JSON logs only).
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        let Some(path) = &self.log else {
            return Vec::new();
        };
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig}");
    }

    /// SIGTERM and wait; returns the exit code and how long it took.
    pub fn terminate(&mut self) -> (Option<i32>, Duration) {
        let t = Instant::now();
        self.signal("TERM");
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return (st.code(), t.elapsed());
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                return (None, t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
