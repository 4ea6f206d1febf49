//! The NATS JetStream source against the real server on this machine.
//!
//! Each test creates its own in-memory stream and durable pull consumer,
//! publishes N messages, fetches k and does not acknowledge them; the source
//! must report `num_pending` N-k and `num_ack_pending` k.
//!
//! Environment: QSCALE_TEST_NATS_URL (default nats://127.0.0.1:4222).

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use common::{env_or, require_reachable, unique};
use futures_util::StreamExt;
use qscale::contract::QueueSource;
use qscale::sources::nats::{NatsSource, NatsSourceConfig};

const N: usize = 10;
const K: usize = 3;

fn url() -> String {
    env_or("QSCALE_TEST_NATS_URL", "nats://127.0.0.1:4222")
}

async fn js() -> jetstream::Context {
    let host = url().trim_start_matches("nats://").to_string();
    require_reachable("NATS", &host, "QSCALE_TEST_NATS_URL");
    let client = async_nats::connect(url())
        .await
        .expect("the test connects to NATS");
    jetstream::new(client)
}

fn cfg(stream: &str, consumer: &str) -> NatsSourceConfig {
    NatsSourceConfig {
        url: url(),
        stream: stream.to_string(),
        consumer: consumer.to_string(),
        domain: None,
        username: None,
        password_env: None,
        password_file: None,
        count_in_flight: true,
    }
}

/// Stream `name` with N messages and durable consumer `workers` that has
/// taken K without acknowledging them.
async fn fixture(js: &jetstream::Context, name: &str) {
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{name}.jobs")],
        storage: stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("create stream");
    for i in 0..N {
        js.publish(format!("{name}.jobs"), format!("job {i}").into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    let consumer = js
        .create_consumer_on_stream(
            pull::Config {
                durable_name: Some("workers".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(300),
                ..Default::default()
            },
            name,
        )
        .await
        .expect("create consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(K)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let mut got = 0;
    while let Some(m) = batch.next().await {
        m.expect("message");
        got += 1;
    }
    assert_eq!(got, K, "fetched messages");
}

fn stream_name(prefix: &str) -> String {
    // Stream names may not contain '.'; unique() gives only '-' and digits.
    unique(prefix).replace('-', "_")
}

#[tokio::test]
async fn the_source_reports_n_minus_k_pending_and_k_awaiting_ack() {
    let js = js().await;
    let name = stream_name("QSCALE");
    fixture(&js, &name).await;
    let src = NatsSource::new(cfg(&name, "workers"), Duration::from_secs(5));
    let s = src.sample().await.expect("sample");
    assert_eq!(s.visible, Some((N - K) as u64));
    assert_eq!(s.in_flight, Some(K as u64));
    let _ = js.delete_stream(&name).await;
}

#[tokio::test]
async fn a_missing_stream_or_consumer_is_not_found_then_found_once_created() {
    let js = js().await;
    let name = stream_name("QSCALE_NF");
    let src = NatsSource::new(cfg(&name, "workers"), Duration::from_secs(5));
    let e = src.sample().await.expect_err("no such stream");
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains("stream not found"), "{e}");

    fixture(&js, &name).await;
    let other = NatsSource::new(cfg(&name, "nobody"), Duration::from_secs(5));
    let e = other.sample().await.expect_err("no such consumer");
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains("consumer not found"), "{e}");

    let s = src.sample().await.expect("the stream exists now");
    assert_eq!(s.visible, Some((N - K) as u64));
    let _ = js.delete_stream(&name).await;
}

#[tokio::test]
async fn a_refused_port_is_unavailable() {
    let src = NatsSource::new(
        NatsSourceConfig {
            url: "nats://127.0.0.1:1".into(),
            ..cfg("S", "c")
        },
        Duration::from_secs(3),
    );
    let e = src.sample().await.expect_err("nothing on port 1");
    assert_eq!(e.metric_label(), "unavailable", "{e}");
}

/// A private nats-server with user/password auth on a free port, for the
/// tests that need a server to refuse credentials or to go away.
struct PrivateServer {
    child: std::process::Child,
    port: u16,
    dir: Option<tempfile::TempDir>,
}

impl Drop for PrivateServer {
    // A failing test must not leave a server running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrivateServer {
    fn start(port: Option<u16>, dir: Option<tempfile::TempDir>) -> PrivateServer {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port")
        });
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        let bin = env_or("QSCALE_TEST_NATS_SERVER", "/usr/sbin/nats-server");
        let child = std::process::Command::new(&bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .args(["--user", "qscale", "--pass", "right-password"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {bin} (set QSCALE_TEST_NATS_SERVER): {e}"));
        // Owned at once, so Drop stops it if the wait below panics.
        let server = PrivateServer {
            child,
            port,
            dir: Some(dir),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("private nats-server did not listen on {port} within 10s");
    }

    /// Stop the server, keeping its store for a restart.
    fn stop(mut self) -> (u16, tempfile::TempDir) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = self.dir.take().expect("the store dir");
        (self.port, dir)
    }
}

fn password_file(dir: &tempfile::TempDir, pw: &str) -> std::path::PathBuf {
    let f = dir.path().join(format!("pw-{pw}"));
    std::fs::write(&f, pw).expect("write password file");
    f
}

#[tokio::test]
async fn wrong_credentials_are_access_denied_without_showing_the_password() {
    let server = PrivateServer::start(None, None);
    let secrets = tempfile::tempdir().unwrap();
    let src = NatsSource::new(
        NatsSourceConfig {
            url: format!("nats://127.0.0.1:{}", server.port),
            username: Some("qscale".into()),
            password_file: Some(password_file(&secrets, "wrong-nats-pw-7781")),
            ..cfg("S", "c")
        },
        Duration::from_secs(5),
    );
    let e = src.sample().await.expect_err("wrong password");
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    assert!(!e.to_string().contains("wrong-nats-pw-7781"), "{e}");
    server.stop();
}

#[tokio::test]
async fn a_server_that_goes_away_is_unavailable_and_the_source_recovers_when_it_returns() {
    let server = PrivateServer::start(None, None);
    let port = server.port;
    let secrets = tempfile::tempdir().unwrap();
    let admin = async_nats::ConnectOptions::new()
        .user_and_password("qscale".into(), "right-password".into())
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .expect("connect to the private server");
    let js = jetstream::new(admin);
    // File storage, so the stream survives the restart below.
    js.create_stream(stream::Config {
        name: "RESTART".into(),
        subjects: vec!["restart.jobs".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    js.create_consumer_on_stream(
        pull::Config {
            durable_name: Some("workers".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        },
        "RESTART",
    )
    .await
    .expect("create consumer");
    for i in 0..N {
        js.publish("restart.jobs", format!("{i}").into())
            .await
            .expect("publish")
            .await
            .expect("ack");
    }
    let src = NatsSource::new(
        NatsSourceConfig {
            url: format!("nats://127.0.0.1:{port}"),
            username: Some("qscale".into()),
            password_file: Some(password_file(&secrets, "right-password")),
            ..cfg("RESTART", "workers")
        },
        Duration::from_secs(3),
    );
    assert_eq!(
        src.sample().await.expect("first poll").visible,
        Some(N as u64)
    );

    let (port, dir) = server.stop();
    let e = common::poll_until(
        Duration::from_secs(10),
        Duration::from_millis(200),
        "the source notices the server is gone",
        || async {
            match src.sample().await {
                Err(e) => Ok(e),
                Ok(s) => Err(format!("still sampled {:?}", s.visible)),
            }
        },
    )
    .await;
    assert!(matches!(e.metric_label(), "unavailable" | "timeout"), "{e}");

    let server = PrivateServer::start(Some(port), Some(dir));
    let s = common::poll_until(
        Duration::from_secs(20),
        Duration::from_millis(250),
        "the source reconnects after the restart",
        || async { src.sample().await.map_err(|e| e.to_string()) },
    )
    .await;
    assert_eq!(s.visible, Some(N as u64));
    server.stop();
}
