//! The PostgreSQL source against the real server on this machine.
//!
//! Each test creates its own jobs table, inserts N jobs and marks k as
//! `running` (taken by a worker, not finished: the database-queue form of
//! "received, not acknowledged"); the source's query must report N-k / k.
//!
//! Environment: QSCALE_TEST_POSTGRES (default
//! `host=127.0.0.1 port=5432 user=postgres dbname=test`; trust auth).

mod common;

use std::time::Duration;

use common::{env_or, require_reachable, unique};
use qscale::contract::QueueSource;
use qscale::sources::postgres::{PostgresSource, PostgresSourceConfig};

const N: i64 = 10;
const K: i64 = 3;

fn conninfo() -> String {
    env_or(
        "QSCALE_TEST_POSTGRES",
        "host=127.0.0.1 port=5432 user=postgres dbname=test",
    )
}

async fn admin() -> tokio_postgres::Client {
    require_reachable("PostgreSQL", "127.0.0.1:5432", "QSCALE_TEST_POSTGRES");
    let (client, conn) = tokio_postgres::connect(&conninfo(), tokio_postgres::NoTls)
        .await
        .expect("the test connects to PostgreSQL");
    tokio::spawn(conn);
    client
}

/// A table with N jobs, K of them running. Returns its name.
async fn fixture(db: &tokio_postgres::Client) -> String {
    let table = unique("jobs").replace('-', "_");
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id bigserial PRIMARY KEY, state text NOT NULL DEFAULT 'available',
           created_at timestamptz NOT NULL DEFAULT now() - interval '30 seconds');
         INSERT INTO {table} (state) SELECT 'available' FROM generate_series(1, {N});
         UPDATE {table} SET state = 'running' WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT {K});"
    ))
    .await
    .expect("create the jobs table");
    table
}

fn cfg(query: &str) -> PostgresSourceConfig {
    PostgresSourceConfig {
        connection: conninfo(),
        password_env: None,
        password_file: None,
        query: query.to_string(),
        statement_timeout: Duration::from_secs(5),
        count_in_flight: true,
        count_delayed: false,
    }
}

fn source(c: PostgresSourceConfig) -> PostgresSource {
    PostgresSource::new(c, Duration::from_secs(5))
}

#[tokio::test]
async fn a_single_number_query_reports_the_visible_count() {
    let db = admin().await;
    let t = fixture(&db).await;
    let src = source(cfg(&format!(
        "SELECT count(*) FROM {t} WHERE state = 'available'"
    )));
    let s = src.sample().await.expect("sample");
    assert_eq!(s.visible, Some((N - K) as u64));
    assert_eq!(s.in_flight, None);
    let _ = db.batch_execute(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn named_columns_report_n_minus_k_visible_k_in_flight_and_a_numeric_age() {
    let db = admin().await;
    let t = fixture(&db).await;
    // extract(epoch ...) is `numeric` on PostgreSQL 14+: decoded without a cast.
    let src = source(cfg(&format!(
        "SELECT count(*) FILTER (WHERE state = 'available') AS visible,
                count(*) FILTER (WHERE state = 'running') AS in_flight,
                extract(epoch FROM now() - min(created_at) FILTER (WHERE state = 'available'))
                  AS oldest_age_seconds
         FROM {t};"
    )));
    let s = src.sample().await.expect("sample");
    assert_eq!(s.visible, Some((N - K) as u64));
    assert_eq!(s.in_flight, Some(K as u64));
    let age = s.oldest_age.expect("age").as_secs_f64();
    assert!((29.0..120.0).contains(&age), "age {age}");
    let _ = db.batch_execute(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn bad_query_results_are_invalid_responses_with_a_hint() {
    let _db = admin().await;
    let cases = [
        ("SELECT 'many'", "is text, not a number"),
        ("SELECT 1 WHERE false", "returned no rows"),
        ("SELECT generate_series(1, 2)", "returned 2 rows"),
        ("SELECT NULL::bigint", "is NULL"),
        ("SELECT 'NaN'::float8", "not a finite number"),
        ("SELECT -1", "negative"),
        (
            "SELECT 1 AS visible, 2 AS bogus",
            "unexpected column \"bogus\"",
        ),
    ];
    for (query, want) in cases {
        let e = source(cfg(query)).sample().await.expect_err(query);
        assert_eq!(e.metric_label(), "invalid_response", "{query}: {e}");
        assert!(
            e.to_string().contains(want),
            "{query}: want {want:?} in {e}"
        );
    }
}

#[tokio::test]
async fn missing_tables_databases_and_roles_get_their_labels() {
    let _db = admin().await;
    let e = source(cfg(&format!(
        "SELECT count(*) FROM {}",
        unique("nope").replace('-', "_")
    )))
    .sample()
    .await
    .expect_err("no such table");
    assert_eq!(e.metric_label(), "not_found", "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");

    let e = source(PostgresSourceConfig {
        connection: "host=127.0.0.1 port=5432 user=postgres dbname=qscale_no_such_db".into(),
        ..cfg("SELECT 1")
    })
    .sample()
    .await
    .expect_err("no such database");
    assert_eq!(e.metric_label(), "not_found", "{e}");

    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-pg-pw-9912").unwrap();
    let e = source(PostgresSourceConfig {
        connection: "host=127.0.0.1 port=5432 user=qscale_no_such_role dbname=test".into(),
        password_file: Some(pw),
        ..cfg("SELECT 1")
    })
    .sample()
    .await
    .expect_err("no such role");
    assert_eq!(e.metric_label(), "access_denied", "{e}");
    assert!(!e.to_string().contains("wrong-pg-pw-9912"), "{e}");
}

#[tokio::test]
async fn the_query_runs_read_only_and_under_the_statement_timeout() {
    let db = admin().await;
    let seq = unique("seq").replace('-', "_");
    db.batch_execute(&format!("CREATE SEQUENCE {seq}"))
        .await
        .expect("create sequence");
    let e = source(cfg(&format!("SELECT nextval('{seq}')")))
        .sample()
        .await
        .expect_err("a write in a read-only transaction");
    assert_eq!(e.metric_label(), "config", "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");

    let e = source(PostgresSourceConfig {
        statement_timeout: Duration::from_millis(200),
        ..cfg("SELECT 1 FROM pg_sleep(3)")
    })
    .sample()
    .await
    .expect_err("statement timeout");
    assert_eq!(e.metric_label(), "timeout", "{e}");
    let _ = db.batch_execute(&format!("DROP SEQUENCE {seq}")).await;
}

#[tokio::test]
async fn a_terminated_backend_is_unavailable_once_and_the_next_poll_reconnects() {
    let db = admin().await;
    let t = fixture(&db).await;
    let app = unique("qscale-test");
    let src = source(PostgresSourceConfig {
        connection: format!("{} application_name={app}", conninfo()),
        ..cfg(&format!(
            "SELECT count(*) FROM {t} WHERE state = 'available'"
        ))
    });
    assert_eq!(
        src.sample().await.expect("first poll").visible,
        Some((N - K) as u64)
    );
    let again = src.sample().await.expect("second poll");
    assert_eq!(again.visible, Some((N - K) as u64));

    // One backend for the source: the connection is reused across polls.
    let n: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("pg_stat_activity")
        .get(0);
    assert_eq!(n, 1, "the source keeps one connection");

    let killed: bool = db
        .query_one(
            "SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .await
        .expect("terminate")
        .get(0);
    assert!(killed);

    match src.sample().await {
        Ok(s) => assert_eq!(s.visible, Some((N - K) as u64)),
        Err(e) => assert_eq!(e.metric_label(), "unavailable", "{e}"),
    }
    let s = src.sample().await.expect("the next poll reconnects");
    assert_eq!(s.visible, Some((N - K) as u64));
    let _ = db.batch_execute(&format!("DROP TABLE {t}")).await;
}

#[tokio::test]
async fn a_refused_port_is_unavailable() {
    let e = source(PostgresSourceConfig {
        connection: "host=127.0.0.1 port=1 user=postgres dbname=test".into(),
        ..cfg("SELECT 1")
    })
    .sample()
    .await
    .expect_err("nothing on port 1");
    assert_eq!(e.metric_label(), "unavailable", "{e}");
}
