//! The command-line interface: `check`, `schema`, `run`, `once`, `simulate`,
//! `tune` and `history`. This is the binary's edge: `anyhow` stops here.
//!
//! Exit codes are part of the interface: 0 success, 2 for a configuration the
//! user must fix (every problem listed), 1 for anything else.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::clock::TimeScale;
use crate::config::Config;

/// Exit code for a configuration that must be fixed.
pub const EXIT_INVALID_CONFIG: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "qscale",
    version,
    about = "Queue-depth autoscaler: scale workers on backlog, message age and arrival rate"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config file: one summary line per scaler, or every error
    /// with its field path (exit 2).
    Check {
        /// Path to the config file (.toml, .yaml or .yml).
        config: PathBuf,
        /// Also sample every source once and check the queue's own settings
        /// against the work (visibility timeout, maxReceiveCount, the
        /// dead-letter queue); exit 1 when a source cannot be sampled.
        /// Reads only; targets are not contacted.
        #[arg(long)]
        online: bool,
    },
    /// Print the JSON Schema of the config file (for editor completion).
    Schema,
    /// Run the daemon: poll every scaler, actuate, serve /metrics and /status.
    Run {
        /// Path to the config file (.toml, .yaml or .yml).
        #[arg(long, short, env = "QSCALE_CONFIG")]
        config: PathBuf,
        /// Decide and report, never write to any target.
        #[arg(long)]
        dry_run: bool,
        /// For benchmarks and demos only: run the daemon's clock N times
        /// faster (N > 0, at most 1000), so every configured and default
        /// duration (poll interval, stabilization windows, rate-limit
        /// periods, scale_to_zero_after, learned rates) acts as in real time
        /// on a trace compressed N times. Timeouts to peers and leader
        /// leases stay real. Never use it to scale real workers.
        #[arg(long, value_name = "N", default_value_t = TimeScale::REAL, allow_negative_numbers = true)]
        time_scale: TimeScale,
        /// Log format: `text` for people, `json` for log pipelines.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Sample every source once, read every target, and print the decision
    /// with its reasons. Writes nothing.
    Once {
        /// Path to the config file.
        config: PathBuf,
        /// Only this scaler.
        #[arg(long)]
        scaler: Option<String>,
        /// `text` or `json` (one JSON object per scaler, one per line).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Replay a trace of arrivals through a scaler's policy in virtual time
    /// and report message age and cost (optionally against the HPA).
    Simulate(Box<crate::simulate::SimulateArgs>),
    /// Search a scaler's policy knobs for the cheapest policy that keeps its
    /// age objective on a trace, within an action budget; print it as TOML
    /// with a table against the current policy and the HPA.
    Tune(Box<crate::simulate::tune::TuneArgs>),
    /// Write a trace CSV of the arrivals a queue saw, read from CloudWatch
    /// or Prometheus, for `qscale simulate --trace`.
    History(Box<crate::history::HistoryArgs>),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Report output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// Whether log lines get ANSI colours: only when they go to a terminal (a
/// pipe, a file or a log collector would store the escape codes as text),
/// and never when `NO_COLOR` is set to anything non-empty
/// (<https://no-color.org>).
pub fn log_colors(is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Install the tracing subscriber on stderr; `RUST_LOG` overrides the
/// default `info`.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = log_colors(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config, online } => {
            let code = check(&config, &mut std::io::stdout(), &mut std::io::stderr());
            if !online || code != ExitCode::SUCCESS {
                return Ok(code);
            }
            // Valid: load it again (cheap) for the online part.
            let Ok(cfg) = Config::load(&config) else {
                return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
            };
            let reports = runtime()?.block_on(crate::run::check_online(&cfg));
            let mut out = std::io::stdout().lock();
            let mut err = std::io::stderr().lock();
            let mut failed = false;
            for r in &reports {
                writeln!(out, "{}: online: {}", r.name, r.summary)?;
                for w in &r.warnings {
                    writeln!(out, "warning: {}: {w}", r.name)?;
                }
                if let Some(e) = &r.error {
                    writeln!(err, "error: {}: {e}", r.name)?;
                    failed = true;
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&crate::config::json_schema())?;
            println!("{schema}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            dry_run,
            time_scale,
            log_format,
        } => {
            init_logging(log_format);
            let opts = crate::run::RunOptions {
                config,
                dry_run,
                time_scale,
            };
            match runtime()?.block_on(crate::run::run(opts)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(crate::run::RunError::Config(e)) => Ok(config_problems(&e)),
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Once {
            config,
            scaler,
            output,
        } => {
            init_logging(LogFormat::Text);
            let cfg = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => return Ok(config_problems(&e)),
            };
            if let Some(name) = &scaler
                && cfg.scaler(name).is_none()
            {
                let known: Vec<&str> = cfg.scalers.iter().map(|s| s.name.as_str()).collect();
                eprintln!(
                    "error: no scaler named {name:?}; known: {}",
                    known.join(", ")
                );
                return Ok(ExitCode::from(EXIT_INVALID_CONFIG));
            }
            let reports = runtime()?.block_on(crate::run::once(&cfg, scaler.as_deref()));
            let mut out = std::io::stdout().lock();
            for r in &reports {
                match output {
                    Output::Json => writeln!(out, "{}", serde_json::to_string(r)?)?,
                    Output::Text => write!(out, "{}", crate::run::render_once_text(r))?,
                }
            }
            let failed = reports.iter().any(|r| r.error.is_some());
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Simulate(args) => simulate(&args),
        Command::Tune(args) => tune(&args),
        Command::History(args) => history(&args),
    }
}

/// A config file to fix: every problem on its own line, exit code 2.
fn config_problems(e: &crate::config::ConfigError) -> ExitCode {
    for l in e.lines() {
        eprintln!("error: {l}");
    }
    ExitCode::from(EXIT_INVALID_CONFIG)
}

/// `qscale history`: exit 0, 2 for a config file to fix, 1 for anything
/// else, always as one line.
fn history(args: &crate::history::HistoryArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    match runtime()?.block_on(crate::history::execute(args, &mut out, &mut err)) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(crate::history::HistoryError::Config(e)) => Ok(config_problems(&e)),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `--trace history:...`: the scaler's own history, read here because the
/// simulator never touches a client. `Ok(None)` for a file or a pattern;
/// `Err` holds the exit code after the error was printed.
fn inline_history(
    trace: Option<&str>,
    config: Option<&std::path::Path>,
    scaler: Option<&str>,
) -> anyhow::Result<Result<Option<crate::world::trace::Trace>, ExitCode>> {
    let (Some(trace), Some(config)) = (trace, config) else {
        return Ok(Ok(None));
    };
    let Some(args) = crate::history::inline::parse(trace, config, scaler) else {
        return Ok(Ok(None));
    };
    let read = match args {
        Ok(args) => runtime()?.block_on(crate::history::read(&args, &mut std::io::stderr())),
        Err(e) => Err(e),
    };
    Ok(match read {
        Ok(h) => Ok(Some(h.trace)),
        Err(crate::history::HistoryError::Config(e)) => Err(config_problems(&e)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(1))
        }
    })
}

/// `qscale simulate`: exit 0, 2 for a config to fix (every problem listed,
/// as `qscale check`), 1 for anything else.
fn simulate(args: &crate::simulate::SimulateArgs) -> anyhow::Result<ExitCode> {
    let preloaded = match inline_history(
        args.trace.as_deref(),
        args.config.as_deref(),
        args.scaler.as_deref(),
    )? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    match crate::simulate::execute_with(args, preloaded, &mut std::io::stdout().lock()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(crate::simulate::SimulateError::Config(e)) => Ok(config_problems(&e)),
        Err(e) => Err(e.into()),
    }
}

/// `qscale tune`: exit 0, 2 for a config to fix (every problem listed),
/// 1 for anything else (including no policy meeting the objective), always
/// as one line.
fn tune(args: &crate::simulate::tune::TuneArgs) -> anyhow::Result<ExitCode> {
    use crate::simulate::{SimulateError, tune::TuneError};
    let preloaded = match inline_history(
        Some(&args.trace),
        Some(&args.config),
        args.scaler.as_deref(),
    )? {
        Ok(t) => t,
        Err(code) => return Ok(code),
    };
    match crate::simulate::tune::execute_with(args, preloaded, &mut std::io::stdout().lock()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(TuneError::Simulate(SimulateError::Config(e))) => Ok(config_problems(&e)),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `qscale check`: the summary goes to `out`, errors to `err`.
pub fn check(path: &std::path::Path, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    match Config::load(path) {
        Ok(cfg) => {
            for s in &cfg.scalers {
                let _ = writeln!(out, "{}", summary(&cfg, s));
            }
            let _ = writeln!(
                out,
                "{}: ok, {} scaler(s)",
                path.display(),
                cfg.scalers.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let lines = e.lines();
            for l in &lines {
                let _ = writeln!(err, "error: {l}");
            }
            let _ = writeln!(err, "{}: {} error(s)", path.display(), lines.len());
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

/// One line describing a scaler: what it watches, what it resizes, how.
pub fn summary(cfg: &Config, s: &crate::config::ScalerConfig) -> String {
    let p = &s.policy;
    let signals = |p: &crate::policy::PolicyConfig| {
        let mut signals = Vec::new();
        if let Some(m) = p.messages_per_replica {
            signals.push(format!("backlog/{m}"));
        }
        if let Some(t) = &p.throughput {
            match t.seconds_per_message {
                Some(spm) => signals.push(format!("throughput {spm}s/msg")),
                None => signals.push("throughput (learned)".to_string()),
            }
        }
        if let Some(a) = p.max_message_age {
            signals.push(format!("age<={}", humantime::format_duration(a)));
        }
        signals.join(" + ")
    };
    let signals = if s.is_multi_queue() {
        s.queues()
            .iter()
            .map(|q| format!("{}: {}", q.name, signals(&q.policy)))
            .collect::<Vec<_>>()
            .join("; ")
    } else {
        signals(p)
    };
    format!(
        "{}: {} -> {}, replicas {}..{}, signals {}, every {}{}",
        s.name,
        s.describe_sources(),
        s.target.describe(),
        p.min_replicas,
        p.max_replicas,
        signals,
        humantime::format_duration(s.poll_interval(&cfg.defaults)),
        if p.paused { ", paused" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        let cases: [(bool, Option<&OsStr>, bool); 6] = [
            (true, None, true),
            (true, Some(OsStr::new("")), true),
            (true, Some(OsStr::new("1")), false),
            (true, Some(OsStr::new("false")), false),
            (false, None, false),
            (false, Some(OsStr::new("1")), false),
        ];
        for (terminal, no_color, want) in cases {
            assert_eq!(
                log_colors(terminal, no_color),
                want,
                "terminal {terminal}, NO_COLOR {no_color:?}"
            );
        }
    }
}
