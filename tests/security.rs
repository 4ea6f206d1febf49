//! Security review, as tests: secrets handed to qscale (broker passwords from
//! the environment, AWS keys) never show in its logs, /status, the page at
//! /, a scaler's history or /metrics, even at debug level and while every
//! call fails; a password written into a URL in the config is refused; the
//! HTTP server can bind to localhost only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BROKER_SECRET: &str = "s3cr3t-broker-pa55word";
const AWS_SECRET: &str = "wJalrXUtnFEMIexampleSECRETKEYdoNotLeak";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn get(addr: SocketAddr, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(s, "GET {path} HTTP/1.0\r\n\r\n");
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf
}

/// Some `qscale_source_errors_total` series is above 0 (every one exists at
/// 0 from the scaler's start).
fn counted_an_error(metrics: &str) -> bool {
    metrics
        .lines()
        .any(|l| l.starts_with("qscale_source_errors_total{") && !l.ends_with(" 0"))
}

#[test]
fn secrets_never_appear_in_logs_status_or_metrics() {
    let port = free_port();
    let dead = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("sec.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[defaults]
poll_interval = "1s"
sample_timeout = "2s"
actuate_timeout = "2s"
[[scaler]]
name = "rabbit"
[scaler.source]
kind = "rabbitmq"
url = "amqp://127.0.0.1:{dead}/%2f"
queue = "jobs"
username = "qscale"
password_env = "QSCALE_TEST_BROKER_PASSWORD"
management_url = "http://127.0.0.1:{dead}"
[scaler.target]
kind = "ecs"
cluster = "c"
service = "s"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{dead}"
[scaler.policy]
max_replicas = 3
messages_per_replica = 10
[[scaler]]
name = "sqs"
[scaler.source]
kind = "sqs"
queue_url = "http://127.0.0.1:{dead}/123456789012/q"
endpoint_url = "http://127.0.0.1:{dead}"
region = "us-east-1"
[scaler.target]
kind = "ecs"
cluster = "c"
service = "s"
region = "us-east-1"
endpoint_url = "http://127.0.0.1:{dead}"
[scaler.policy]
max_replicas = 3
messages_per_replica = 10
"#
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args([
            "run",
            "--config",
            cfg.to_str().expect("utf-8"),
            "--log-format",
            "json",
        ])
        .env("QSCALE_TEST_BROKER_PASSWORD", BROKER_SECRET)
        .env("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEKEYID")
        .env("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        // A file, not a pipe: debug logs would fill a pipe nobody reads yet
        // and block the daemon.
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log file"))
        .spawn()
        .expect("qscale run");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let start = Instant::now();
    let mut seen = String::new();
    // Let both scalers fail some polls (each bounded by its 2 s timeouts),
    // collecting everything the daemon shows meanwhile.
    let mut failed_polls = 0;
    while failed_polls < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no failed polls were reported: {seen:.400}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let status = get(addr, "/status");
        let metrics = get(addr, "/metrics");
        if counted_an_error(&metrics) && status.matches("\"last_error\":{").count() >= 2 {
            failed_polls += 1;
        }
        seen.push_str(&status);
        seen.push_str(&metrics);
        // The page at / shows every scaler's last error; the history its reasons.
        seen.push_str(&get(addr, "/"));
        seen.push_str(&get(addr, "/status/rabbit/history"));
        seen.push_str(&get(addr, "/status/sqs/history"));
    }
    assert!(
        seen.contains("\"rabbit\""),
        "the daemon served /status: {seen:.300}"
    );
    assert!(counted_an_error(&seen), "errors happened and were counted");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let logs = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    assert!(logs.contains("rabbit"), "logs were captured");
    assert!(
        seen.contains("<tr data-scaler=\"rabbit\">"),
        "the daemon served its page: {seen:.300}"
    );
    for (what, text) in [
        ("logs", &logs),
        ("status, page, history and metrics", &seen),
    ] {
        assert!(
            !text.contains(BROKER_SECRET),
            "the broker password leaked into {what}"
        );
        assert!(
            !text.contains(AWS_SECRET),
            "the AWS secret key leaked into {what}"
        );
    }
}

#[test]
fn a_password_written_into_a_url_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("pw.toml");
    std::fs::write(
        &cfg,
        r#"
[[scaler]]
name = "r"
source = { kind = "rabbitmq", url = "amqp://qscale:hunter2@rabbit:5672/%2f", queue = "jobs" }
target = { kind = "kubernetes", name = "w" }
policy = { max_replicas = 3, messages_per_replica = 10 }
"#,
    )
    .expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["check", cfg.to_str().expect("utf-8")])
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must not contain a password"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the refusal must not repeat the password: {err}"
    );
}

#[test]
fn the_server_binds_to_localhost_only_when_asked() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("local.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[[scaler]]
name = "d"
source = {{ kind = "demo", queue = "d", pattern = "constant:rate=1" }}
target = {{ kind = "demo", queue = "d", seconds_per_message = 1.0 }}
policy = {{ max_replicas = 3, messages_per_replica = 10 }}
"#
        ),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["run", "--config", cfg.to_str().expect("utf-8")])
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let start = Instant::now();
    while get(addr, "/healthz").is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no /healthz");
        std::thread::sleep(Duration::from_millis(100));
    }
    let listening = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let hex_port = format!(":{port:04X}");
    let ours: Vec<&str> = listening
        .lines()
        .filter(|l| l.contains(&hex_port) && l.contains(" 0A "))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    assert!(!ours.is_empty(), "the listener was found");
    for l in ours {
        let local = l.split_whitespace().nth(1).unwrap_or("");
        assert!(
            local.starts_with("0100007F:"),
            "bound to {local}, not 127.0.0.1"
        );
    }
}
