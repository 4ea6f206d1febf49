//! The RabbitMQ source against the real broker on this machine.
//!
//! Each test declares its own queue, publishes N messages, takes k with
//! `basic.get` without acknowledging them (they stay unacknowledged while
//! the test's channel is open), and checks what the source reports. The
//! management API's statistics refresh about every 5 seconds, so tests that
//! read them poll with a bounded wait.
//!
//! Environment: QSCALE_TEST_AMQP_URL (default amqp://127.0.0.1:5672),
//! QSCALE_TEST_RABBITMQ_MANAGEMENT_URL (default http://127.0.0.1:15672),
//! user guest / password guest.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{env_or, poll_until, require_reachable, unique};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use qscale::contract::QueueSource;
use qscale::sources::rabbitmq::{AMQP_ONLY_NOTE, RabbitmqSource, RabbitmqSourceConfig};

const N: u32 = 10;
const K: u32 = 3;

fn amqp_url() -> String {
    env_or("QSCALE_TEST_AMQP_URL", "amqp://127.0.0.1:5672")
}

fn management_url() -> String {
    env_or(
        "QSCALE_TEST_RABBITMQ_MANAGEMENT_URL",
        "http://127.0.0.1:15672",
    )
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?']).next())
        .map(|h| h.rsplit('@').next().unwrap_or(h).to_string())
        .unwrap_or_default()
}

fn require_broker() {
    require_reachable(
        "RabbitMQ (AMQP)",
        &host_port(&amqp_url()),
        "QSCALE_TEST_AMQP_URL",
    );
    require_reachable(
        "RabbitMQ management API",
        &host_port(&management_url()),
        "QSCALE_TEST_RABBITMQ_MANAGEMENT_URL",
    );
}

/// A password file holding `pw`, kept alive by the returned guard.
fn password_file(pw: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let f = dir.path().join("password");
    std::fs::write(&f, format!("{pw}\n")).expect("write password file");
    (dir, f)
}

fn source_cfg(queue: &str, pw_file: &std::path::Path, management: bool) -> RabbitmqSourceConfig {
    RabbitmqSourceConfig {
        url: format!("{}/%2f", amqp_url().trim_end_matches('/')),
        queue: queue.to_string(),
        vhost: None,
        username: Some("guest".into()),
        password_env: None,
        password_file: Some(pw_file.to_path_buf()),
        management_url: management.then(management_url),
        count_in_flight: true,
        dead_letter_queue: None,
    }
}

/// The test's own connection: declares the queue, publishes N, takes K
/// without acknowledging them. Keep it alive while asserting.
struct Fixture {
    _conn: Connection,
    channel: Channel,
    queue: String,
}

impl Fixture {
    async fn new(prefix: &str) -> Fixture {
        let url = format!("amqp://guest:guest@{}/%2f", host_port(&amqp_url()));
        let conn = Connection::connect(&url, ConnectionProperties::default())
            .await
            .expect("the test connects to RabbitMQ");
        let channel = conn.create_channel().await.expect("channel");
        let queue = unique(prefix);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare queue");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        for i in 0..N {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    format!("job {i}").as_bytes(),
                    // Ten seconds ago, so the age the source reports is
                    // clearly above zero.
                    BasicProperties::default().with_timestamp(now - 10),
                )
                .await
                .expect("publish")
                .await
                .expect("publish confirm");
        }
        // A passive declare from our own channel syncs with the queue, so
        // every publish has landed before we take messages.
        for _ in 0..K {
            let got = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: false })
                .await
                .expect("basic.get");
            assert!(got.is_some(), "a message to take");
        }
        Fixture {
            _conn: conn,
            channel,
            queue,
        }
    }

    async fn delete(&self) {
        let _ = self
            .channel
            .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-fsS", "-u", "guest:guest"])
        .args(args)
        .output()
        .expect("run curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn amqp_alone_reports_ready_messages_and_says_in_flight_is_unknown() {
    require_broker();
    let fx = Fixture::new("qscale-amqp").await;
    let (_d, pw) = password_file("guest");
    let src = RabbitmqSource::new(source_cfg(&fx.queue, &pw, false), Duration::from_secs(5));
    let s = src.sample().await.expect("sample");
    assert_eq!(s.visible, Some(u64::from(N - K)));
    assert_eq!(s.in_flight, None, "AMQP cannot see unacknowledged messages");
    assert_eq!(s.consumers, Some(0));
    assert!(s.notes.iter().any(|n| n == AMQP_ONLY_NOTE), "{:?}", s.notes);
    fx.delete().await;
}

#[tokio::test]
async fn with_the_management_api_the_source_reports_n_minus_k_visible_and_k_in_flight() {
    require_broker();
    let fx = Fixture::new("qscale-mgmt").await;
    let (_d, pw) = password_file("guest");
    let src = RabbitmqSource::new(source_cfg(&fx.queue, &pw, true), Duration::from_secs(5));
    let s = poll_until(
        Duration::from_secs(40),
        Duration::from_millis(500),
        "management statistics show the unacknowledged messages",
        || async {
            let s = src.sample().await.map_err(|e| e.to_string())?;
            // The management API refreshes counts and head_message_timestamp
            // on its own schedule; wait for both.
            if s.visible == Some(u64::from(N - K))
                && s.in_flight == Some(u64::from(K))
                && s.oldest_age.is_some()
            {
                Ok(s)
            } else {
                Err(format!(
                    "visible {:?}, in flight {:?}, oldest age {:?}",
                    s.visible, s.in_flight, s.oldest_age
                ))
            }
        },
    )
    .await;
    let age = s
        .oldest_age
        .expect("messages carry a timestamp, so age is known");
    assert!(age >= Duration::from_secs(9), "age {age:?}");
    assert!(
        s.arrival_rate.is_some_and(|r| r >= 0.0),
        "{:?}",
        s.arrival_rate
    );
    assert!(!s.notes.iter().any(|n| n == AMQP_ONLY_NOTE));
    fx.delete().await;
}

#[tokio::test]
async fn a_missing_queue_is_not_found_and_the_next_poll_recovers_once_it_exists() {
    require_broker();
    let (_d, pw) = password_file("guest");
    let queue = unique("qscale-missing");
    let src = RabbitmqSource::new(source_cfg(&queue, &pw, false), Duration::from_secs(5));
    let e = src.sample().await.expect_err("no such queue");
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains(&queue), "{e}");

    // The 404 closed the source's channel; creating the queue and polling
    // again must work on a fresh one.
    let fx = Fixture::new("unused").await;
    fx.channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declare");
    let s = src.sample().await.expect("the next poll reconnects");
    assert_eq!(s.visible, Some(0));
    let _ = fx
        .channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    fx.delete().await;
}

#[tokio::test]
async fn wrong_credentials_are_access_denied_and_the_password_is_never_shown() {
    require_broker();
    let fx = Fixture::new("qscale-creds").await;
    let (_d, pw) = password_file("not-the-password-8431");
    let src = RabbitmqSource::new(source_cfg(&fx.queue, &pw, false), Duration::from_secs(5));
    let e = src.sample().await.expect_err("wrong password");
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    assert!(!e.to_string().contains("not-the-password-8431"), "{e}");
    assert!(!format!("{src:?}").contains("not-the-password-8431"));
    // The management API refuses it too, with the same label.
    let mgmt = RabbitmqSource::new(source_cfg(&fx.queue, &pw, true), Duration::from_secs(5));
    let e = mgmt.sample().await.expect_err("wrong password");
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    fx.delete().await;
}

#[tokio::test]
async fn a_refused_port_is_unavailable() {
    let (_d, pw) = password_file("guest");
    let cfg = RabbitmqSourceConfig {
        url: "amqp://guest@127.0.0.1:1/%2f".into(),
        ..source_cfg("q", &pw, false)
    };
    let e = RabbitmqSource::new(cfg, Duration::from_secs(5))
        .sample()
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(e.metric_label(), "unavailable", "{e}");
}

#[tokio::test]
async fn a_connection_closed_by_the_broker_is_reopened_on_the_next_poll() {
    require_broker();
    let fx = Fixture::new("qscale-closed").await;
    let (_d, pw) = password_file("guest");
    let src = RabbitmqSource::new(source_cfg(&fx.queue, &pw, false), Duration::from_secs(5));
    src.sample()
        .await
        .expect("first sample opens the connection");

    // Find the source's connection by the name it gives itself and have
    // the broker close it, as an operator or a broker restart would.
    let wanted = format!("qscale {}", fx.queue);
    let name = poll_until(
        Duration::from_secs(20),
        Duration::from_millis(500),
        "the source's connection appears in the management API",
        || async {
            let list: serde_json::Value =
                serde_json::from_str(&curl(&[&format!("{}/api/connections", management_url())]))
                    .map_err(|e| e.to_string())?;
            list.as_array()
                .into_iter()
                .flatten()
                .find(|c| {
                    c.pointer("/client_properties/connection_name")
                        .and_then(|v| v.as_str())
                        == Some(wanted.as_str())
                })
                .and_then(|c| c.get("name").and_then(|n| n.as_str()).map(str::to_string))
                .ok_or_else(|| "not listed yet".to_string())
        },
    )
    .await;
    let enc = percent_encoding::utf8_percent_encode(&name, percent_encoding::NON_ALPHANUMERIC);
    curl(&[
        "-X",
        "DELETE",
        &format!("{}/api/connections/{enc}", management_url()),
    ]);

    // The poll right after the close either sees the dead connection
    // (unavailable) or already notices it is closed and reconnects; either
    // way the one after must succeed with the right numbers.
    match src.sample().await {
        Ok(s) => assert_eq!(s.visible, Some(u64::from(N - K))),
        Err(e) => assert_eq!(e.metric_label(), "unavailable", "{e}"),
    }
    let s = src.sample().await.expect("the next poll reconnects");
    assert_eq!(s.visible, Some(u64::from(N - K)));
    fx.delete().await;
}
