//! The command-line interface: `check`, `schema` (and, as they land, `run`,
//! `once`, `simulate`).
//!
//! Exit codes are part of the interface: 0 success, 2 for a configuration the
//! user must fix (every problem listed), 1 for anything else.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    },
    /// Print the JSON Schema of the config file (for editor completion).
    Schema,
    /// Replay a trace of arrivals through a scaler's policy in virtual time
    /// and report message age and cost (optionally against the HPA).
    Simulate(Box<crate::simulate::SimulateArgs>),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => Ok(check(
            &config,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&crate::config::json_schema())?;
            println!("{schema}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate(args) => crate::simulate::main(*args),
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
    format!(
        "{}: {} -> {}, replicas {}..{}, signals {}, every {}{}",
        s.name,
        s.source.describe(),
        s.target.describe(),
        p.min_replicas,
        p.max_replicas,
        signals.join(" + "),
        humantime::format_duration(s.poll_interval(&cfg.defaults)),
        if p.paused { ", paused" } else { "" }
    )
}
