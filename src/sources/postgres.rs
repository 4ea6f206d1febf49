//! PostgreSQL source: a user query over a database-backed job queue.
//!
//! Job queues that live in PostgreSQL (pgmq, Oban, graphile-worker, River,
//! a plain `jobs` table) have no broker API, but one query tells their
//! depth. The user writes it; it returns one row, either one number (the
//! visible count) or named columns among `visible`, `in_flight`, `delayed`,
//! `oldest_age_seconds`, `arrival_rate` and `consumers`.
//!
//! The query runs in a `READ ONLY` transaction with `SET LOCAL
//! statement_timeout`, so a mistaken query can neither write nor hold locks
//! past the timeout, and it goes through the extended protocol, which
//! refuses several statements in one string. Values are decoded from the
//! binary protocol for every numeric type, `numeric` included (what
//! `extract(epoch ...)` returns), so users need no casts; text, NULL in the
//! single-number form, NaN and negative counts are `invalid_response`.
//!
//! The connection is kept across polls and re-established after it closes
//! (server restart, `pg_terminate_backend`, network). TLS is not supported
//! yet: `sslmode=require` is rejected at validation (the default `prefer`
//! connects without TLS).

use std::error::Error as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls};

use crate::clients::Clients;
use crate::clients::secret::{Credentials, UsernameRule, redact_url};
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::sources::SourceSpec;
use crate::sources::{age_from_secs, count_from_f64, non_negative};
use crate::validate::{Problems, default_true, positive_duration};

/// Column names the multi-column form may return.
pub const COLUMNS: [&str; 6] = [
    "visible",
    "in_flight",
    "delayed",
    "oldest_age_seconds",
    "arrival_rate",
    "consumers",
];

/// `source.kind = "postgres"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// Connection string without a password, as a URL
    /// (`postgres://qscale@db.default.svc:5432/app`) or key/value pairs
    /// (`host=db user=qscale dbname=app`). `application_name` defaults to
    /// `qscale`.
    pub connection: String,

    /// Environment variable holding the password, e.g. `PGPASSWORD`.
    #[serde(default)]
    pub password_env: Option<String>,

    /// File holding the password (a mounted Secret). A final newline is
    /// ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,

    /// One read-only statement returning one row: a single number (the
    /// visible count), or named columns among `visible`, `in_flight`,
    /// `delayed`, `oldest_age_seconds`, `arrival_rate`, `consumers`, e.g.
    /// `SELECT count(*) FILTER (WHERE state = 'available') AS visible,
    /// count(*) FILTER (WHERE state = 'executing') AS in_flight FROM oban_jobs`.
    pub query: String,

    /// Longest time the query may run on the server, e.g. `"5s"`
    /// (`SET LOCAL statement_timeout`).
    #[serde(default = "default_statement_timeout", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub statement_timeout: Duration,

    /// Count the `in_flight` column as backlog.
    #[serde(default = "default_true")]
    pub count_in_flight: bool,

    /// Count the `delayed` column as backlog.
    #[serde(default)]
    pub count_delayed: bool,
}

fn default_statement_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The column names a query text mentions with `AS <name>` (a best-effort
/// look used only to say what the source can measure at validation time).
fn mentions(query: &str, column: &str) -> bool {
    let lower = query.to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|w| w[0] == "as" && w[1] == column)
}

impl PostgresSourceConfig {
    /// The credential fields, for their shared rules and reading.
    pub fn credentials(&self) -> Credentials<'_> {
        Credentials {
            username: None,
            password_env: self.password_env.as_deref(),
            password_file: self.password_file.as_ref(),
        }
    }
}

#[async_trait]
impl SourceSpec for PostgresSourceConfig {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        let q = &self.query;
        Capabilities {
            oldest_age: mentions(q, "oldest_age_seconds"),
            arrival_rate: mentions(q, "arrival_rate"),
            in_flight: mentions(q, "in_flight"),
            delayed: mentions(q, "delayed"),
            count_in_flight: self.count_in_flight && mentions(q, "in_flight"),
            count_delayed: self.count_delayed && mentions(q, "delayed"),
        }
    }

    fn validate(&self, path: &str, p: &mut Problems) {
        match tokio_postgres::Config::from_str(&self.connection) {
            Err(e) => p.push(
                format!("{path}.connection"),
                format!("cannot be parsed: {}", redact_url(&e.to_string())),
            ),
            Ok(c) => {
                if c.get_password().is_some() {
                    p.push(
                        format!("{path}.connection"),
                        "must not contain a password; use password_env or password_file",
                    );
                }
                if c.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
                    p.push(
                        format!("{path}.connection"),
                        "sslmode=require is not supported yet (TLS to PostgreSQL is not built in); \
                         use sslmode=disable or prefer",
                    );
                }
                if c.get_hosts().is_empty() {
                    p.push(format!("{path}.connection"), "must name a host");
                }
            }
        }
        let q = self.query.trim().trim_end_matches(';');
        if q.trim().is_empty() {
            p.push(format!("{path}.query"), "must not be empty");
        } else if q.contains(';') {
            p.push(
                format!("{path}.query"),
                "must be a single statement (no ';' inside)",
            );
        }
        positive_duration(
            p,
            &format!("{path}.statement_timeout"),
            self.statement_timeout,
        );
        self.credentials().validate(path, UsernameRule::Optional, p);
    }

    fn describe(&self) -> String {
        let target = tokio_postgres::Config::from_str(&self.connection)
            .map(|c| {
                let host = match c.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "?".to_string(),
                };
                format!("{}@{host}", c.get_dbname().unwrap_or("(default db)"))
            })
            .unwrap_or_else(|_| "?".to_string());
        format!("postgres query on {target}")
    }

    fn identity(&self) -> String {
        format!("{} {}", self.connection, self.query)
    }

    async fn build(
        &self,
        _clients: &Clients,
        timeout: Duration,
    ) -> Result<Arc<dyn QueueSource>, SourceError> {
        Ok(Arc::new(PostgresSource::new(self.clone(), timeout)))
    }
}

/// A number decoded from any numeric column type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Number(pub f64);

/// Column types [`Number`] decodes.
pub fn is_numeric(ty: &Type) -> bool {
    [
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::NUMERIC,
        Type::OID,
    ]
    .contains(ty)
}

impl<'a> FromSql<'a> for Number {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let bad = || format!("{} value of {} bytes", ty.name(), raw.len());
        let v = match *ty {
            Type::INT2 => f64::from(i16::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
            Type::INT4 => f64::from(i32::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
            Type::OID => f64::from(u32::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
            Type::INT8 => i64::from_be_bytes(raw.try_into().map_err(|_| bad())?) as f64,
            Type::FLOAT4 => f64::from(f32::from_be_bytes(raw.try_into().map_err(|_| bad())?)),
            Type::FLOAT8 => f64::from_be_bytes(raw.try_into().map_err(|_| bad())?),
            Type::NUMERIC => decode_numeric(raw).ok_or_else(bad)?,
            _ => return Err(format!("{} is not a number type", ty.name()).into()),
        };
        Ok(Number(v))
    }

    fn accepts(ty: &Type) -> bool {
        is_numeric(ty)
    }
}

/// Decode PostgreSQL's binary `numeric`: a header of digit count, weight
/// (power of 10000 of the first digit), sign and display scale, then
/// base-10000 digits. NaN and infinities decode to the f64 ones.
pub fn decode_numeric(raw: &[u8]) -> Option<f64> {
    let word = |i: usize| -> Option<u16> {
        Some(u16::from_be_bytes([*raw.get(2 * i)?, *raw.get(2 * i + 1)?]))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i32::from(word(1)? as i16);
    let sign = word(2)?;
    match sign {
        0xC000 => return Some(f64::NAN),
        0xD000 => return Some(f64::INFINITY),
        0xF000 => return Some(f64::NEG_INFINITY),
        0x0000 | 0x4000 => {}
        _ => return None,
    }
    if raw.len() != 8 + 2 * ndigits {
        return None;
    }
    let mut v = 0.0f64;
    for i in 0..ndigits {
        let d = word(4 + i)?;
        if d >= 10000 {
            return None;
        }
        let power = weight - i32::try_from(i).ok()?;
        v += f64::from(d) * 10000f64.powi(power);
    }
    Some(if sign == 0x4000 { -v } else { v })
}

/// One column of the result row: its name, whether its type is numeric,
/// and the decoded value (`None` for NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub name: String,
    pub type_name: String,
    pub value: Option<f64>,
}

/// Turn the query's rows (already reduced to cells) into a sample.
pub fn sample_from_cells(
    at: SystemTime,
    rows: usize,
    cells: &[Cell],
) -> Result<Sample, SourceError> {
    let bad = |m: String| Err(SourceError::InvalidResponse(m));
    match rows {
        0 => return bad("the query returned no rows; it must return exactly one".into()),
        1 => {}
        n => {
            return bad(format!(
                "the query returned {n} rows; it must return exactly one"
            ));
        }
    }
    if cells.is_empty() {
        return bad("the query returned no columns".into());
    }
    let mut s = Sample::empty(at);
    if cells.len() == 1 && !COLUMNS.contains(&cells[0].name.as_str()) {
        let c = &cells[0];
        return match c.value {
            Some(v) => {
                s.visible = Some(count_from_f64(v, &format!("column {:?}", c.name))?);
                Ok(s)
            }
            None => bad(format!(
                "column {:?} is NULL; return a number (e.g. coalesce(..., 0))",
                c.name
            )),
        };
    }
    for c in cells {
        let what = format!("column {:?}", c.name);
        let Some(v) = c.value else { continue };
        match c.name.as_str() {
            "visible" => s.visible = Some(count_from_f64(v, &what)?),
            "in_flight" => s.in_flight = Some(count_from_f64(v, &what)?),
            "delayed" => s.delayed = Some(count_from_f64(v, &what)?),
            "oldest_age_seconds" => s.oldest_age = Some(age_from_secs(v, &what)?),
            "arrival_rate" => s.arrival_rate = Some(non_negative(v, &what)?),
            "consumers" => {
                s.consumers =
                    Some(u32::try_from(count_from_f64(v, &what)?).map_err(|_| {
                        SourceError::InvalidResponse(format!("{what} is too large"))
                    })?)
            }
            other => {
                return bad(format!(
                    "unexpected column {other:?}; return one number, or columns named {}",
                    COLUMNS.join(", ")
                ));
            }
        }
    }
    Ok(s)
}

/// The bounded label for a PostgreSQL SQLSTATE code.
pub fn classify_sqlstate(code: &str) -> &'static str {
    match code {
        // invalid_password, invalid_authorization_specification,
        // insufficient_privilege
        "28P01" | "28000" | "42501" => "access_denied",
        // invalid_catalog_name (no such database), undefined_table,
        // undefined_column, undefined_function, invalid_schema_name
        "3D000" | "42P01" | "42703" | "42883" | "3F000" => "not_found",
        // query_canceled: the statement timeout fired
        "57014" => "timeout",
        // admin_shutdown (pg_terminate_backend), crash_shutdown,
        // cannot_connect_now, too_many_connections
        "57P01" | "57P02" | "57P03" | "53300" => "unavailable",
        // read_only_sql_transaction, syntax_error
        "25006" | "42601" => "config",
        c if c.starts_with("08") => "unavailable",
        _ => "invalid_response",
    }
}

/// Map a tokio-postgres error into the bounded labels.
pub fn map_pg_error(e: &tokio_postgres::Error, timeout: Duration, what: &str) -> SourceError {
    if let Some(db) = e.as_db_error() {
        let text = format!("{what}: {} ({})", db.message(), db.code().code());
        return match classify_sqlstate(db.code().code()) {
            "access_denied" => SourceError::AccessDenied(text),
            "not_found" => SourceError::NotFound(text),
            "timeout" => SourceError::Timeout(timeout),
            "unavailable" => SourceError::Unavailable(text),
            "config" => SourceError::Config(text),
            _ => SourceError::InvalidResponse(text),
        };
    }
    // Without a server error, the innermost cause ("Connection refused",
    // "connection closed") is the useful part.
    let mut cause = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if e.is_closed() {
        SourceError::Unavailable(format!("{what}: the connection was closed; reconnecting"))
    } else if cause.contains("timed out") || cause.contains("timeout") {
        SourceError::Timeout(timeout)
    } else {
        SourceError::Unavailable(format!("{what}: {cause}"))
    }
}

/// The live PostgreSQL source.
pub struct PostgresSource {
    cfg: PostgresSourceConfig,
    timeout: Duration,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("connection", &redact_url(&self.cfg.connection))
            .field("query", &self.cfg.query)
            .finish()
    }
}

impl PostgresSource {
    pub fn new(cfg: PostgresSourceConfig, timeout: Duration) -> PostgresSource {
        PostgresSource {
            cfg,
            timeout,
            client: Mutex::new(None),
        }
    }

    async fn connect(&self) -> Result<Client, SourceError> {
        let mut config = tokio_postgres::Config::from_str(&self.cfg.connection).map_err(|e| {
            SourceError::Config(format!("connection: {}", redact_url(&e.to_string())))
        })?;
        if config.get_application_name().is_none() {
            config.application_name("qscale");
        }
        config.connect_timeout(self.timeout);
        if let Some(pw) = self.cfg.credentials().password()? {
            config.password(pw.expose());
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| map_pg_error(&e, self.timeout, "connecting"))?;
        // The connection future drives the socket; when it ends (server
        // closed it, network error) the client reports closed and the next
        // poll reconnects.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    async fn run(&self, client: &mut Client, at: SystemTime) -> Result<Sample, SourceError> {
        let pg = |e: tokio_postgres::Error| map_pg_error(&e, self.timeout, "query");
        let tx = client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(pg)?;
        let ms = self.cfg.statement_timeout.as_millis().max(1);
        tx.batch_execute(&format!("SET LOCAL statement_timeout = {ms}"))
            .await
            .map_err(pg)?;
        let query = self.cfg.query.trim().trim_end_matches(';');
        let rows = tx.query(query, &[]).await.map_err(pg)?;
        // Nothing was written; ending with a rollback releases the snapshot
        // just like a commit would.
        tx.rollback().await.map_err(pg)?;
        let mut cells = Vec::new();
        if let Some(row) = rows.first() {
            for (i, col) in row.columns().iter().enumerate() {
                if !is_numeric(col.type_()) {
                    return Err(SourceError::InvalidResponse(format!(
                        "column {:?} is {}, not a number; return a count (e.g. count(*) or ::bigint)",
                        col.name(),
                        col.type_().name()
                    )));
                }
                let value: Option<Number> = row.try_get(i).map_err(|e| {
                    SourceError::InvalidResponse(format!("column {:?}: {e}", col.name()))
                })?;
                cells.push(Cell {
                    name: col.name().to_string(),
                    type_name: col.type_().name().to_string(),
                    value: value.map(|n| n.0),
                });
            }
        }
        sample_from_cells(at, rows.len(), &cells)
    }
}

#[async_trait]
impl QueueSource for PostgresSource {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn sample(&self) -> Result<Sample, SourceError> {
        let at = SystemTime::now();
        let mut slot = self.client.lock().await;
        let mut client = match slot.take() {
            Some(c) if !c.is_closed() => c,
            _ => tokio::time::timeout(self.timeout, self.connect())
                .await
                .map_err(|_| SourceError::Timeout(self.timeout))??,
        };
        let result = tokio::time::timeout(self.timeout, self.run(&mut client, at))
            .await
            .map_err(|_| SourceError::Timeout(self.timeout))
            .and_then(|r| r);
        // Keep the connection after an answer about the query itself (bad
        // result, missing table, refused write): it is still usable, and the
        // transaction was rolled back when it was dropped. After anything
        // that may have broken it (the server closed it, it hung), the
        // client does not always know yet that it is closed, so start over.
        let usable = match &result {
            Ok(_) => true,
            Err(e) => matches!(
                e.metric_label(),
                "invalid_response" | "not_found" | "config" | "access_denied"
            ),
        };
        if usable && !client.is_closed() {
            *slot = Some(client);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(query: &str) -> PostgresSourceConfig {
        PostgresSourceConfig {
            connection: "postgres://qscale@127.0.0.1:5432/test".into(),
            password_env: None,
            password_file: None,
            query: query.into(),
            statement_timeout: Duration::from_secs(5),
            count_in_flight: true,
            count_delayed: false,
        }
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(PostgresSourceConfig, Option<&str>)> = vec![
            (cfg("SELECT count(*) FROM jobs"), None),
            (cfg("SELECT count(*) FROM jobs;"), None),
            (
                PostgresSourceConfig {
                    connection: "host=db user=qscale dbname=app".into(),
                    password_env: Some("PGPASSWORD".into()),
                    ..cfg("SELECT 1")
                },
                None,
            ),
            (cfg("  "), Some("s.query: must not be empty")),
            (
                cfg("SELECT 1; DELETE FROM jobs"),
                Some("s.query: must be a single statement"),
            ),
            (
                PostgresSourceConfig {
                    connection: "postgres://u:hunter2@db/app".into(),
                    ..cfg("SELECT 1")
                },
                Some("s.connection: must not contain a password"),
            ),
            (
                PostgresSourceConfig {
                    connection: "host=db password=hunter2".into(),
                    ..cfg("SELECT 1")
                },
                Some("s.connection: must not contain a password"),
            ),
            (
                PostgresSourceConfig {
                    connection: "postgres://u@db/app?sslmode=require".into(),
                    ..cfg("SELECT 1")
                },
                Some("s.connection: sslmode=require is not supported yet"),
            ),
            (
                PostgresSourceConfig {
                    connection: "bogus==".into(),
                    ..cfg("SELECT 1")
                },
                Some("s.connection: cannot be parsed"),
            ),
            (
                PostgresSourceConfig {
                    statement_timeout: Duration::ZERO,
                    ..cfg("SELECT 1")
                },
                Some("s.statement_timeout: must be greater than 0"),
            ),
        ];
        crate::validate::assert_validation_table(&cases, |c, path, p| c.validate(path, p));
    }

    #[test]
    fn capabilities_follow_the_columns_the_query_names() {
        let one = cfg("SELECT count(*) FROM jobs").capabilities();
        assert!(!one.in_flight && !one.oldest_age && !one.count_in_flight);
        let named = cfg(
            "SELECT count(*) AS visible, count(*) FILTER (WHERE x) as IN_FLIGHT, \
             extract(epoch from now() - min(t)) AS oldest_age_seconds FROM jobs",
        )
        .capabilities();
        assert!(named.in_flight && named.oldest_age && named.count_in_flight);
        assert!(!named.delayed && !named.arrival_rate);
    }

    /// Encode a numeric the way PostgreSQL does, for the decoder table.
    fn numeric(weight: i16, sign: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        v.extend_from_slice(&weight.to_be_bytes());
        v.extend_from_slice(&sign.to_be_bytes());
        v.extend_from_slice(&0u16.to_be_bytes());
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn numeric_decoding_table() {
        let cases: Vec<(Vec<u8>, Option<f64>)> = vec![
            (numeric(0, 0, &[]), Some(0.0)),
            (numeric(0, 0, &[42]), Some(42.0)),
            (numeric(1, 0, &[1, 2345]), Some(12345.0)),
            (numeric(0, 0x4000, &[7]), Some(-7.0)),
            (numeric(0, 0, &[12, 5000]), Some(12.5)),
            (numeric(-1, 0, &[25]), Some(0.0025)),
            (numeric(0, 0, &[10000]), None),
            (numeric(0, 0x1234, &[1]), None),
            (vec![0, 1, 0], None),
        ];
        for (raw, want) in cases {
            assert_eq!(decode_numeric(&raw), want, "{raw:?}");
        }
        assert!(decode_numeric(&numeric(0, 0xC000, &[])).unwrap().is_nan());
        assert_eq!(
            decode_numeric(&numeric(0, 0xD000, &[])),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn integer_and_float_columns_decode() {
        let n = |ty: &Type, raw: &[u8]| Number::from_sql(ty, raw).map(|n| n.0).ok();
        assert_eq!(n(&Type::INT8, &7i64.to_be_bytes()), Some(7.0));
        assert_eq!(n(&Type::INT4, &(-3i32).to_be_bytes()), Some(-3.0));
        assert_eq!(n(&Type::INT2, &5i16.to_be_bytes()), Some(5.0));
        assert_eq!(n(&Type::FLOAT8, &2.5f64.to_be_bytes()), Some(2.5));
        assert_eq!(n(&Type::FLOAT4, &1.5f32.to_be_bytes()), Some(1.5));
        assert_eq!(n(&Type::INT8, &[1, 2]), None);
        assert_eq!(n(&Type::TEXT, b"12"), None);
        assert!(!Number::accepts(&Type::TEXT));
    }

    fn cell(name: &str, value: Option<f64>) -> Cell {
        Cell {
            name: name.into(),
            type_name: "int8".into(),
            value,
        }
    }

    #[test]
    fn sample_from_cells_table() {
        let at = SystemTime::now();
        type Want = Result<(Option<u64>, Option<u64>, Option<f64>), &'static str>;
        let cases: Vec<(usize, Vec<Cell>, Want)> = vec![
            (1, vec![cell("count", Some(7.0))], Ok((Some(7), None, None))),
            (
                1,
                vec![cell("visible", Some(7.0))],
                Ok((Some(7), None, None)),
            ),
            (
                1,
                vec![
                    cell("visible", Some(7.0)),
                    cell("in_flight", Some(3.0)),
                    cell("oldest_age_seconds", Some(12.5)),
                ],
                Ok((Some(7), Some(3), Some(12.5))),
            ),
            (
                1,
                vec![cell("visible", Some(0.0)), cell("oldest_age_seconds", None)],
                Ok((Some(0), None, None)),
            ),
            (0, vec![], Err("returned no rows")),
            (2, vec![cell("count", Some(1.0))], Err("returned 2 rows")),
            (1, vec![cell("count", None)], Err("is NULL")),
            (
                1,
                vec![cell("count", Some(f64::NAN))],
                Err("not a finite number"),
            ),
            (1, vec![cell("visible", Some(-1.0))], Err("negative")),
            (
                1,
                vec![cell("visible", Some(1.0)), cell("bogus", Some(1.0))],
                Err("unexpected column \"bogus\""),
            ),
            (
                1,
                vec![
                    cell("visible", Some(1.0)),
                    cell("oldest_age_seconds", Some(-2.0)),
                ],
                Err("expected a finite number >= 0"),
            ),
            // Past what a Duration holds: from_secs_f64 used to panic here.
            (
                1,
                vec![
                    cell("visible", Some(1.0)),
                    cell("oldest_age_seconds", Some(1e300)),
                ],
                Err("too large for an age"),
            ),
        ];
        for (rows, cells, want) in cases {
            let got = sample_from_cells(at, rows, &cells);
            match (got, want) {
                (Ok(s), Ok((v, f, age))) => {
                    assert_eq!(s.visible, v);
                    assert_eq!(s.in_flight, f);
                    assert_eq!(s.oldest_age.map(|d| d.as_secs_f64()), age);
                }
                (Err(e), Err(w)) => {
                    assert_eq!(e.metric_label(), "invalid_response");
                    assert!(e.to_string().contains(w), "want {w:?}: {e}");
                }
                (g, w) => panic!("{cells:?}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn sqlstate_classification_table() {
        let cases = [
            ("28P01", "access_denied"),
            ("28000", "access_denied"),
            ("42501", "access_denied"),
            ("3D000", "not_found"),
            ("42P01", "not_found"),
            ("57014", "timeout"),
            ("57P01", "unavailable"),
            ("08006", "unavailable"),
            ("25006", "config"),
            ("22012", "invalid_response"),
        ];
        for (code, want) in cases {
            assert_eq!(classify_sqlstate(code), want, "{code}");
        }
    }
}
