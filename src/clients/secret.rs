//! Broker credentials: where they come from and how they stay out of sight.
//!
//! Broker sources authenticate with a password or token. The config file is
//! often committed or stored in a ConfigMap, so a secret never lives there in
//! clear: each source names an environment variable (`password_env`) or a
//! file (`password_file`, e.g. a mounted Kubernetes Secret) instead. The
//! value is read at every (re)connect, so a rotated file takes effect on the
//! next reconnect without a restart.
//!
//! Once read, a secret lives in [`Secret`], whose `Debug` prints nothing of
//! it, and every URL that goes into an error or a log passes through
//! [`redact_url`] first.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::contract::SourceError;
use crate::validate::Problems;

/// A password or token. `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for handing to a client library. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Read a secret from the environment variable `env` or the file `file`
/// (at most one is set; validation checks that). `lookup` reads the
/// environment, so tests need not change the process's own.
///
/// A missing variable or unreadable file is a configuration error: the next
/// poll tries again, so fixing the Secret mount heals the scaler.
pub fn resolve(
    env: Option<&str>,
    file: Option<&Path>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, SourceError> {
    if let Some(var) = env {
        return match lookup(var) {
            Some(v) if !v.is_empty() => Ok(Some(Secret(v))),
            _ => Err(SourceError::Config(format!(
                "environment variable {var} (password_env) is not set or empty"
            ))),
        };
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            SourceError::Config(format!(
                "cannot read password_file {}: {}",
                path.display(),
                e.kind()
            ))
        })?;
        // `echo secret > file` and most editors add a final newline that is
        // not part of the secret; Kubernetes Secrets usually have none.
        let value = text.strip_suffix('\n').unwrap_or(&text);
        let value = value.strip_suffix('\r').unwrap_or(value);
        if value.is_empty() {
            return Err(SourceError::Config(format!(
                "password_file {} is empty",
                path.display()
            )));
        }
        return Ok(Some(Secret(value.to_string())));
    }
    Ok(None)
}

/// [`resolve`] against the process environment.
pub fn resolve_from_process(
    env: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<Option<Secret>, SourceError> {
    resolve(env, file.map(PathBuf::as_path), |k| std::env::var(k).ok())
}

/// Validate a `<prefix>_env` / `<prefix>_file` pair of fields.
pub fn validate_pair(
    p: &mut Problems,
    path: &str,
    prefix: &str,
    env: Option<&str>,
    file: Option<&PathBuf>,
) {
    if env.is_some() && file.is_some() {
        p.push(
            format!("{path}.{prefix}_file"),
            format!("give {prefix}_env or {prefix}_file, not both"),
        );
    }
    if let Some(var) = env {
        let ok = !var.is_empty()
            && !var.starts_with(|c: char| c.is_ascii_digit())
            && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            p.push(
                format!("{path}.{prefix}_env"),
                format!(
                    "{var:?} is not an environment variable name (letters, digits, '_'); \
                     name the variable that holds the secret, not the secret itself"
                ),
            );
        }
    }
    if let Some(f) = file
        && f.as_os_str().is_empty()
    {
        p.push(format!("{path}.{prefix}_file"), "must not be empty");
    }
}

/// What a broker source's flat credential fields say: `username`,
/// `password_env` and `password_file`. Each broker config keeps these as
/// plain fields (serde's `flatten` would silently break
/// `deny_unknown_fields`) and lends them out through this view, so the
/// rules and the reading of a password are written once.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub username: Option<&'a str>,
    pub password_env: Option<&'a str>,
    pub password_file: Option<&'a PathBuf>,
}

/// How a broker treats the user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsernameRule {
    /// Optional either way (Redis ACL users, AMQP).
    Optional,
    /// Needed as soon as a password is given (NATS user/password auth).
    RequiredWithPassword,
    /// Both or neither (HTTP basic authentication).
    WithPasswordOnly,
}

impl Credentials<'_> {
    /// Whether a password source is configured.
    pub fn has_password(&self) -> bool {
        self.password_env.is_some() || self.password_file.is_some()
    }

    /// Add every problem of these fields to `p`, under `path`.
    pub fn validate(&self, path: &str, rule: UsernameRule, p: &mut Problems) {
        if self.username.is_some_and(str::is_empty) {
            p.push(format!("{path}.username"), "must not be empty");
        }
        match rule {
            UsernameRule::Optional => {}
            UsernameRule::RequiredWithPassword => {
                if self.has_password() && self.username.is_none() {
                    p.push(
                        format!("{path}.username"),
                        "required when a password is given",
                    );
                }
            }
            UsernameRule::WithPasswordOnly => {
                if self.has_password() != self.username.is_some() {
                    p.push(
                        format!("{path}.username"),
                        "basic authentication needs username and password_env or password_file together",
                    );
                }
            }
        }
        validate_pair(p, path, "password", self.password_env, self.password_file);
    }

    /// Read the password now (at every connect, so a rotated Secret takes
    /// effect on the next reconnect).
    pub fn password(&self) -> Result<Option<Secret>, SourceError> {
        resolve_from_process(self.password_env, self.password_file)
    }
}

/// `url` with any password in its userinfo replaced by `***`, for errors,
/// logs and `Debug` output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_shows_in_debug_output() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redact_url_table() {
        let cases = [
            (
                "amqp://guest:guest@host:5672/%2f",
                "amqp://guest:***@host:5672/%2f",
            ),
            (
                "amqps://u:p%40ss@h/vh?heartbeat=5",
                "amqps://u:***@h/vh?heartbeat=5",
            ),
            (
                "redis://:pw@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("amqp://guest@host:5672", "amqp://guest@host:5672"),
            ("http://127.0.0.1:9090", "http://127.0.0.1:9090"),
            ("http://h/path@x:y", "http://h/path@x:y"),
            ("not a url", "not a url"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn resolve_table() {
        let dir = tempfile::tempdir().unwrap();
        let with_newline = dir.path().join("pw");
        std::fs::write(&with_newline, "s3cret\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let missing = dir.path().join("missing");
        let lookup = |k: &str| (k == "SET").then(|| "from-env".to_string());

        let ok = |env: Option<&str>, file: Option<&Path>| resolve(env, file, lookup);
        assert_eq!(ok(None, None), Ok(None));
        assert_eq!(ok(Some("SET"), None), Ok(Some(Secret::new("from-env"))));
        assert_eq!(
            ok(None, Some(&with_newline)),
            Ok(Some(Secret::new("s3cret")))
        );
        for (env, file, want) in [
            (Some("UNSET"), None, "UNSET (password_env) is not set"),
            (None, Some(empty.as_path()), "is empty"),
            (None, Some(missing.as_path()), "cannot read password_file"),
        ] {
            let e = ok(env, file).unwrap_err();
            assert_eq!(e.metric_label(), "config");
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn validate_pair_table() {
        let f = PathBuf::from("/run/secrets/pw");
        let cases: Vec<(Option<&str>, Option<&PathBuf>, Option<&str>)> = vec![
            (None, None, None),
            (Some("RABBITMQ_PASSWORD"), None, None),
            (None, Some(&f), None),
            (
                Some("A"),
                Some(&f),
                Some("s.password_file: give password_env or"),
            ),
            (
                Some("hunter 2!"),
                None,
                Some("s.password_env: \"hunter 2!\" is not"),
            ),
            (
                Some("1X"),
                None,
                Some("is not an environment variable name"),
            ),
        ];
        for (env, file, want) in cases {
            let mut p = Problems::default();
            validate_pair(&mut p, "s", "password", env, file);
            match want {
                None => assert!(p.is_empty(), "{env:?} {file:?}: {p}"),
                Some(w) => assert!(p.to_string().contains(w), "want {w:?}, got {p}"),
            }
        }
    }
}
