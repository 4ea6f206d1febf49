//! The HTML index page at `/`: every scaler on one screen, for a person.
//!
//! /status is for programs; someone opening qscale's port in a browser wants
//! to see which scalers run, what each holds and wants, why, what failed,
//! and the last hour as a chart. The page is rendered on the server from
//! the same [`ScalerStatus`] /status serializes, needs no JavaScript, and
//! escapes every string that comes from configuration or from a peer
//! (scaler names, reasons, error messages), since an error message can
//! quote whatever a broker or an API returned.

use std::fmt::Write as _;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::status::ScalerStatus;

/// What a scaler name keeps unencoded in a link: the characters names may
/// use (letters, digits, `-_./`), so links stay readable.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'/');

/// `s` safe as HTML text and inside a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A scaler name as a relative URL path, escaped for an attribute. Links
/// are relative so the page works behind a proxy that serves qscale under
/// a path prefix.
fn link(prefix: &str, name: &str, suffix: &str) -> String {
    escape(&format!(
        "{prefix}{}{suffix}",
        utf8_percent_encode(name, PATH)
    ))
}

fn count(v: Option<u32>) -> String {
    v.map_or_else(|| "–".to_string(), |n| n.to_string())
}

/// What the scaler is doing besides scaling, in words.
fn state(s: &ScalerStatus) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(by) = s.paused_by {
        out.push(format!("paused ({by})"));
    } else if s.paused {
        out.push("paused".into());
    }
    if s.dry_run {
        out.push("dry run".into());
    }
    if !s.leader {
        out.push("not leader".into());
    }
    if s.fallback_active {
        out.push("fallback".into());
    }
    if s.last_poll.is_none() {
        out.push("no poll yet".into());
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;margin-bottom:1.5em}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.n{text-align:right}.error{color:#b00}\
section{margin-bottom:2em}img{max-width:100%;border:1px solid #ddd}";

/// The page for `scalers` (sorted by name, as the status board keeps them).
pub fn index(version: &str, leader: bool, scalers: &[ScalerStatus]) -> String {
    let mut h = String::with_capacity(2048 + 1024 * scalers.len());
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>qscale</title><style>{STYLE}</style></head><body>\n\
         <h1>qscale</h1>\n<p>version {} · {} · {} scaler{} · \
         <a href=\"status\">/status</a> · <a href=\"metrics\">/metrics</a></p>\n",
        escape(version),
        if leader { "leader" } else { "not leader" },
        scalers.len(),
        if scalers.len() == 1 { "" } else { "s" },
    );
    if scalers.is_empty() {
        h.push_str("<p>No scaler is configured.</p>\n</body></html>\n");
        return h;
    }
    h.push_str(
        "<table id=\"scalers\"><thead><tr><th>scaler</th><th>source</th><th>target</th>\
         <th>current</th><th>ready</th><th>desired</th><th>state</th>\
         <th>last decision</th><th>last error</th><th>links</th></tr></thead><tbody>\n",
    );
    for s in scalers {
        let name = escape(&s.name);
        let reasons: Vec<String> = s.reasons.iter().map(|r| r.to_string()).collect();
        let error = s
            .last_error
            .as_ref()
            .map(|e| format!("{} ({}): {}", e.phase, e.label, e.message))
            .unwrap_or_default();
        let _ = writeln!(
            h,
            "<tr data-scaler=\"{name}\"><td><a href=\"#{anchor}\">{name}</a></td>\
             <td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"error\">{}</td>\
             <td><a href=\"{}\">status</a> <a href=\"{}\">history</a> \
             <a href=\"{}\">chart</a></td></tr>",
            escape(s.source),
            escape(s.target),
            count(s.current.map(|c| c.desired)),
            count(s.current.and_then(|c| c.ready)),
            count(s.desired),
            escape(&state(s).join(", ")),
            escape(&reasons.join("; ")),
            escape(&error),
            link("status/", &s.name, ""),
            link("status/", &s.name, "/history"),
            link("chart/", &s.name, ".svg"),
            anchor = link("scaler-", &s.name, ""),
        );
    }
    h.push_str("</tbody></table>\n");
    for s in scalers {
        let name = escape(&s.name);
        let _ = writeln!(
            h,
            "<section id=\"{}\"><h2>{name}</h2>\
             <img src=\"{}\" alt=\"backlog, oldest message age and replicas of {name}\" \
             width=\"900\" height=\"720\"></section>",
            link("scaler-", &s.name, ""),
            link("chart/", &s.name, ".svg"),
        );
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::contract::Replicas;
    use crate::status::ErrorStatus;

    fn scaler(name: &str) -> ScalerStatus {
        ScalerStatus::new(name, "demo", "demo", Duration::from_secs(1))
    }

    #[test]
    fn a_script_in_a_name_or_an_error_message_is_shown_as_text_never_run() {
        let mut s = scaler("<script>alert(1)</script>");
        s.last_error = Some(ErrorStatus {
            phase: "sample",
            label: "invalid_response",
            message: "broker said <img src=x onerror=alert(2)> & \"quit\"".into(),
            at: 0.0,
        });
        let page = index("0.1.0", true, &[s]);
        assert!(!page.contains("<script>"), "{page}");
        assert!(!page.contains("<img src=x"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("&lt;img src=x onerror=alert(2)&gt; &amp; &quot;quit&quot;"));
        // In links the name is percent-encoded as well.
        assert!(
            page.contains("href=\"status/%3Cscript%3Ealert%281%29%3C/script%3E\""),
            "{page}"
        );
    }

    #[test]
    fn each_scaler_gets_a_row_with_its_counts_links_and_an_inline_chart() {
        let mut a = scaler("orders/eu-1");
        a.current = Some(Replicas {
            desired: 3,
            ready: Some(2),
        });
        a.desired = Some(5);
        a.last_poll = Some(1.0);
        a.dry_run = true;
        let page = index("0.1.0", true, &[a, scaler("b")]);
        assert!(page.contains("<tr data-scaler=\"orders/eu-1\">"));
        assert!(
            page.contains(
                "<td class=\"n\">3</td><td class=\"n\">2</td><td class=\"n\">5</td><td>dry run</td>"
            ),
            "{page}"
        );
        assert!(page.contains("href=\"status/orders/eu-1/history\""));
        assert!(page.contains("<img src=\"chart/orders/eu-1.svg\""));
        assert!(page.contains("<tr data-scaler=\"b\">"));
        assert!(page.contains("no poll yet"));
        assert!(page.contains("2 scalers"));
    }
}
