//! `qscale run --time-scale N` as a real child process on the demo world:
//! a 30 s poll interval polls every 3 real seconds at N = 10, and a 60 s
//! scale-down stabilization window lets go after about 6 real seconds, so
//! the control benchmark can replay a compressed trace with every duration
//! of the config acting as in real time. Bad values are refused with a
//! one-line error before anything starts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A minimal HTTP/1.0 GET of a JSON body.
fn get_json(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (_, body) = buf.split_once("\r\n\r\n")?;
    serde_json::from_str(body).ok()
}

/// Kills the daemon when the test ends, however it ends.
struct Child_(Child);

impl Drop for Child_ {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn at_time_scale_10_a_30s_poll_runs_every_3s_and_a_60s_window_closes_after_6s() {
    let dir = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = dir.path().join("qscale.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "{addr}"

[defaults]
poll_interval = "30s"

[[scaler]]
name = "scaled"

[scaler.source]
kind = "demo"
queue = "idle"
pattern = "constant:rate=0"

[scaler.target]
kind = "demo"
queue = "idle"
seconds_per_message = 1.0
startup_delay = "0s"
initial_replicas = 5

[scaler.policy]
min_replicas = 1
max_replicas = 10
messages_per_replica = 10

[scaler.policy.scale_down]
stabilization = "60s"
"#
        ),
    )
    .unwrap();
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["run", "--time-scale", "10", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qscale run");
    let _guard = Child_(child);

    // Watch /status: every new `last_poll` is a poll; the first change of
    // the desired count is the scale-down the window was holding back.
    let mut polls: Vec<f64> = Vec::new();
    let mut scaled_down_after = None;
    while started.elapsed() < Duration::from_secs(14) {
        std::thread::sleep(Duration::from_millis(50));
        let Some(st) = get_json(addr, "/status/scaled") else {
            continue;
        };
        if let Some(t) = st["last_poll"].as_f64()
            && polls.last() != Some(&t)
        {
            polls.push(t);
        }
        if scaled_down_after.is_none() && st["last_action"]["to"].as_u64() == Some(1) {
            scaled_down_after = Some(started.elapsed());
        }
    }
    eprintln!("polls at {polls:?}; scaled down after {scaled_down_after:?}");
    assert!(polls.len() >= 4, "too few polls in 14 s: {polls:?}");
    for w in polls.windows(2) {
        let gap = w[1] - w[0];
        // 30 s / 10 ± 10 % jitter, with room for a loaded machine.
        assert!((2.6..=3.9).contains(&gap), "poll gap {gap:.2}s: {polls:?}");
    }
    let down = scaled_down_after.expect("scaled down to 1 within 14 real seconds");
    // The 60 s (virtual) window holds the 5 replicas for 6 real seconds; the
    // write lands on the first poll after that (at real time 6 or 9 s).
    assert!(
        down >= Duration::from_millis(5_500) && down <= Duration::from_secs(13),
        "scale-down seen after {down:?}"
    );
}

#[test]
fn a_bad_time_scale_is_refused_with_a_one_line_error() {
    for bad in ["0", "-1", "NaN", "inf", "ten"] {
        let out = Command::new(env!("CARGO_BIN_EXE_qscale"))
            .args(["run", "--config", "/nonexistent.toml", "--time-scale", bad])
            .output()
            .expect("run qscale");
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: invalid value") && first.contains("time scale must"),
            "{bad}: {err}"
        );
    }
}
