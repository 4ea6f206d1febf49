//! Sharding end to end: three `qscale run` processes with leader election
//! on the real kube-apiserver share 30 scalers in 3 shards. Every scaler is
//! led (and actuated) by exactly one process; when one process is killed,
//! its shards move to the survivors within about a lease duration.
//! The scalers use the demo source and target, so what each process
//! actuates is visible in its own metrics.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

struct Proc {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which scalers this process says it leads.
fn led(p: &Proc) -> Vec<String> {
    let Some(body) = get(p.addr, "/status") else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["scalers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|s| s["leader"] == true)
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Scale operations per scaler, as this process counted them.
fn operations(p: &Proc) -> HashMap<String, f64> {
    let mut m = HashMap::new();
    for l in get(p.addr, "/metrics").unwrap_or_default().lines() {
        if !l.starts_with("qscale_scale_operations_total{") {
            continue;
        }
        let v = l
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if let Some(name) = l
            .split("scaler=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            *m.entry(name.to_string()).or_insert(0.0) += v;
        }
    }
    m
}

/// For each process, the scalers it actuated during `window`.
fn actuated_during(ps: &[&Proc], window: Duration) -> Vec<Vec<String>> {
    let before: Vec<HashMap<String, f64>> = ps.iter().map(|p| operations(p)).collect();
    std::thread::sleep(window);
    ps.iter()
        .zip(before)
        .map(|(p, b)| {
            let mut acted: Vec<String> = operations(p)
                .into_iter()
                .filter(|(k, v)| *v > b.get(k).copied().unwrap_or(0.0))
                .map(|(k, _)| k)
                .collect();
            acted.sort();
            acted
        })
        .collect()
}

/// No scaler was actuated by two processes, and each process actuated only
/// scalers it leads. Returns how many scalers were actuated.
fn check_exclusive(ps: &[&Proc], acted: &[Vec<String>]) -> usize {
    let mut all: Vec<&String> = acted.iter().flatten().collect();
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        total,
        all.len(),
        "a scaler was actuated by two processes: {acted:?}"
    );
    for (p, a) in ps.iter().zip(acted) {
        let mine = led(p);
        for s in a {
            assert!(
                mine.contains(s),
                "{s} actuated by a process that does not lead it"
            );
        }
    }
    total
}

fn config(lease: &str, port: u16) -> String {
    let mut c = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[defaults]
poll_interval = "1s"
[leader_election]
enabled = true
lease_name = "{lease}"
namespace = "default"
shards = 3
lease_duration = "3s"
renew_deadline = "2s"
retry_period = "500ms"
"#
    );
    for i in 0..30 {
        c.push_str(&format!(
            r#"
[[scaler]]
name = "s{i}"
[scaler.source]
kind = "demo"
queue = "q{i}"
pattern = "sawtooth:max=60,period=2m"
[scaler.target]
kind = "demo"
queue = "q{i}"
seconds_per_message = 1.0
startup_delay = "0s"
initial_replicas = 1
[scaler.policy]
min_replicas = 1
max_replicas = 200
messages_per_replica = 5
# Every small rise is acted on, so leaders keep writing (see below).
tolerance = 0
"#
        ));
    }
    c
}

fn start(dir: &std::path::Path, lease: &str, n: usize) -> Proc {
    let port = free_port();
    let path = dir.join(format!("p{n}.toml"));
    std::fs::write(&path, config(lease, port)).expect("config");
    let kubeconfig = std::env::var("QSCALE_TEST_KUBECONFIG")
        .unwrap_or_else(|_| "/tmp/qscale-kube/kubeconfig".into());
    let child = Command::new(env!("CARGO_BIN_EXE_qscale"))
        .args(["run", "--config", path.to_str().expect("utf-8")])
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", format!("replica-{n}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("qscale run");
    let p = Proc {
        child,
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
    };
    let t = Instant::now();
    while get(p.addr, "/healthz").is_none() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "replica {n} did not start (is the test apiserver up?)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

fn wait_for(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn each_led_exactly_once(ps: &[&Proc]) -> bool {
    let mut all: Vec<String> = ps.iter().flat_map(|p| led(p)).collect();
    all.sort();
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
        w.sort();
        w
    };
    all == want
}

#[test]
fn thirty_scalers_over_three_processes_are_each_actuated_by_exactly_one_and_move_when_one_dies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lease = format!("shard-e2e-{:08x}", rand::random::<u32>());
    let a = start(dir.path(), &lease, 0);
    let b = start(dir.path(), &lease, 1);
    let c = start(dir.path(), &lease, 2);

    wait_for(
        Duration::from_secs(30),
        "every scaler led by exactly one process",
        || each_led_exactly_once(&[&a, &b, &c]) && [&a, &b, &c].iter().all(|p| !led(p).is_empty()),
    );
    // Arrivals keep rising, so leaders keep scaling: over a window, every
    // actuation comes from the one process that leads the scaler.
    let acted = actuated_during(&[&a, &b, &c], Duration::from_secs(6));
    let n = check_exclusive(&[&a, &b, &c], &acted);
    assert!(n >= 15, "most scalers acted in the window: {acted:?}");

    // Kill one replica without letting it release its Leases.
    let mut dead = c;
    let lost = led(&dead);
    let _ = dead.child.kill();
    let _ = dead.child.wait();
    let t = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "the dead replica's shards moved",
        || each_led_exactly_once(&[&a, &b]),
    );
    let moved = t.elapsed();
    eprintln!("{} scalers moved {:?} after the kill", lost.len(), moved);
    assert!(moved < Duration::from_secs(12), "takeover took {moved:?}");
    // The survivors act on what they now lead, still exclusively. (Whether
    // an orphan needs a change in this window depends on its queue in the
    // survivor; that each is led by exactly one survivor was checked above.)
    let acted = actuated_during(&[&a, &b], Duration::from_secs(6));
    check_exclusive(&[&a, &b], &acted);
}
