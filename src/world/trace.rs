//! Arrival traces: what enters the queue, second by second.
//!
//! The simulator and the demo source both need "how many messages arrive in
//! second t". That comes from one of two places:
//!
//! - a **CSV file** of `t_seconds,arrivals` rows (arrivals counted in the bin
//!   that starts at `t_seconds` and ends at the next row), for replaying what
//!   a real queue saw; or
//! - a **generated pattern** such as `burst:base=1,size=2000,at=5m,every=1h`,
//!   for exploring shapes no one has recorded yet, and for the demo, which
//!   runs forever and so needs an endless, lazily generated stream.
//!
//! Both are reduced to whole messages per second: a pattern's fractional rate
//! is carried over from second to second (so `constant:rate=0.5` gives one
//! message every other second, exactly), and a coarse CSV bin is spread
//! evenly over its seconds the same way. With `noise=poisson` each second is
//! instead a Poisson draw around the pattern's rate, from a seeded generator
//! so that runs are reproducible.
//!
//! Pattern syntax (`name:key=value,...`; durations are humantime such as
//! `90s`, `10m`, `1h30m`, or plain seconds):
//!
//! | pattern | keys | rate in second t |
//! |---|---|---|
//! | `constant` | `rate` | `rate` |
//! | `step` | `from`, `to`, `at` | `from` before `at`, `to` from then on |
//! | `burst` | `base`, `size`, `at`, `every` (optional) | `base`, plus `size` messages in the second `at` (and every `every` after it) |
//! | `diurnal` | `min`, `max`, `period` (default 24h) | a cosine from `min` at t = 0 up to `max` at period/2 and back |
//! | `sawtooth` | `min` (default 0), `max`, `period` | rises linearly from `min` to `max` over each period, then drops |
//!
//! Any pattern takes `noise=poisson` and `seed=N` (default 0).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The longest trace the simulator accepts: 31 days at 1 s resolution is
/// ~2.7 M steps, well past any useful replay, and it bounds memory when a
/// typo asks for years.
pub const MAX_TRACE_SECONDS: u64 = 31 * 86_400;

/// The pattern names [`Pattern::parse`] knows, for error messages.
pub const PATTERN_NAMES: [&str; 5] = ["constant", "step", "burst", "diurnal", "sawtooth"];

/// Why a trace or pattern could not be used. One line a user can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TraceError {
    /// The pattern text is malformed.
    #[error("pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    /// A CSV trace file could not be read.
    #[error("cannot read trace file {path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    /// A CSV trace file has a bad line.
    #[error("trace file {path}, line {line}: {message}")]
    Csv {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A CSV trace file has no data rows.
    #[error("trace file {path} has no data rows; write lines of `t_seconds,arrivals`")]
    EmptyCsv { path: PathBuf },
    /// The requested or recorded length is beyond [`MAX_TRACE_SECONDS`].
    #[error("{what} is longer than the 31 days the simulator replays")]
    TooLong { what: String },
    /// The argument is neither a pattern nor an existing file.
    #[error(
        "{arg:?} is neither a trace file nor a pattern; patterns are {}, e.g. \"burst:base=1,size=2000,at=5m\"",
        PATTERN_NAMES.join(", ")
    )]
    Unknown { arg: String },
}

/// The shape of a generated pattern, before noise.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    Constant {
        rate: f64,
    },
    Step {
        from: f64,
        to: f64,
        at: u64,
    },
    Burst {
        base: f64,
        size: f64,
        at: u64,
        every: Option<u64>,
    },
    Diurnal {
        min: f64,
        max: f64,
        period: u64,
    },
    Sawtooth {
        min: f64,
        max: f64,
        period: u64,
    },
}

/// Randomness added on top of a shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noise {
    /// Deterministic: fractional rates carried from second to second.
    None,
    /// Each second's count is a Poisson draw around the shape's rate.
    Poisson,
}

/// A parsed arrival pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    pub shape: Shape,
    pub noise: Noise,
    pub seed: u64,
    /// The text it was parsed from, for labels.
    pub text: String,
}

/// Key/value pairs of one pattern, consumed as they are read so that
/// leftovers can be reported as unknown keys.
struct Params<'a> {
    pattern: &'a str,
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Params<'a> {
    fn err(&self, message: impl Into<String>) -> TraceError {
        TraceError::Pattern {
            pattern: self.pattern.to_string(),
            message: message.into(),
        }
    }

    fn take(&mut self, key: &str) -> Option<&'a str> {
        let i = self.pairs.iter().position(|(k, _)| *k == key)?;
        Some(self.pairs.remove(i).1)
    }

    fn number(&mut self, key: &str, default: Option<f64>) -> Result<f64, TraceError> {
        match self.take(key) {
            None => default.ok_or_else(|| self.err(format!("missing `{key}=` (a number)"))),
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(self.err(format!(
                    "`{key}={v}`: expected a number >= 0, e.g. `{key}=5`"
                ))),
            },
        }
    }

    fn seconds(&mut self, key: &str, default: Option<u64>) -> Result<u64, TraceError> {
        match self.take(key) {
            None => default
                .ok_or_else(|| self.err(format!("missing `{key}=` (a duration such as 10m)"))),
            Some(v) => parse_seconds(v).ok_or_else(|| {
                self.err(format!(
                    "`{key}={v}`: expected a duration such as 90s, 10m or 1h, or whole seconds"
                ))
            }),
        }
    }

    fn positive_seconds(&mut self, key: &str, default: Option<u64>) -> Result<u64, TraceError> {
        let s = self.seconds(key, default)?;
        if s == 0 {
            return Err(self.err(format!("`{key}` must be longer than 0s")));
        }
        Ok(s)
    }
}

/// Whole seconds from `"90"`, `"90s"`, `"10m"`, `"1h30m"`.
pub fn parse_seconds(v: &str) -> Option<u64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    humantime::parse_duration(v).ok().map(|d| d.as_secs())
}

impl Pattern {
    /// Parse `name:key=value,...` (see the module doc for the syntax).
    pub fn parse(text: &str) -> Result<Pattern, TraceError> {
        let text = text.trim();
        let err = |m: String| TraceError::Pattern {
            pattern: text.to_string(),
            message: m,
        };
        let (name, rest) = text.split_once(':').unwrap_or((text, ""));
        let mut pairs = Vec::new();
        for part in rest.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("`{part}`: expected key=value")))?;
            let k = k.trim();
            if pairs.iter().any(|(seen, _)| *seen == k) {
                return Err(err(format!("`{k}` given twice")));
            }
            pairs.push((k, v.trim()));
        }
        let mut p = Params {
            pattern: text,
            pairs,
        };
        let shape = match name.trim() {
            "constant" => Shape::Constant {
                rate: p.number("rate", None)?,
            },
            "step" => Shape::Step {
                from: p.number("from", None)?,
                to: p.number("to", None)?,
                at: p.seconds("at", None)?,
            },
            "burst" => {
                let base = p.number("base", Some(0.0))?;
                let size = p.number("size", None)?;
                let at = p.seconds("at", Some(0))?;
                let every = if p.pairs.iter().any(|(k, _)| *k == "every") {
                    Some(p.positive_seconds("every", None)?)
                } else {
                    None
                };
                Shape::Burst {
                    base,
                    size,
                    at,
                    every,
                }
            }
            "diurnal" => {
                let min = p.number("min", Some(0.0))?;
                let max = p.number("max", None)?;
                if max < min {
                    return Err(p.err("`max` must be >= `min`"));
                }
                Shape::Diurnal {
                    min,
                    max,
                    period: p.positive_seconds("period", Some(86_400))?,
                }
            }
            "sawtooth" => {
                let min = p.number("min", Some(0.0))?;
                let max = p.number("max", None)?;
                if max < min {
                    return Err(p.err("`max` must be >= `min`"));
                }
                Shape::Sawtooth {
                    min,
                    max,
                    period: p.positive_seconds("period", None)?,
                }
            }
            other => {
                return Err(err(format!(
                    "unknown pattern `{other}`; use one of {}",
                    PATTERN_NAMES.join(", ")
                )));
            }
        };
        let noise = match p.take("noise") {
            None | Some("none") => Noise::None,
            Some("poisson") => Noise::Poisson,
            Some(v) => return Err(p.err(format!("`noise={v}`: use noise=poisson or noise=none"))),
        };
        let seed = match p.take("seed") {
            None => 0,
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| p.err(format!("`seed={v}`: expected a whole number")))?,
        };
        if let Some((k, _)) = p.pairs.first() {
            return Err(p.err(format!("unknown key `{k}` for pattern `{}`", name.trim())));
        }
        Ok(Pattern {
            shape,
            noise,
            seed,
            text: text.to_string(),
        })
    }

    /// Expected arrivals in second `t` (messages per second, before noise).
    pub fn rate_at(&self, t: u64) -> f64 {
        match self.shape {
            Shape::Constant { rate } => rate,
            Shape::Step { from, to, at } => {
                if t < at {
                    from
                } else {
                    to
                }
            }
            Shape::Burst {
                base,
                size,
                at,
                every,
            } => {
                let hit = match every {
                    _ if t < at => false,
                    None => t == at,
                    Some(e) => (t - at).is_multiple_of(e),
                };
                if hit { base + size } else { base }
            }
            Shape::Diurnal { min, max, period } => {
                // Evaluated mid-second so a 24 h period integrates evenly.
                let phase = ((t % period) as f64 + 0.5) / period as f64;
                min + (max - min) * (1.0 - (std::f64::consts::TAU * phase).cos()) / 2.0
            }
            Shape::Sawtooth { min, max, period } => {
                min + (max - min) * (t % period) as f64 / period as f64
            }
        }
    }

    /// An endless stream of whole arrivals per second, from second 0.
    pub fn arrivals(&self) -> Arrivals {
        Arrivals {
            pattern: self.clone(),
            t: 0,
            carry: 0.0,
            rng: None,
        }
    }
}

/// Whole messages per second from a [`Pattern`]; never ends.
#[derive(Debug)]
pub struct Arrivals {
    pattern: Pattern,
    t: u64,
    carry: f64,
    /// Made on the first Poisson draw, from the pattern's seed, so the
    /// draws are those of a generator made with the stream: a stream
    /// without noise (each demo queue's, by default) does not carry the
    /// generator's 300-odd bytes.
    rng: Option<Box<StdRng>>,
}

impl Iterator for Arrivals {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        let rate = self.pattern.rate_at(self.t);
        self.t += 1;
        Some(match self.pattern.noise {
            Noise::None => {
                // Carry the fraction so the long-run total is exact.
                let total = self.carry + rate;
                let whole = (total + 1e-9).floor();
                self.carry = total - whole;
                whole as u64
            }
            Noise::Poisson => {
                let seed = self.pattern.seed;
                let rng = self
                    .rng
                    .get_or_insert_with(|| Box::new(StdRng::seed_from_u64(seed)));
                poisson(rng, rate)
            }
        })
    }
}

/// One Poisson draw with mean `lambda`: exact (Knuth's product of uniforms)
/// below 30, a rounded normal approximation above, where the two are
/// indistinguishable for a queue and Knuth's loop would be slow.
pub fn poisson(rng: &mut StdRng, lambda: f64) -> u64 {
    if lambda.is_nan() || lambda <= 0.0 {
        return 0;
    }
    if lambda < 30.0 {
        let limit = (-lambda).exp();
        let mut k = 0u64;
        let mut p: f64 = rng.random::<f64>();
        while p > limit {
            k += 1;
            p *= rng.random::<f64>();
        }
        k
    } else {
        // Box-Muller; 1 - u keeps the logarithm finite.
        let u1: f64 = 1.0 - rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (lambda + lambda.sqrt() * z).round().max(0.0) as u64
    }
}

/// A finite trace: whole arrivals in each second from 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// `per_second[t]` messages arrive at the start of second `t`.
    pub per_second: Vec<u64>,
    /// Where it came from (file name or pattern), for reports and charts.
    pub label: String,
}

impl Trace {
    /// Arrivals in second `t` (zero past the end).
    pub fn at(&self, t: u64) -> u64 {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.per_second.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Length in seconds.
    pub fn len_seconds(&self) -> u64 {
        self.per_second.len() as u64
    }

    /// Total messages.
    pub fn total(&self) -> u64 {
        self.per_second.iter().sum()
    }

    /// The first `seconds` of a pattern.
    pub fn from_pattern(p: &Pattern, seconds: u64) -> Trace {
        Trace {
            per_second: p.arrivals().take(seconds as usize).collect(),
            label: p.text.clone(),
        }
    }

    /// Parse CSV text (`path` only names it in errors). Rows are
    /// `t_seconds,arrivals`; an optional header on the first line, blank
    /// lines and `#` comments are skipped. Each row's arrivals are spread
    /// evenly over the seconds until the next row's `t_seconds` (the last row
    /// spans as long as the one before it).
    pub fn parse_csv(text: &str, path: &Path) -> Result<Trace, TraceError> {
        let bad = |line: usize, message: String| TraceError::Csv {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut rows: Vec<(u64, f64)> = Vec::new();
        let mut first_content = true;
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let is_first = std::mem::replace(&mut first_content, false);
            if fields.len() != 2 {
                return Err(bad(
                    line_no,
                    format!(
                        "expected 2 fields `t_seconds,arrivals`, found {}",
                        fields.len()
                    ),
                ));
            }
            let t = fields[0].parse::<f64>();
            if is_first && t.is_err() {
                // A header such as `t_seconds,arrivals`.
                continue;
            }
            let t = match t {
                Ok(t) if t.is_finite() && t >= 0.0 && t.fract() == 0.0 => {
                    if t >= MAX_TRACE_SECONDS as f64 {
                        return Err(bad(
                            line_no,
                            format!("t_seconds {t} is beyond 31 days ({MAX_TRACE_SECONDS} s)"),
                        ));
                    }
                    t as u64
                }
                _ => {
                    return Err(bad(
                        line_no,
                        format!(
                            "t_seconds {:?} is not a whole number of seconds >= 0",
                            fields[0]
                        ),
                    ));
                }
            };
            let a = match fields[1].parse::<f64>() {
                Ok(a) if a.is_finite() && a >= 0.0 => a,
                _ => {
                    return Err(bad(
                        line_no,
                        format!("arrivals {:?} is not a number >= 0", fields[1]),
                    ));
                }
            };
            if let Some(&(prev, _)) = rows.last()
                && t <= prev
            {
                return Err(bad(
                    line_no,
                    format!("t_seconds {t} is not after the previous row's {prev}"),
                ));
            }
            rows.push((t, a));
        }
        if rows.is_empty() {
            return Err(TraceError::EmptyCsv {
                path: path.to_path_buf(),
            });
        }
        let last_width = match rows.len() {
            1 => 1,
            n => rows[n - 1].0 - rows[n - 2].0,
        };
        let end = rows[rows.len() - 1].0 + last_width;
        let mut per_second = vec![0u64; end as usize];
        let mut carry = 0.0;
        for (i, &(t, a)) in rows.iter().enumerate() {
            let next = rows.get(i + 1).map_or(end, |r| r.0);
            let width = (next - t) as f64;
            for slot in &mut per_second[t as usize..next as usize] {
                let total = carry + a / width;
                let whole = (total + 1e-9).floor();
                carry = total - whole;
                *slot = whole as u64;
            }
        }
        Ok(Trace {
            per_second,
            label: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
        })
    }

    /// Render as CSV at `resolution` seconds per row (each row the sum over
    /// its bin), with a header; what `qscale simulate --generate-trace` prints.
    pub fn to_csv(&self, resolution: u64) -> String {
        let resolution = resolution.max(1) as usize;
        let mut out = String::from("t_seconds,arrivals\n");
        for (i, chunk) in self.per_second.chunks(resolution).enumerate() {
            let sum: u64 = chunk.iter().sum();
            out.push_str(&format!("{},{}\n", i * resolution, sum));
        }
        out
    }
}

/// What a `--trace` argument names.
#[derive(Debug, Clone, PartialEq)]
pub enum TraceSpec {
    Pattern(Pattern),
    File(PathBuf),
}

impl TraceSpec {
    /// A pattern if it starts with a known pattern name and `:`, else an
    /// existing file; anything else is a clear error.
    pub fn parse(arg: &str) -> Result<TraceSpec, TraceError> {
        let name = arg.split_once(':').map(|(n, _)| n.trim());
        if let Some(n) = name
            && PATTERN_NAMES.contains(&n)
        {
            return Pattern::parse(arg).map(TraceSpec::Pattern);
        }
        let path = PathBuf::from(arg);
        if path.is_file() {
            return Ok(TraceSpec::File(path));
        }
        match name {
            Some(n) if !n.is_empty() && n.chars().all(|c| c.is_ascii_alphabetic()) => {
                // Looks like a pattern with a misspelt name.
                Pattern::parse(arg).map(TraceSpec::Pattern)
            }
            _ if arg.ends_with(".csv") => Err(TraceError::Unreadable {
                path,
                reason: "no such file".into(),
            }),
            _ => Err(TraceError::Unknown {
                arg: arg.to_string(),
            }),
        }
    }

    /// Load the trace. A pattern runs for `duration` (required for
    /// patterns); a file runs for `duration` when given (padded with
    /// silence or cut), else its own length.
    pub fn load(&self, duration: Option<Duration>) -> Result<Trace, TraceError> {
        check_length(duration)?;
        match self {
            TraceSpec::Pattern(p) => Ok(Trace::from_pattern(
                p,
                duration.unwrap_or(Duration::from_secs(7200)).as_secs(),
            )),
            TraceSpec::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| TraceError::Unreadable {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                let mut t = Trace::parse_csv(&text, path)?;
                if let Some(d) = duration {
                    t.per_second.resize(d.as_secs() as usize, 0);
                }
                Ok(t)
            }
        }
    }
}

/// Refuse a duration beyond [`MAX_TRACE_SECONDS`].
pub fn check_length(duration: Option<Duration>) -> Result<(), TraceError> {
    match duration {
        Some(d) if d.as_secs() > MAX_TRACE_SECONDS => Err(TraceError::TooLong {
            what: format!("--duration {}", humantime::format_duration(d)),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(p: &str, n: usize) -> Vec<u64> {
        Pattern::parse(p).unwrap().arrivals().take(n).collect()
    }

    #[test]
    fn fractional_rates_are_carried_so_totals_are_exact() {
        assert_eq!(take("constant:rate=0.5", 6), vec![0, 1, 0, 1, 0, 1]);
        assert_eq!(take("constant:rate=2.25", 400).iter().sum::<u64>(), 900);
    }

    #[test]
    fn step_switches_rate_at_the_given_time() {
        let a = take("step:from=2,to=20,at=10s", 12);
        assert_eq!(&a[..10], &[2; 10]);
        assert_eq!(&a[10..], &[20, 20]);
    }

    #[test]
    fn burst_adds_its_size_at_and_every() {
        let a = take("burst:base=1,size=100,at=2,every=5", 13);
        assert_eq!(a, vec![1, 1, 101, 1, 1, 1, 1, 101, 1, 1, 1, 1, 101]);
        let once = take("burst:size=10,at=1m", 200);
        assert_eq!(once.iter().sum::<u64>(), 10);
        assert_eq!(once[60], 10);
    }

    #[test]
    fn diurnal_integrates_to_the_mean_over_a_period() {
        let a = take("diurnal:min=2,max=10,period=1h", 3600);
        let total: u64 = a.iter().sum();
        assert!((total as f64 - 6.0 * 3600.0).abs() <= 1.0, "{total}");
        assert!(a[0] <= 3 && a[1800] >= 9, "{} {}", a[0], a[1800]);
    }

    #[test]
    fn sawtooth_rises_and_drops_each_period() {
        let p = Pattern::parse("sawtooth:max=20,period=10s").unwrap();
        assert_eq!(p.rate_at(0), 0.0);
        assert_eq!(p.rate_at(5), 10.0);
        assert_eq!(p.rate_at(10), 0.0);
    }

    #[test]
    fn poisson_noise_is_reproducible_and_has_the_right_mean() {
        let a = take("constant:rate=5,noise=poisson,seed=42", 20_000);
        let b = take("constant:rate=5,noise=poisson,seed=42", 20_000);
        assert_eq!(a, b);
        let c = take("constant:rate=5,noise=poisson,seed=43", 20_000);
        assert_ne!(a, c);
        let mean = a.iter().sum::<u64>() as f64 / a.len() as f64;
        assert!((mean - 5.0).abs() < 0.1, "{mean}");
        let big = take("constant:rate=400,noise=poisson,seed=1", 5_000);
        let mean = big.iter().sum::<u64>() as f64 / big.len() as f64;
        assert!((mean - 400.0).abs() < 2.0, "{mean}");
    }

    #[test]
    fn bad_patterns_say_what_to_fix() {
        let cases = [
            ("constant", "missing `rate=`"),
            ("constant:rate=fast", "`rate=fast`: expected a number"),
            ("constant:rate=-1", "expected a number >= 0"),
            ("step:from=1,to=2", "missing `at=`"),
            ("step:from=1,to=2,at=soon", "expected a duration"),
            ("burst:size=5,every=0s", "`every` must be longer than 0s"),
            ("sawtooth:max=5", "missing `period=`"),
            ("diurnal:min=5,max=1", "`max` must be >= `min`"),
            ("constant:rate=1,colour=red", "unknown key `colour`"),
            ("constant:rate=1,noise=gauss", "use noise=poisson"),
            ("constant:rate=1,seed=x", "`seed=x`"),
            ("constant:rate=1,rate=2", "given twice"),
            ("constant:rate", "expected key=value"),
            ("square:max=1", "unknown pattern `square`"),
        ];
        for (text, want) in cases {
            let e = Pattern::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: want {want:?} in {e}");
        }
    }

    #[test]
    fn csv_rows_are_spread_over_their_bins() {
        let t = Trace::parse_csv(
            "t_seconds,arrivals\n# comment\n0,10\n\n10,0\n20,5\n",
            Path::new("x.csv"),
        )
        .unwrap();
        assert_eq!(t.len_seconds(), 30);
        assert_eq!(t.per_second[..10], [1; 10]);
        assert_eq!(t.total(), 15);
        assert_eq!(t.label, "x.csv");
    }

    #[test]
    fn csv_round_trips_through_to_csv() {
        let t = Trace::from_pattern(&Pattern::parse("burst:base=1,size=50,at=7").unwrap(), 30);
        let back = Trace::parse_csv(&t.to_csv(1), Path::new("b.csv")).unwrap();
        assert_eq!(back.per_second, t.per_second);
        let coarse = Trace::parse_csv(&t.to_csv(10), Path::new("c.csv")).unwrap();
        assert_eq!(coarse.total(), t.total());
    }

    #[test]
    fn bad_csv_lines_are_reported_with_their_line_number() {
        let cases = [
            ("0,1\n1,2,3\n", 2, "expected 2 fields"),
            ("0,1\nx,2\n", 2, "not a whole number"),
            ("0,1\n1.5,2\n", 2, "not a whole number"),
            ("t,a\n0,1\n1,-2\n", 3, "arrivals \"-2\""),
            ("0,1\n5,1\n5,1\n", 3, "not after the previous row"),
            ("0,1\n99999999,1\n", 2, "beyond 31 days"),
        ];
        for (text, line, want) in cases {
            match Trace::parse_csv(text, Path::new("t.csv")) {
                Err(TraceError::Csv {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{text:?}: {message}");
                    assert!(message.contains(want), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            Trace::parse_csv("# nothing\n", Path::new("e.csv")),
            Err(TraceError::EmptyCsv { .. })
        ));
    }

    #[test]
    fn trace_arguments_are_patterns_or_files() {
        assert!(matches!(
            TraceSpec::parse("constant:rate=1"),
            Ok(TraceSpec::Pattern(_))
        ));
        let e = TraceSpec::parse("sqaure:max=1").unwrap_err().to_string();
        assert!(e.contains("unknown pattern `sqaure`"), "{e}");
        let e = TraceSpec::parse("missing.csv").unwrap_err().to_string();
        assert!(e.contains("no such file"), "{e}");
        let e = TraceSpec::parse("nothing").unwrap_err().to_string();
        assert!(e.contains("neither a trace file nor a pattern"), "{e}");
        let e = TraceSpec::parse("constant:rate=1")
            .unwrap()
            .load(Some(Duration::from_secs(400 * 86_400)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("longer than the 31 days"), "{e}");
    }
}
