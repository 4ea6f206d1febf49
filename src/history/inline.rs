//! `--trace history:last=7d`: a scaler's own history, read in place by
//! `qscale simulate` and `qscale tune`.
//!
//! `qscale history scaler ... -o week.csv` followed by `--trace week.csv`
//! is two commands and a file to keep in step with the config; most runs
//! only want "the last week of this scaler's queue". This module turns the
//! `history:` form of `--trace` into the same [`HistoryArgs`] the
//! `history scaler` command builds, so both read exactly the same data
//! with the same checks (gaps refused unless `fill_gaps=zero`, trimmed ends
//! warned about). It only parses: the command layer (`cli`) does the
//! reading, since the simulator below it never touches a client.

use std::path::Path;
use std::time::Duration;

use super::{CommonArgs, FillGaps, HistoryArgs, HistoryError, HistorySource, ScalerArgs};

/// What starts the inline form of `--trace`.
pub const PREFIX: &str = "history:";

/// The keys the inline form takes, for the error that lists them.
const KEYS: &str = "last, from, to, fill_gaps, start_backlog, step, timeout";

/// The `history scaler` arguments that `trace` (`history:last=7d,...`)
/// asks for, reading the scaler `scaler` of `config`; `None` when `trace`
/// is not the inline form (a file or a pattern).
pub fn parse(
    trace: &str,
    config: &Path,
    scaler: Option<&str>,
) -> Option<Result<HistoryArgs, HistoryError>> {
    let spec = trace.strip_prefix(PREFIX)?;
    Some(
        parse_spec(spec).map(|(common, start_backlog, step)| HistoryArgs {
            source: HistorySource::Scaler(ScalerArgs {
                config: config.to_path_buf(),
                scaler: scaler.map(str::to_string),
                start_backlog,
                step,
                common,
            }),
        }),
    )
}

fn usage(message: String) -> HistoryError {
    HistoryError::Usage(format!(
        "--trace history:{message}; write e.g. history:last=7d or \
         history:from=2026-01-01T00:00:00Z,to=2026-01-08T00:00:00Z (keys: {KEYS})"
    ))
}

fn duration(key: &str, v: &str) -> Result<Duration, HistoryError> {
    humantime::parse_duration(v).map_err(|e| usage(format!(" {key}={v:?} is not a duration ({e})")))
}

fn parse_spec(spec: &str) -> Result<(CommonArgs, bool, Duration), HistoryError> {
    let mut common = CommonArgs {
        last: None,
        from: None,
        to: None,
        fill_gaps: None,
        output: None,
        resolution: None,
        timeout: Duration::from_secs(30),
    };
    let mut start_backlog = false;
    let mut step = Duration::from_secs(60);
    let mut seen = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        if seen.contains(&key) {
            return Err(usage(format!(" {key} is given twice")));
        }
        seen.push(key);
        let need = || value.ok_or_else(|| usage(format!(" {key} needs a value")));
        match key {
            "last" => common.last = Some(duration(key, need()?)?),
            "from" => common.from = Some(need()?.to_string()),
            "to" => common.to = Some(need()?.to_string()),
            "step" => step = duration(key, need()?)?,
            "timeout" => common.timeout = duration(key, need()?)?,
            "fill_gaps" => match need()? {
                "zero" => common.fill_gaps = Some(FillGaps::Zero),
                other => {
                    return Err(usage(format!(
                        " fill_gaps={other:?}: the only value is zero"
                    )));
                }
            },
            "start_backlog" => {
                start_backlog = match value {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(other) => {
                        return Err(usage(format!(
                            " start_backlog={other:?}: write true or false"
                        )));
                    }
                }
            }
            other => return Err(usage(format!(" unknown key {other:?}"))),
        }
    }
    if seen.is_empty() {
        return Err(usage(" says no range".into()));
    }
    Ok((common, start_backlog, step))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scaler_args(trace: &str) -> Result<ScalerArgs, String> {
        match parse(trace, Path::new("q.toml"), Some("workers")) {
            None => Err("not inline".into()),
            Some(Err(e)) => Err(e.to_string()),
            Some(Ok(HistoryArgs {
                source: HistorySource::Scaler(s),
            })) => Ok(s),
            Some(Ok(other)) => Err(format!("{other:?}")),
        }
    }

    #[test]
    fn files_and_patterns_are_not_the_inline_form() {
        for t in ["week.csv", "burst:base=1,size=20", "history.csv"] {
            assert!(parse(t, Path::new("q.toml"), None).is_none(), "{t}");
        }
    }

    #[test]
    fn the_inline_form_reads_the_scaler_named_with_its_range_and_options() {
        let s = scaler_args("history:last=7d,fill_gaps=zero,start_backlog,step=30s").unwrap();
        assert_eq!(s.config, PathBuf::from("q.toml"));
        assert_eq!(s.scaler.as_deref(), Some("workers"));
        assert_eq!(s.common.last, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(s.common.fill_gaps, Some(FillGaps::Zero));
        assert!(s.start_backlog);
        assert_eq!(s.step, Duration::from_secs(30));
        assert!(s.common.output.is_none(), "nothing is written");

        let s = scaler_args("history:from=2026-01-01T00:00:00Z, to=2026-01-02T00:00:00Z").unwrap();
        assert_eq!(s.common.from.as_deref(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(s.common.to.as_deref(), Some("2026-01-02T00:00:00Z"));
        assert!(!s.start_backlog);
        assert_eq!(s.step, Duration::from_secs(60));
    }

    #[test]
    fn a_bad_inline_form_is_one_line_naming_the_key_and_the_keys_there_are() {
        for (trace, says) in [
            ("history:", "says no range"),
            ("history:last=soon", "last=\"soon\" is not a duration"),
            ("history:last=1d,last=2d", "last is given twice"),
            ("history:fill_gaps=linear", "the only value is zero"),
            ("history:since=1d", "unknown key \"since\""),
            ("history:last", "last needs a value"),
            ("history:last=1d,start_backlog=maybe", "write true or false"),
        ] {
            let e = scaler_args(trace).unwrap_err();
            assert!(e.contains(says), "{trace}: {e}");
            assert!(e.contains("keys: last, from, to"), "{trace}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}
