//! The policy simulator (`qscale simulate`) and the demo world.
//!
//! Users tune policies in the config file; this shows them, before they
//! deploy, what a policy would do to their queue. A trace of arrivals (a CSV
//! or a generated pattern, [`trace`]) is replayed in virtual time through a
//! queue-and-workers model ([`crate::world::model`]) whose replica count is set by the
//! REAL [`crate::policy::decide`] of the chosen scaler, polled at the
//! scaler's `poll_interval` exactly as the daemon does. So what the simulator
//! shows is what the daemon would do, minus the noise of real brokers (the
//! model measures the queue exactly and without delay).
//!
//! `--compare hpa` runs the same trace through an independent
//! implementation of the HPA algorithm with KEDA's defaults ([`hpa`]), and
//! [`report`] and [`chart`] print both side by side. [`tune`] (`qscale
//! tune`) searches a scaler's knobs for the cheapest policy that keeps its
//! age objective on a trace, replaying each candidate here.
//!
//! The trace, the model and the demo world live in [`crate::world`]; this
//! module is the command around them.

pub mod chart;
pub mod hpa;
pub mod report;
pub mod tune;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};

use crate::config::{Config, ConfigError, ScalerConfig};
use crate::contract::{Capabilities, Replicas, Sample};
use crate::policy::{Policy, PolicyState, decide};
use crate::targets::TargetConfig;

use crate::world::model::{Model, Observation, WorkerParams};
use crate::world::trace::{Trace, TraceError, TraceSpec};
use hpa::{Hpa, HpaParams};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use report::{Recorder, Run};

/// Start-up delay of new replicas when neither the flag nor a demo target
/// says otherwise: a typical pod pull-and-start time.
pub const DEFAULT_STARTUP_DELAY: Duration = Duration::from_secs(30);
/// The age objective when the policy has no `max_message_age`.
pub const DEFAULT_OBJECTIVE: Duration = Duration::from_secs(60);
/// How long a pattern runs without `--duration`.
pub const DEFAULT_PATTERN_DURATION: Duration = Duration::from_secs(7200);

/// Which baseline `--compare` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// The Kubernetes HPA driven by KEDA, with their defaults.
    Hpa,
}

/// How `qscale simulate` prints its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 30s, 10m, 2h)"))
}

/// `qscale simulate`: replay a trace through a scaler's policy.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Config file holding the scaler to simulate.
    #[arg(long, required_unless_present = "generate_trace")]
    pub config: Option<PathBuf>,

    /// The scaler to simulate (default: the only one in the file).
    #[arg(long)]
    pub scaler: Option<String>,

    /// Arrivals: a CSV file of `t_seconds,arrivals` rows, a pattern such
    /// as `burst:base=1,size=2000,at=5m,every=1h`, or `history:last=7d`
    /// for the scaler's own history, read as `qscale history scaler` does
    /// (see docs/simulate.md).
    #[arg(long, required_unless_present = "generate_trace")]
    pub trace: Option<String>,

    /// Simulated time, e.g. `2h` (default: a file's own length; 2h for a
    /// pattern).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Also run a baseline autoscaler on the same trace and compare.
    #[arg(long, value_enum)]
    pub compare: Option<Baseline>,

    /// Summary format: a text table or JSON.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Write an SVG chart of arrivals, backlog, oldest age and replicas.
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,

    /// Seconds one worker spends on one message (default: the demo
    /// target's, else the policy's `throughput.seconds_per_message`).
    #[arg(long)]
    pub seconds_per_message: Option<f64>,

    /// Time from asking for a replica to it taking work (default: the demo
    /// target's, else 30s).
    #[arg(long, value_parser = parse_duration)]
    pub startup_delay: Option<Duration>,

    /// How often an idle worker looks for a message after finding the queue
    /// empty, e.g. `500ms` (default 0: long polling, a message is taken the
    /// instant it arrives). A busy worker takes the next message at once.
    #[arg(long, value_parser = parse_duration)]
    pub pickup_interval: Option<Duration>,

    /// Service-time jitter: each message takes `s x (1 +/- jitter)` (0..=1;
    /// default: the demo target's, else 0).
    #[arg(long)]
    pub jitter: Option<f64>,

    /// Seed of the service-time jitter and of the poll jitter (qscale polls
    /// every `poll_interval` ± 10 %, as the daemon does).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Age objective counted in "seconds over objective" (default: the
    /// policy's `max_message_age`, else 60s).
    #[arg(long, value_parser = parse_duration)]
    pub objective: Option<Duration>,

    /// The baseline's AverageValue target (default: the policy's
    /// `messages_per_replica`).
    #[arg(long)]
    pub hpa_messages_per_replica: Option<f64>,

    /// Instead of simulating, print this pattern as a CSV trace (for
    /// `traces/`), for `--duration` (default 2h).
    #[arg(long, value_name = "PATTERN", conflicts_with_all = ["config", "compare", "chart", "trace"])]
    pub generate_trace: Option<String>,

    /// Row width of `--generate-trace` output, e.g. `10s`.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub resolution: Duration,
}

/// Why a simulation could not run. One line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{path}: no scaler named {name:?}; the file has {names}")]
    NoSuchScaler {
        path: PathBuf,
        name: String,
        names: String,
    },
    #[error("{path} has several scalers ({names}); pick one with --scaler")]
    WhichScaler { path: PathBuf, names: String },
    #[error(
        "scaler {0:?} drains several queues (sources), and the simulator models one queue: \
         simulate a copy of the scaler with the queue that matters as its [scaler.source] \
         and that queue's settings in [scaler.policy]"
    )]
    SeveralQueues(String),
    #[error(
        "seconds per message unknown for scaler {0:?}: give --seconds-per-message \
         (or set policy.throughput.seconds_per_message)"
    )]
    NoServiceTime(String),
    #[error(
        "--compare hpa needs the baseline's messages per replica: give \
         --hpa-messages-per-replica (or set policy.messages_per_replica)"
    )]
    NoHpaTarget,
    #[error("{flag}: {message}")]
    Flag {
        flag: &'static str,
        message: &'static str,
    },
    #[error(transparent)]
    Chart(#[from] chart::ChartError),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Everything about a run except the autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub trace: Trace,
    /// Simulated seconds.
    pub seconds: u64,
    pub workers: WorkerParams,
    /// Replicas ready at t = 0.
    pub initial_replicas: u32,
    /// Age objective, seconds.
    pub objective: f64,
}

/// Something that sets the replica count, asked once per simulated second.
pub trait Autoscaler {
    /// Look at the model at the start of second `t` (before that second's
    /// arrivals) and return a new replica count, or `None` to leave it; the
    /// pods follow in second `t + 1` (see [`run`]).
    fn tick(&mut self, t: u64, model: &Model) -> Option<u32>;
}

/// How far each wait between two polls strays from the poll interval, as
/// the daemon's control loop jitters it (so that scalers spread out).
const POLL_JITTER: f64 = 0.1;

/// qscale's own policy, driven exactly as the daemon's control loop does.
pub struct QscalePolicy {
    policy: Policy,
    state: PolicyState,
    caps: Capabilities,
    poll: u64,
    /// When the next poll is due, seconds (fractional: it fires at the first
    /// whole second from then). The daemon's polls drift against the trace
    /// and the 15 s rate-limit periods; on an exact 5 s grid every period
    /// ended exactly on a poll and every drain was seen at once, which ran
    /// batch drops 8 % cheaper than the end-to-end benchmark.
    next_poll: f64,
    jitter: StdRng,
    base: Instant,
    /// (second, messages arrived by then) at the previous poll, for the
    /// arrival rate a source measures between polls.
    last_poll: Option<(u64, u64)>,
}

impl QscalePolicy {
    /// The policy of `scaler`, polled every `poll` (whole seconds, >= 1).
    /// The model is one queue: for a scaler with several (which
    /// [`pick_scaler`] refuses) its first queue is simulated.
    pub fn new(scaler: &ScalerConfig, poll: Duration) -> QscalePolicy {
        let queues = scaler.queues();
        let caps = queues
            .first()
            .map_or(Capabilities::none(), |q| q.source.capabilities());
        let policy = queues.first().map_or(&scaler.policy, |q| &q.policy);
        QscalePolicy {
            policy: Policy::new(policy, &caps),
            state: PolicyState::new(),
            caps,
            poll: poll.as_secs().max(1),
            next_poll: 0.0,
            jitter: StdRng::seed_from_u64(0),
            base: Instant::now(),
            last_poll: None,
        }
    }

    /// Seed the poll jitter (the scenario's seed, so `--seed` varies both).
    pub fn with_seed(mut self, seed: u64) -> QscalePolicy {
        self.jitter = StdRng::seed_from_u64(seed);
        self
    }

    /// What the scaler's source would report, measured from the model.
    fn sample(&mut self, t: u64, o: &Observation, arrived: u64) -> Sample {
        let mut s = Sample::empty(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(t));
        s.visible = Some(o.visible);
        s.in_flight = self.caps.in_flight.then_some(o.in_flight);
        s.delayed = self.caps.delayed.then_some(0);
        s.oldest_age = self
            .caps
            .oldest_age
            .then(|| Duration::from_secs_f64(o.oldest_age));
        if self.caps.arrival_rate
            && let Some((t0, a0)) = self.last_poll
            && t > t0
        {
            s.arrival_rate = Some((arrived - a0) as f64 / (t - t0) as f64);
        }
        self.last_poll = Some((t, arrived));
        s
    }
}

impl Autoscaler for QscalePolicy {
    fn tick(&mut self, t: u64, model: &Model) -> Option<u32> {
        if (t as f64) < self.next_poll {
            return None;
        }
        // From when it was due, not when it fired, so the whole seconds of
        // the model do not lengthen the interval on average.
        let stray = 1.0 + POLL_JITTER * (2.0 * self.jitter.random::<f64>() - 1.0);
        self.next_poll += self.poll as f64 * stray;
        let o = model.observe();
        let sample = self.sample(t, &o, model.arrived_total());
        let now = self.base + Duration::from_secs(t);
        let current = Replicas::new(o.desired, Some(o.ready));
        let d = decide(&self.policy, &mut self.state, Some(&sample), current, now);
        if d.replicas != o.desired {
            self.state.record_scale(o.desired, d.replicas, now);
            Some(d.replicas)
        } else {
            None
        }
    }
}

impl Autoscaler for Hpa {
    fn tick(&mut self, t: u64, model: &Model) -> Option<u32> {
        Hpa::tick(self, t, &model.observe())
    }
}

/// How long a run goes on after the trace, at most, to drain the messages
/// still waiting (the end-to-end benchmark waits as long).
pub const DRAIN_LIMIT_SECONDS: u64 = 300;

/// Replay the scenario with `scaler` setting the replicas; `name` labels
/// the run.
///
/// The run ends when the trace has ended and the queue is drained (nothing
/// waiting or in flight), or [`DRAIN_LIMIT_SECONDS`] after the trace. The
/// scaler keeps acting meanwhile. Stopping at the trace's last second
/// instead left a scaler that keeps a backlog with its last messages
/// undone: their replica-seconds uncounted and their waits cut short. On
/// the ramp trace, which ends at its peak, KEDA+HPA holds about nine
/// messages per replica, and the end-to-end benchmark spent another
/// 27-28 s at 98-100 replicas draining them, about 4 % of the run's cost.
pub fn run(scenario: &Scenario, scaler: &mut dyn Autoscaler, name: &str) -> Run {
    // The first replicas start with the run, as a Deployment created with
    // the trace does (and the end-to-end benchmark's): not ready until
    // their start-up delay has passed.
    let mut model = Model::new(scenario.workers, 0);
    model.set_replicas(scenario.initial_replicas);
    let mut rec = Recorder::new(scenario.objective, scenario.seconds as usize);
    // A count the scaler writes in second `t` reaches the pods at the
    // start of second `t + 1`: the Deployment's controllers and the
    // kubelet act on a new `spec.replicas` a moment after it is written,
    // not at that instant (the end-to-end benchmark's kubelet looks once a
    // second). Applied at once, new workers took work a second earlier
    // than end to end (its KEDA+HPA log: pods written at 150 s were still
    // starting at 180.01 s), every scale-up drained a message or two more
    // by the next poll, and KEDA's `ceil(backlog / 10)` on the ramp came
    // out a replica short from 150 s on.
    let mut written: Option<u32> = None;
    let mut t = 0;
    loop {
        if t >= scenario.seconds {
            let o = model.observe();
            let drained = o.visible + o.in_flight == 0 && written.is_none();
            if drained || t >= scenario.seconds + DRAIN_LIMIT_SECONDS {
                break;
            }
        }
        if let Some(n) = written.take() {
            model.set_replicas(n);
        }
        // The scaler looks at the start of second `t`; that second's
        // arrivals come spread over it (as a real producer, and the
        // end-to-end benchmark, send them), so a poll at exactly `t` sees
        // none of them. Counting them all at the start let a poll see a
        // batch drop at the very instant it began, which put KEDA's 30 s
        // poll a whole interval ahead of the real one.
        if let Some(n) = scaler.tick(t, &model)
            && n != model.observe().desired
        {
            written = Some(n);
            rec.scale_action();
        }
        let arrivals = if t < scenario.seconds {
            scenario.trace.at(t)
        } else {
            0
        };
        model.arrive_spread(arrivals);
        rec.second(arrivals, &model.observe());
        model.step();
        t += 1;
    }
    model.record_unfinished_waits();
    rec.finish(name, model.waits())
}

/// Pick the scaler named `name`, or the only one.
pub fn pick_scaler<'a>(
    cfg: &'a Config,
    name: Option<&str>,
    path: &std::path::Path,
) -> Result<&'a ScalerConfig, SimulateError> {
    let names = || {
        cfg.scalers
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scaler = match name {
        Some(n) => cfg.scaler(n).ok_or_else(|| SimulateError::NoSuchScaler {
            path: path.to_path_buf(),
            name: n.to_string(),
            names: names(),
        }),
        None if cfg.scalers.len() == 1 => Ok(&cfg.scalers[0]),
        None => Err(SimulateError::WhichScaler {
            path: path.to_path_buf(),
            names: names(),
        }),
    }?;
    if scaler.is_multi_queue() {
        return Err(SimulateError::SeveralQueues(scaler.name.clone()));
    }
    Ok(scaler)
}

/// The scenario for `scaler`, from the flags and the scaler's own settings.
pub fn scenario_for(
    scaler: &ScalerConfig,
    trace: Trace,
    duration: Option<Duration>,
    args: &SimulateArgs,
) -> Result<Scenario, SimulateError> {
    let demo = match &scaler.target {
        TargetConfig::Demo(d) => Some(d),
        _ => None,
    };
    let spm = args
        .seconds_per_message
        .or(demo.map(|d| d.seconds_per_message))
        .or(scaler
            .policy
            .throughput
            .as_ref()
            .and_then(|t| t.seconds_per_message))
        .ok_or_else(|| SimulateError::NoServiceTime(scaler.name.clone()))?;
    if !(spm.is_finite() && spm > 0.0) {
        return Err(SimulateError::Flag {
            flag: "--seconds-per-message",
            message: "must be a number > 0",
        });
    }
    let jitter = args.jitter.or(demo.map(|d| d.jitter)).unwrap_or(0.0);
    if !(jitter.is_finite() && (0.0..=1.0).contains(&jitter)) {
        return Err(SimulateError::Flag {
            flag: "--jitter",
            message: "must be >= 0 and <= 1",
        });
    }
    let startup = args
        .startup_delay
        .or(demo.map(|d| d.startup_delay))
        .unwrap_or(DEFAULT_STARTUP_DELAY);
    let objective = args
        .objective
        .or(scaler.policy.max_message_age)
        .unwrap_or(DEFAULT_OBJECTIVE);
    let seconds = duration.map_or(trace.len_seconds(), |d| d.as_secs());
    Ok(Scenario {
        trace,
        seconds,
        workers: WorkerParams {
            seconds_per_message: spm,
            jitter,
            startup_delay: startup.as_secs_f64(),
            max_replicas: scaler.policy.max_replicas,
            seed: args.seed,
            pickup_interval: args.pickup_interval.map_or(0.0, |d| d.as_secs_f64()),
        },
        initial_replicas: scaler.policy.min_replicas,
        objective: objective.as_secs_f64(),
    })
}

/// The baseline's settings for `scaler`.
pub fn hpa_params_for(
    scaler: &ScalerConfig,
    messages_per_replica: Option<f64>,
) -> Result<HpaParams, SimulateError> {
    let target = messages_per_replica
        .or(scaler.policy.messages_per_replica)
        .ok_or(SimulateError::NoHpaTarget)?;
    if !(target.is_finite() && target > 0.0) {
        return Err(SimulateError::Flag {
            flag: "--hpa-messages-per-replica",
            message: "must be a number > 0",
        });
    }
    Ok(HpaParams::keda_defaults(
        target,
        scaler.policy.min_replicas,
        scaler.policy.max_replicas,
    ))
}

/// Everything `qscale simulate` computed.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub scaler: String,
    pub runs: Vec<Run>,
    /// Wall time of the qscale run alone.
    pub qscale_wall: Duration,
}

/// The trace `--trace` names (a file or a pattern), or `preloaded` when the
/// command layer already read it (`--trace history:...`), run for
/// `--duration`; with the duration in force (`None`: the trace's own).
pub fn load_trace(
    trace_arg: &str,
    duration: Option<Duration>,
    preloaded: Option<Trace>,
) -> Result<(Trace, Option<Duration>), SimulateError> {
    if let Some(mut t) = preloaded {
        crate::world::trace::check_length(duration)?;
        if let Some(d) = duration {
            t.per_second.resize(d.as_secs() as usize, 0);
        }
        return Ok((t, duration));
    }
    let spec = TraceSpec::parse(trace_arg)?;
    let duration = match (&spec, duration) {
        (TraceSpec::Pattern(_), None) => Some(DEFAULT_PATTERN_DURATION),
        (_, d) => d,
    };
    Ok((spec.load(duration)?, duration))
}

/// Load, pick, replay: the work of `qscale simulate` without the printing.
pub fn simulate(args: &SimulateArgs) -> Result<Outcome, SimulateError> {
    simulate_with(args, None)
}

/// [`simulate`] on a trace already read (`preloaded`), when given.
pub fn simulate_with(
    args: &SimulateArgs,
    preloaded: Option<Trace>,
) -> Result<Outcome, SimulateError> {
    let (Some(path), Some(trace_arg)) = (&args.config, &args.trace) else {
        return Err(SimulateError::Flag {
            flag: "--config/--trace",
            message: "both are required to simulate",
        });
    };
    let cfg = Config::load(path)?;
    let scaler = pick_scaler(&cfg, args.scaler.as_deref(), path)?;
    let (trace, duration) = load_trace(trace_arg, args.duration, preloaded)?;
    let scenario = scenario_for(scaler, trace, duration, args)?;
    let hpa_params = match args.compare {
        Some(Baseline::Hpa) => Some(hpa_params_for(scaler, args.hpa_messages_per_replica)?),
        None => None,
    };
    let started = Instant::now();
    let mut q = QscalePolicy::new(scaler, scaler.poll_interval(&cfg.defaults)).with_seed(args.seed);
    let mut runs = vec![run(&scenario, &mut q, "qscale")];
    let qscale_wall = started.elapsed();
    if let Some(p) = hpa_params {
        runs.push(run(&scenario, &mut Hpa::new(p), "hpa"));
    }
    Ok(Outcome {
        scenario,
        scaler: scaler.name.clone(),
        runs,
        qscale_wall,
    })
}

/// The text summary: a header line and the table.
pub fn text_summary(o: &Outcome) -> String {
    let s = &o.scenario;
    let objective = humantime::format_duration(Duration::from_secs_f64(s.objective.round()));
    let mut out = format!(
        "scaler {}, trace {}: {} simulated, {} messages; {} s/message, start-up {}, max {} replicas\n",
        o.scaler,
        s.trace.label,
        humantime::format_duration(Duration::from_secs(s.seconds)),
        (0..s.seconds).map(|t| s.trace.at(t)).sum::<u64>(),
        s.workers.seconds_per_message,
        humantime::format_duration(Duration::from_secs_f64(s.workers.startup_delay)),
        s.workers.max_replicas,
    );
    let runs: Vec<&Run> = o.runs.iter().collect();
    out.push_str(&report::table(&runs, &objective.to_string()));
    out
}

/// The `--output json` document: `{"qscale": M}` or `{"qscale": M, "hpa": M}`,
/// in that order, each `M` with the fields of [`report::Metrics`] in order.
pub fn json_summary(o: &Outcome) -> String {
    #[derive(serde::Serialize)]
    struct Summary<'a> {
        qscale: Option<&'a report::Metrics>,
        #[serde(skip_serializing_if = "Option::is_none")]
        hpa: Option<&'a report::Metrics>,
    }
    let find = |name: &str| o.runs.iter().find(|r| r.name == name).map(|r| &r.metrics);
    let doc = Summary {
        qscale: find("qscale"),
        hpa: find("hpa"),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// Run `qscale simulate` with `args`, printing to `out`.
pub fn execute(args: &SimulateArgs, out: &mut dyn Write) -> Result<(), SimulateError> {
    execute_with(args, None, out)
}

/// [`execute`] on a trace already read (`preloaded`), when given.
pub fn execute_with(
    args: &SimulateArgs,
    preloaded: Option<Trace>,
    out: &mut dyn Write,
) -> Result<(), SimulateError> {
    let write_err = |e: std::io::Error| SimulateError::Write {
        path: PathBuf::from("<stdout>"),
        reason: e.to_string(),
    };
    if let Some(pattern) = &args.generate_trace {
        let p = crate::world::trace::Pattern::parse(pattern)?;
        crate::world::trace::check_length(args.duration)?;
        let secs = args.duration.unwrap_or(DEFAULT_PATTERN_DURATION).as_secs();
        let t = Trace::from_pattern(&p, secs);
        return out
            .write_all(t.to_csv(args.resolution.as_secs()).as_bytes())
            .map_err(write_err);
    }
    let o = simulate_with(args, preloaded)?;
    if let Some(path) = &args.chart {
        let runs: Vec<&Run> = o.runs.iter().collect();
        let title = format!(
            "qscale simulate: {} on {}",
            o.scaler, o.scenario.trace.label
        );
        let svg = chart::render_svg(&runs, &title, o.scenario.objective)?;
        std::fs::write(path, svg).map_err(|e| SimulateError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    }
    match args.output {
        OutputFormat::Text => {
            let mut text = text_summary(&o);
            if let Some(path) = &args.chart {
                text.push_str(&format!("chart written to {}\n", path.display()));
            }
            out.write_all(text.as_bytes()).map_err(write_err)
        }
        OutputFormat::Json => writeln!(out, "{}", json_summary(&o)).map_err(write_err),
    }
}
