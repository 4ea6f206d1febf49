//! Validation vocabulary shared by every config table: the bottom layer.
//!
//! Each table of the config file (a source, a target, a policy) validates
//! itself and reports into one [`Problems`] list, each problem named by its
//! field path, so `qscale check` shows every mistake of a file at once. The
//! checks that several tables need (a positive duration, an http(s) URL, a
//! URL that must not carry a password) live here once, so they say the same
//! thing in the same words everywhere. This module imports nothing from the
//! rest of the crate: every layer above may use it.

use std::fmt;
use std::time::Duration;

/// All validation problems of one file, each `field.path: what to fix`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Problems(pub Vec<String>);

impl Problems {
    /// Record one problem at a field path.
    pub fn push(&mut self, path: impl fmt::Display, message: impl fmt::Display) {
        self.0.push(format!("{path}: {message}"));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

/// Shared check: a duration that must be strictly positive.
pub fn positive_duration(p: &mut Problems, path: &str, d: Duration) {
    if d.is_zero() {
        p.push(path, "must be greater than 0 (e.g. \"15s\")");
    }
}

/// Shared check: a URL-ish string that must start with http:// or https://.
pub fn http_url(p: &mut Problems, path: &str, url: &str) {
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 10 {
        p.push(path, format!("{url:?} is not an http:// or https:// URL"));
    }
}

/// Shared check: a URL whose userinfo must not carry a password. Secrets
/// never live in the config file (it is often committed or stored in a
/// ConfigMap); `password_env` or `password_file` name where they are.
/// Returns whether the URL passed.
pub fn no_password_in_url(p: &mut Problems, path: &str, url: &str) -> bool {
    if url_password(url).is_some() {
        p.push(
            path,
            "must not contain a password; use password_env or password_file",
        );
        false
    } else {
        true
    }
}

/// The password part of a URL's userinfo, if any (`scheme://user:pw@host`).
pub fn url_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, pw) = userinfo.split_once(':')?;
    Some(pw)
}

/// Serde default for the boolean switches that are on unless turned off.
pub fn default_true() -> bool {
    true
}

/// Test helper for the validation tables beside every config type: each
/// case is validated under the path `s`; `None` wants no problem, `Some(w)`
/// a problem whose text contains `w`. No message may ever show the test
/// secret `hunter2`.
#[cfg(test)]
pub(crate) fn assert_validation_table<T: fmt::Debug>(
    cases: &[(T, Option<&str>)],
    validate: impl Fn(&T, &str, &mut Problems),
) {
    for (c, want) in cases {
        let mut p = Problems::default();
        validate(c, "s", &mut p);
        assert!(!p.to_string().contains("hunter2"), "a secret leaked: {p}");
        match want {
            None => assert!(p.is_empty(), "{c:?} gave {p}"),
            Some(w) => assert!(p.to_string().contains(w), "{c:?}: want {w:?}, got {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_finds_only_the_userinfo_password() {
        assert_eq!(url_password("amqp://u:p@h/v"), Some("p"));
        assert_eq!(url_password("amqp://u@h/v"), None);
        assert_eq!(url_password("http://h/a:b@c"), None);
    }

    #[test]
    fn a_password_in_a_url_is_a_problem_at_its_path() {
        let mut p = Problems::default();
        assert!(no_password_in_url(&mut p, "s.url", "amqp://u@h/v"));
        assert!(p.is_empty());
        assert!(!no_password_in_url(&mut p, "s.url", "amqp://u:hunter2@h/v"));
        assert_eq!(
            p.to_string(),
            "s.url: must not contain a password; use password_env or password_file"
        );
    }
}
