//! Error text that fits on one line.
//!
//! Client libraries wrap their causes ("dispatch failure" around "connection
//! refused"), peers answer with HTML pages or stack traces, and every error
//! qscale shows ends up in a log line, a /status field or a `qscale check`
//! message. These helpers turn an error and its source chain into one short
//! readable line, for every client in the process.

use std::error::Error;

/// Longest peer-provided text kept in an error line; an HTML page or a
/// stack trace must not end up in a log line or a /status field whole.
const MAX_DETAIL: usize = 240;

/// The messages of `err` and its sources joined with `: `, skipping a
/// message its predecessor already contains (wrappers often repeat their
/// cause), on one short line. Unlike `DisplayErrorContext` it leaves out
/// the `Debug` dump, which is noise in a log line.
pub fn chain(err: &dyn Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&dyn Error> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !msg.is_empty() && !parts.last().is_some_and(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    one_line(&parts.join(": "))
}

/// Collapse whitespace to single spaces and cut long peer text, so every
/// error stays one readable line.
pub fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_DETAIL + 1));
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > MAX_DETAIL {
            let cut: String = out.chars().take(MAX_DETAIL).collect();
            return format!("{cut}…");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_is_kept_to_one_short_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        let long = "x ".repeat(1000);
        let cut = one_line(&long);
        assert!(cut.chars().count() <= MAX_DETAIL + 1, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}
