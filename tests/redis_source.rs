//! The Redis source against the real server on this machine.
//!
//! List mode: push N jobs, move k to a processing list (the reliable-queue
//! pattern's "taken, not finished"); stream mode: add N entries, read k with
//! XREADGROUP and do not XACK them. The source must report N-k / k.
//!
//! Environment: QSCALE_TEST_REDIS_URL (default redis://127.0.0.1:6379).

mod common;

use std::time::Duration;

use common::{env_or, require_reachable, unique};
use qscale::contract::QueueSource;
use qscale::sources::redis::{RedisMode, RedisSource, RedisSourceConfig, client_name};

const N: usize = 10;
const K: usize = 3;

fn url() -> String {
    env_or("QSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

async fn setup_conn() -> redis::aio::MultiplexedConnection {
    let host = url()
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("127.0.0.1:6379")
        .to_string();
    require_reachable("Redis", &host, "QSCALE_TEST_REDIS_URL");
    redis::Client::open(url().as_str())
        .expect("redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("the test connects to Redis")
}

fn cfg(mode: RedisMode, key: &str) -> RedisSourceConfig {
    RedisSourceConfig {
        url: format!("{}/0", url().trim_end_matches('/')),
        mode,
        key: key.to_string(),
        group: None,
        in_flight_list: None,
        username: None,
        password_env: None,
        password_file: None,
        count_in_flight: true,
    }
}

async fn cmd<T: redis::FromRedisValue>(
    conn: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// A stream `key` with group `g`, N entries, K read by consumer `c` and not
/// acknowledged.
async fn stream_fixture(conn: &mut redis::aio::MultiplexedConnection, key: &str) {
    let _: () = cmd(conn, &["XGROUP", "CREATE", key, "g", "$", "MKSTREAM"]).await;
    for i in 0..N {
        let _: String = cmd(conn, &["XADD", key, "*", "job", &i.to_string()]).await;
    }
    let _: redis::Value = cmd(
        conn,
        &[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            &K.to_string(),
            "STREAMS",
            key,
            ">",
        ],
    )
    .await;
}

#[tokio::test]
async fn list_mode_reports_waiting_jobs_and_the_processing_list_as_in_flight() {
    let mut conn = setup_conn().await;
    let key = unique("qscale-list");
    let processing = format!("{key}:processing");
    for i in 0..N {
        let _: u64 = cmd(&mut conn, &["RPUSH", &key, &i.to_string()]).await;
    }
    for _ in 0..K {
        let _: String = cmd(&mut conn, &["LMOVE", &key, &processing, "LEFT", "RIGHT"]).await;
    }
    let src = RedisSource::new(
        RedisSourceConfig {
            in_flight_list: Some(processing.clone()),
            ..cfg(RedisMode::List, &key)
        },
        Duration::from_secs(5),
    );
    let s = src.sample().await.expect("sample");
    assert_eq!(s.visible, Some((N - K) as u64));
    assert_eq!(s.in_flight, Some(K as u64));
    let _: u64 = cmd(&mut conn, &["DEL", &key, &processing]).await;
}

#[tokio::test]
async fn a_missing_list_is_an_empty_queue() {
    let _conn = setup_conn().await;
    let src = RedisSource::new(
        cfg(RedisMode::List, &unique("qscale-nolist")),
        Duration::from_secs(5),
    );
    let s = src.sample().await.expect("sample");
    assert_eq!(s.visible, Some(0));
    assert_eq!(s.in_flight, None);
}

#[tokio::test]
async fn stream_mode_reports_group_lag_as_visible_and_pending_as_in_flight() {
    let mut conn = setup_conn().await;
    let key = unique("qscale-stream");
    stream_fixture(&mut conn, &key).await;
    let src = RedisSource::new(
        RedisSourceConfig {
            group: Some("g".into()),
            ..cfg(RedisMode::Stream, &key)
        },
        Duration::from_secs(5),
    );
    let s = src.sample().await.expect("sample");
    assert_eq!(s.visible, Some((N - K) as u64));
    assert_eq!(s.in_flight, Some(K as u64));
    assert_eq!(s.consumers, Some(1));
    let age = s
        .oldest_age
        .expect("age from the first undelivered entry's ID");
    assert!(age < Duration::from_secs(60), "{age:?}");
    let _: u64 = cmd(&mut conn, &["DEL", &key]).await;
}

#[tokio::test]
async fn a_missing_stream_or_group_is_not_found() {
    let mut conn = setup_conn().await;
    let key = unique("qscale-stream-nf");
    let missing_key = RedisSource::new(
        RedisSourceConfig {
            group: Some("g".into()),
            ..cfg(RedisMode::Stream, &key)
        },
        Duration::from_secs(5),
    );
    let e = missing_key.sample().await.expect_err("no such stream");
    assert_eq!(e.metric_label(), "not_found", "{e}");

    stream_fixture(&mut conn, &key).await;
    let missing_group = RedisSource::new(
        RedisSourceConfig {
            group: Some("nobody".into()),
            ..cfg(RedisMode::Stream, &key)
        },
        Duration::from_secs(5),
    );
    let e = missing_group.sample().await.expect_err("no such group");
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains("\"nobody\""), "{e}");
    // The source whose stream was missing works now that it exists.
    assert_eq!(
        missing_key
            .sample()
            .await
            .expect("stream exists now")
            .visible,
        Some((N - K) as u64)
    );
    let _: u64 = cmd(&mut conn, &["DEL", &key]).await;
}

#[tokio::test]
async fn a_key_of_the_wrong_type_is_an_invalid_response() {
    let mut conn = setup_conn().await;
    let key = unique("qscale-string");
    let _: () = cmd(&mut conn, &["SET", &key, "not a queue"]).await;
    for mode in [RedisMode::List, RedisMode::Stream] {
        let src = RedisSource::new(
            RedisSourceConfig {
                group: (mode == RedisMode::Stream).then(|| "g".to_string()),
                ..cfg(mode, &key)
            },
            Duration::from_secs(5),
        );
        let e = src.sample().await.expect_err("wrong type");
        assert_eq!(e.metric_label(), "invalid_response", "{mode:?}: {e}");
    }
    let _: u64 = cmd(&mut conn, &["DEL", &key]).await;
}

#[tokio::test]
async fn wrong_credentials_are_access_denied_without_showing_the_password() {
    let _conn = setup_conn().await;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-redis-pw-5521\n").unwrap();
    let src = RedisSource::new(
        RedisSourceConfig {
            username: Some(unique("nobody")),
            password_file: Some(pw),
            ..cfg(RedisMode::List, "k")
        },
        Duration::from_secs(5),
    );
    let e = src.sample().await.expect_err("no such user");
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    assert!(!e.to_string().contains("wrong-redis-pw-5521"), "{e}");
}

#[tokio::test]
async fn a_refused_port_is_unavailable() {
    let src = RedisSource::new(
        RedisSourceConfig {
            url: "redis://127.0.0.1:1/0".into(),
            ..cfg(RedisMode::List, "k")
        },
        Duration::from_secs(5),
    );
    let e = src.sample().await.expect_err("nothing on port 1");
    assert_eq!(e.metric_label(), "unavailable", "{e}");
}

#[tokio::test]
async fn a_connection_killed_by_the_server_is_reopened_on_the_next_poll() {
    let mut conn = setup_conn().await;
    let key = unique("qscale-kill");
    let _: u64 = cmd(&mut conn, &["RPUSH", &key, "a", "b"]).await;
    let src = RedisSource::new(cfg(RedisMode::List, &key), Duration::from_secs(5));
    assert_eq!(src.sample().await.expect("first poll").visible, Some(2));

    // Kill exactly the source's connection, found by the name it set.
    let list: String = cmd(&mut conn, &["CLIENT", "LIST"]).await;
    let name = format!("name={}", client_name(&key));
    let id = list
        .lines()
        .find(|l| l.split(' ').any(|f| f == name))
        .and_then(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .unwrap_or_else(|| panic!("the source's connection in CLIENT LIST:\n{list}"))
        .to_string();
    let killed: u64 = cmd(&mut conn, &["CLIENT", "KILL", "ID", &id]).await;
    assert_eq!(killed, 1);

    match src.sample().await {
        Ok(s) => assert_eq!(s.visible, Some(2)),
        Err(e) => assert_eq!(e.metric_label(), "unavailable", "{e}"),
    }
    let s = src.sample().await.expect("the next poll reconnects");
    assert_eq!(s.visible, Some(2));
    let _: u64 = cmd(&mut conn, &["DEL", &key]).await;
}
