//! History from Prometheus: a PromQL arrival rate through
//! `/api/v1/query_range`.
//!
//! The query gives messages per second, e.g.
//! `sum(rate(jobs_enqueued_total[1m]))`, evaluated every `step`. The value
//! at time `t` describes the window before `t`, so it counts for the bin
//! from `t - step` to `t`: `rate × step` messages. With the rate's range
//! equal to the step (`[1m]` at 60 s) each increment of the counter is
//! counted once; a longer range smooths, a shorter one misses increments.
//!
//! Reads go through the Prometheus source's own URL, authentication and
//! error handling ([`crate::sources::prometheus`]), in windows of at most a
//! day and 10,000 steps (Prometheus refuses more than 11,000 points per
//! series in one query). Prometheus leaves out steps where the expression
//! has no value; those are the gaps. One series is required (aggregate
//! with `sum()`), and every value must be a rate: finite and not negative.

use std::time::{Duration, UNIX_EPOCH};

use crate::clients::http::{HttpClient, HttpResponse, status_error};
use crate::contract::SourceError;
use crate::sources::prometheus::{PrometheusSourceConfig, api_error};

use super::{Bins, HistoryError, Range};

/// Most steps asked for in one query.
pub const MAX_STEPS_PER_QUERY: usize = 10_000;
/// Longest window asked for in one query.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);

/// Read the rate of `cfg.query` over `range`, one bin per `step`.
pub async fn read(
    cfg: &PrometheusSourceConfig,
    range: Range,
    step: Duration,
    timeout: Duration,
) -> Result<Bins, HistoryError> {
    let step_s = step.as_secs().max(1);
    let n = range.bins(step);
    let start = range
        .start
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let headers = cfg.request_headers()?;
    let http = HttpClient::new();
    let per_query = MAX_STEPS_PER_QUERY.min((MAX_WINDOW.as_secs() / step_s).max(1) as usize);
    let mut rates: Vec<Option<f64>> = vec![None; n];
    let mut calls = 0;
    let mut first = 0usize;
    while first < n {
        let end = (first + per_query).min(n);
        // Bin i is the step before the evaluation at start + (i + 1)·step.
        let eval_from = start + (first as u64 + 1) * step_s;
        let eval_to = start + end as u64 * step_s;
        let url = cfg.query_range_url(&cfg.query, eval_from, eval_to, step_s);
        calls += 1;
        let resp = http.get(&url, &headers, timeout).await?;
        for (t, rate) in parse_range_response(&resp, &cfg.query)? {
            let Some(eval) = t.checked_sub(start) else {
                continue;
            };
            if eval == 0 || eval % step_s != 0 {
                continue;
            }
            if let Some(slot) = rates.get_mut((eval / step_s - 1) as usize) {
                *slot = Some(rate * step_s as f64);
            }
        }
        first = end;
    }
    Ok(Bins {
        what: format!("Prometheus rate {:?}", cfg.query),
        range,
        bin: Duration::from_secs(step_s),
        messages: rates,
        backlog: None,
        calls,
    })
}

/// The `(unix second, rate)` points of a `query_range` answer: an empty
/// list when no series matched, an error for anything else than one series
/// of rates. A PromQL error is [`HistoryError::PromQl`] with Prometheus'
/// own message.
pub fn parse_range_response(
    resp: &HttpResponse,
    query: &str,
) -> Result<Vec<(u64, f64)>, HistoryError> {
    let invalid = |m: String| HistoryError::Source(SourceError::InvalidResponse(m));
    let v: serde_json::Value = match serde_json::from_slice(&resp.body) {
        Ok(v) => v,
        Err(_) if !(200..300).contains(&resp.status) => {
            return Err(status_error(resp, &format!("query_range {query:?}")).into());
        }
        Err(_) => {
            return Err(invalid(format!(
                "query_range {query:?}: the answer is not Prometheus JSON: {}",
                resp.snippet()
            )));
        }
    };
    if let Some((kind, message)) = api_error(&v) {
        if kind == "bad_data" {
            return Err(HistoryError::PromQl {
                query: query.to_string(),
                message,
            });
        }
        let text = format!("query_range {query:?}: Prometheus answered {kind}: {message}");
        return Err(HistoryError::Source(match resp.status {
            401 | 403 => SourceError::AccessDenied(text),
            400..=499 => SourceError::InvalidResponse(text),
            _ => SourceError::Unavailable(text),
        }));
    }
    if !(200..300).contains(&resp.status) {
        return Err(status_error(resp, &format!("query_range {query:?}")).into());
    }
    if v.get("status").and_then(serde_json::Value::as_str) != Some("success") {
        return Err(invalid(format!(
            "query_range {query:?}: the answer has no \"status\": \"success\""
        )));
    }
    let data = v.get("data");
    let rtype = data
        .and_then(|d| d.get("resultType"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("missing");
    if rtype != "matrix" {
        return Err(invalid(format!(
            "query_range {query:?}: result type {rtype:?}, not a matrix"
        )));
    }
    let series = data
        .and_then(|d| d.get("result"))
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| {
            invalid(format!(
                "query_range {query:?}: a matrix without a result list"
            ))
        })?;
    let one = match series.as_slice() {
        [] => return Ok(Vec::new()),
        [one] => one,
        many => {
            return Err(HistoryError::Usage(format!(
                "query {query:?} returned {} series; aggregate them to one arrival rate, \
                 e.g. sum(rate(...))",
                many.len()
            )));
        }
    };
    let values = one
        .get("values")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| invalid(format!("query_range {query:?}: a series without values")))?;
    let mut out = Vec::with_capacity(values.len());
    for pair in values {
        let t = pair.get(0).and_then(serde_json::Value::as_f64);
        let s = pair.get(1).and_then(serde_json::Value::as_str);
        let (Some(t), Some(s)) = (t, s) else {
            return Err(invalid(format!(
                "query_range {query:?}: a value that is not a [time, \"value\"] pair"
            )));
        };
        let rate = s.parse::<f64>().ok().filter(|r| r.is_finite() && *r >= 0.0);
        let Some(rate) = rate else {
            return Err(HistoryError::Usage(format!(
                "query {query:?} gave {s:?} at {}, not an arrival rate >= 0",
                time_of(t)
            )));
        };
        if t >= 0.0 && t.is_finite() {
            out.push((t.round() as u64, rate));
        }
    }
    Ok(out)
}

/// A Prometheus timestamp for a message: RFC 3339 when it is a time
/// humantime can print (years 1970 to 9999), else the number as sent. The
/// peer's number must not reach `Duration::from_secs_f64` or humantime's
/// `Display` unchecked: both panic past their range.
fn time_of(t: f64) -> String {
    /// 9999-12-31T23:59:59Z, the last second RFC 3339 can write.
    const LAST_RFC3339_SECOND: f64 = 253_402_300_799.0;
    if t.is_finite() && (0.0..=LAST_RFC3339_SECOND).contains(&t) {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(t)).to_string()
    } else {
        format!("unix time {t}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            content_type: Some("application/json".into()),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    /// Found by the `peer_answers` fuzz target: a bad rate at a time past
    /// year 9999 panicked while writing the error message.
    #[test]
    fn a_bad_rate_at_a_time_no_calendar_can_print_is_refused_not_a_panic() {
        for t in ["340000002240", "1e300", "-5", "1700000000.5"] {
            let body = format!(
                r#"{{"status":"success","data":{{"resultType":"matrix","result":[{{"metric":{{}},"values":[[{t},"+Inf"]]}}]}}}}"#
            );
            let e = parse_range_response(&resp(200, &body), "q").unwrap_err();
            assert_eq!(e.metric_label(), "usage", "{t}: {e}");
            assert!(e.to_string().contains("not an arrival rate"), "{t}: {e}");
        }
        assert_eq!(time_of(1_700_000_000.0), "2023-11-14T22:13:20Z");
        assert_eq!(time_of(340_000_002_240.0), "unix time 340000002240");
    }

    #[test]
    fn range_response_parsing_table() {
        let one = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1700000060,"0.5"],[1700000120,"2"]]}]}}"#;
        let none = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let two = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{"a":"1"},"values":[]},{"metric":{"a":"2"},"values":[]}]}}"#;
        let negative = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1700000060,"-1"]]}]}}"#;
        let nan = r#"{"status":"success","data":{"resultType":"matrix","result":[
            {"metric":{},"values":[[1700000060,"NaN"]]}]}}"#;
        let vector = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        let bad_data = r#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \")\""}"#;
        let internal = r#"{"status":"error","errorType":"internal","error":"boom"}"#;
        type Want = Result<Vec<(u64, f64)>, (&'static str, &'static str)>;
        let cases: Vec<(HttpResponse, Want)> = vec![
            (
                resp(200, one),
                Ok(vec![(1_700_000_060, 0.5), (1_700_000_120, 2.0)]),
            ),
            (resp(200, none), Ok(vec![])),
            (
                resp(200, two),
                Err(("usage", "returned 2 series; aggregate")),
            ),
            (resp(200, negative), Err(("usage", "not an arrival rate"))),
            (resp(200, nan), Err(("usage", "\"NaN\""))),
            (resp(200, vector), Err(("invalid_response", "not a matrix"))),
            (
                resp(400, bad_data),
                Err(("promql", "rejected the query \"q\": 1:5: parse error")),
            ),
            (resp(500, internal), Err(("unavailable", "internal: boom"))),
            (
                resp(401, "Unauthorized"),
                Err(("access_denied", "HTTP 401")),
            ),
            (
                resp(404, "404 page not found"),
                Err(("not_found", "HTTP 404")),
            ),
            (
                resp(200, "<html>login</html>"),
                Err(("invalid_response", "not Prometheus JSON")),
            ),
        ];
        for (r, want) in cases {
            let got = parse_range_response(&r, "q");
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{}", r.snippet()),
                (Err(e), Err((label, text))) => {
                    assert_eq!(e.metric_label(), label, "{e}");
                    assert!(e.to_string().contains(text), "want {text:?}: {e}");
                    assert!(!e.to_string().contains('\n'), "{e}");
                }
                (g, w) => panic!("{}: got {g:?}, want {w:?}", r.snippet()),
            }
        }
    }
}
