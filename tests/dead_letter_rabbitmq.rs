//! Dead-letter discovery on the real RabbitMQ broker of this machine.
//!
//! Each test declares its own dead-letter exchange, dead-letter queue and
//! work queue (unique names), makes workers fail the way they do (take a
//! message, `basic.nack` it with `requeue = false`), so RabbitMQ itself
//! moves the messages to the DLQ, and checks that the source found that
//! queue through the management API and counts what it holds: once from
//! the queue's `x-dead-letter-exchange` argument, once from a policy. The
//! management API's statistics refresh about every 5 seconds, so the
//! checks poll with a bounded wait.
//!
//! Environment: QSCALE_TEST_AMQP_URL (default amqp://127.0.0.1:5672),
//! QSCALE_TEST_RABBITMQ_MANAGEMENT_URL (default http://127.0.0.1:15672),
//! user guest / password guest.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{env_or, poll_until, require_reachable, unique};
use lapin::options::{
    BasicGetOptions, BasicNackOptions, BasicPublishOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use qscale::contract::QueueSource;
use qscale::sources::rabbitmq::{RabbitmqSource, RabbitmqSourceConfig};

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

async fn channel() -> (Connection, Channel) {
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
    let url = format!("amqp://guest:guest@{}/%2f", host_port(&amqp_url()));
    let conn = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("the test connects to RabbitMQ");
    let ch = conn.create_channel().await.expect("channel");
    (conn, ch)
}

/// A dead-letter exchange of `kind` and a queue bound to it with `key`.
async fn dead_letter_pair(ch: &Channel, kind: ExchangeKind, key: &str) -> (String, String) {
    let dlx = unique("qscale-dlx");
    let dlq = unique("qscale-dlq");
    ch.exchange_declare(
        dlx.as_str().into(),
        kind,
        ExchangeDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("declare the dead-letter exchange");
    declare(ch, &dlq, FieldTable::default()).await;
    ch.queue_bind(
        dlq.as_str().into(),
        dlx.as_str().into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind the dead-letter queue");
    (dlx, dlq)
}

async fn declare(ch: &Channel, queue: &str, args: FieldTable) {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
}

/// Publish `n` messages to `queue`, then fail every one of them: take it
/// and nack it without requeueing, as a worker that gives up does.
async fn publish_and_fail(ch: &Channel, queue: &str, n: u32) {
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            format!("poison {i}").as_bytes(),
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("publish confirm");
    }
    for _ in 0..n {
        let got = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
            .expect("a message to fail");
        ch.basic_nack(
            got.delivery.delivery_tag,
            BasicNackOptions {
                multiple: false,
                requeue: false,
            },
        )
        .await
        .expect("basic.nack");
    }
}

fn source(queue: &str) -> RabbitmqSource {
    RabbitmqSource::new(
        RabbitmqSourceConfig {
            url: format!("{}/%2f", amqp_url().trim_end_matches('/')),
            queue: queue.to_string(),
            vhost: None,
            username: None,
            password_env: None,
            password_file: None,
            management_url: Some(management_url()),
            count_in_flight: true,
            dead_letter_queue: None,
        },
        Duration::from_secs(10),
    )
}

/// Sample until the dead-letter depth is `want`; returns the DLQ label.
async fn wait_for_dead_letters(src: &RabbitmqSource, want: u64) -> String {
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(500),
        "the dead-letter depth",
        || async {
            let s = src.sample().await.map_err(|e| e.to_string())?;
            match (s.dead_letter, &s.dead_letter_queue) {
                (Some(n), Some(q)) if n == want => Ok(q.clone()),
                _ => Err(format!(
                    "{:?} {:?} {:?}",
                    s.dead_letter, s.dead_letter_queue, s.notes
                )),
            }
        },
    )
    .await
}

#[tokio::test]
async fn nacked_messages_land_in_the_dlq_discovered_from_the_queue_argument() {
    let (_conn, ch) = channel().await;
    let (dlx, dlq) = dead_letter_pair(&ch, ExchangeKind::Direct, "failed").await;
    // A second queue on the exchange with another key gets nothing from
    // this queue: only the queue bound with the dead-letter key counts.
    let elsewhere = unique("qscale-dlq-other");
    declare(&ch, &elsewhere, FieldTable::default()).await;
    ch.queue_bind(
        elsewhere.as_str().into(),
        dlx.as_str().into(),
        "other".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind");
    let work = unique("qscale-work");
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from(dlx.as_str())),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from("failed")),
    );
    declare(&ch, &work, args).await;

    let src = source(&work);
    assert_eq!(
        wait_for_dead_letters(&src, 0).await,
        format!("{dlq} (discovered from argument x-dead-letter-exchange {dlx:?})")
    );
    publish_and_fail(&ch, &work, 5).await;
    wait_for_dead_letters(&src, 5).await;
    let s = src.sample().await.expect("sample");
    assert_eq!(
        s.visible,
        Some(0),
        "the failed messages left the work queue"
    );
}

/// A request to the management API with guest's credentials; the status.
fn management(method: &str, path: &str, body: &str) -> u16 {
    let hp = host_port(&management_url());
    let mut s = std::net::TcpStream::connect(&hp).expect("management API");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: {hp}\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_dead_letter_exchange_set_by_a_policy_is_discovered_too() {
    let (_conn, ch) = channel().await;
    let (dlx, dlq) = dead_letter_pair(&ch, ExchangeKind::Fanout, "").await;
    let work = unique("qscale-policied");
    declare(&ch, &work, FieldTable::default()).await;
    let policy = unique("qscale-dlx-policy");
    let put = management(
        "PUT",
        &format!("/api/policies/%2F/{policy}"),
        &format!(
            r#"{{"pattern":"^{work}$","definition":{{"dead-letter-exchange":"{dlx}"}},"apply-to":"queues","priority":100}}"#
        ),
    );
    assert!(put == 201 || put == 204, "PUT policy: HTTP {put}");

    let src = source(&work);
    let label = wait_for_dead_letters(&src, 0).await;
    publish_and_fail(&ch, &work, 3).await;
    wait_for_dead_letters(&src, 3).await;
    let status = management("DELETE", &format!("/api/policies/%2F/{policy}"), "");
    assert_eq!(
        label,
        format!("{dlq} (discovered from policy {policy} {dlx:?})")
    );
    assert!(
        status == 204 || status == 200,
        "DELETE policy: HTTP {status}"
    );
}
