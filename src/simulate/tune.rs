//! `qscale tune`: the cheapest policy that keeps a scaler's age objective on
//! its own history.
//!
//! Users tune policies in the config file, and the simulator tells them what
//! one policy would have done; tuning asks the reverse question. It searches
//! a bounded grid of each knob ([`Knob`]) by coordinate descent from the
//! scaler's current settings, replaying every candidate through the same
//! simulator (and so the daemon's own `decide`), and keeps the candidate
//! with the fewest replica-seconds among those that meet the [`Goal`]: no
//! more seconds over `max_message_age` than allowed (0 unless
//! `--max-seconds-over`) and no more scale actions than the budget (twice
//! the HPA baseline's on the same trace unless told otherwise).
//!
//! The search itself ([`search`]) is pure: the simulation and the clock come
//! in as closures, so it is unit-tested on made-up cost functions and is
//! deterministic for a given trace and seed. [`execute`] is the command
//! around it: the scenario, the HPA baseline, what each changed knob bought
//! (the proposal re-run with that knob put back), the TOML snippet, the
//! table and the chart.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;

use super::hpa::Hpa;
use super::report::{self, Metrics, Run};
use super::{
    OutputFormat, QscalePolicy, Scenario, SimulateArgs, SimulateError, chart, hpa_params_for,
    pick_scaler, run, scenario_for,
};
use crate::config::{Config, ScalerConfig};
use crate::policy::{
    ThroughputConfig, default_scale_down_cooldown, default_scale_down_stabilization,
};
use crate::world::trace::Trace;

/// Coordinate-descent rounds at most; the search also stops as soon as a
/// whole round changes nothing.
pub const MAX_ROUNDS: usize = 4;

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write e.g. 30s, 10m, 2h)"))
}

/// `--action-budget`: at most this many times the HPA baseline's scale
/// actions, written `2x-hpa`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HpaMultiple(pub f64);

fn parse_action_budget(s: &str) -> Result<HpaMultiple, String> {
    let bad = || format!("{s:?}: write a multiple of the HPA's actions, e.g. 2x-hpa or 1.5x-hpa");
    let k = s.strip_suffix("x-hpa").ok_or_else(bad)?;
    match k.parse::<f64>() {
        Ok(k) if k.is_finite() && k > 0.0 => Ok(HpaMultiple(k)),
        _ => Err(bad()),
    }
}

/// `qscale tune`: search a scaler's policy knobs for the cheapest policy
/// that meets its age objective on a trace.
#[derive(Debug, Clone, Args)]
pub struct TuneArgs {
    /// Config file holding the scaler to tune.
    #[arg(long)]
    pub config: PathBuf,

    /// The scaler to tune (default: the only one in the file).
    #[arg(long)]
    pub scaler: Option<String>,

    /// Arrivals: a CSV trace (e.g. from `qscale history`), a pattern, or
    /// `history:last=7d` for the scaler's own history.
    #[arg(long)]
    pub trace: String,

    /// Simulated time, e.g. `2h` (default: a file's own length; 2h for a
    /// pattern).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Seconds one worker spends on one message (default: the demo
    /// target's, else the policy's `throughput.seconds_per_message`).
    #[arg(long)]
    pub seconds_per_message: Option<f64>,

    /// Time from asking for a replica to it taking work (default: the demo
    /// target's, else 30s).
    #[arg(long, value_parser = parse_duration)]
    pub startup_delay: Option<Duration>,

    /// At most this many scale actions on the trace (default: the
    /// `--action-budget`).
    #[arg(long, conflicts_with = "action_budget")]
    pub max_actions: Option<u64>,

    /// At most this multiple of the HPA baseline's scale actions on the
    /// same trace, e.g. `2x-hpa`.
    #[arg(long, value_parser = parse_action_budget, default_value = "2x-hpa")]
    pub action_budget: HpaMultiple,

    /// Seconds over the objective a proposal may have (default 0: the
    /// oldest message never older than `max_message_age`).
    #[arg(long, default_value_t = 0)]
    pub max_seconds_over: u64,

    /// Seed of the simulated service-time jitter.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Stop searching after this many seconds of wall time and report the
    /// best policy found so far.
    #[arg(long, default_value_t = 60)]
    pub budget_seconds: u64,

    /// Write an SVG chart of the current policy, the proposal and the HPA.
    #[arg(long, value_name = "FILE")]
    pub chart: Option<PathBuf>,

    /// Result format: text (table, explanations, TOML snippet) or JSON.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Why tuning could not give a proposal. One line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    #[error("{flag}: {message}")]
    Flag {
        flag: &'static str,
        message: &'static str,
    },
    #[error(
        "no policy tried meets the objective on this trace: the best had {best_over} s over \
         {objective} with {best_actions} scale actions (allowed: {max_over} s over, {max_actions} \
         actions); raise max_replicas, shorten the start-up, or relax --max-seconds-over or the \
         action budget"
    )]
    Infeasible {
        objective: String,
        best_over: u64,
        best_actions: u64,
        max_over: u64,
        max_actions: u64,
    },
}

impl TuneError {
    /// A bounded label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TuneError::Simulate(_) => "simulate",
            TuneError::Flag { .. } => "flag",
            TuneError::Infeasible { .. } => "infeasible",
        }
    }
}

/// One setting the search may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Knob {
    MessagesPerReplica,
    TargetUtilization,
    Tolerance,
    ScaleDownStabilization,
    ScaleDownCooldown,
    PollInterval,
    MinReplicas,
}

impl Knob {
    /// Every knob, in the order the search visits them: the sizing signals
    /// first, then how fast it comes back down, then how often it looks.
    pub const ALL: [Knob; 7] = [
        Knob::MessagesPerReplica,
        Knob::TargetUtilization,
        Knob::Tolerance,
        Knob::ScaleDownStabilization,
        Knob::ScaleDownCooldown,
        Knob::PollInterval,
        Knob::MinReplicas,
    ];

    /// Where the knob lives in the config file, under `[[scaler]]`.
    pub fn key(self) -> &'static str {
        match self {
            Knob::MessagesPerReplica => "policy.messages_per_replica",
            Knob::TargetUtilization => "policy.throughput.target_utilization",
            Knob::Tolerance => "policy.tolerance",
            Knob::ScaleDownStabilization => "policy.scale_down.stabilization",
            Knob::ScaleDownCooldown => "policy.scale_down.cooldown",
            Knob::PollInterval => "poll_interval",
            Knob::MinReplicas => "policy.min_replicas",
        }
    }

    fn is_duration(self) -> bool {
        matches!(
            self,
            Knob::ScaleDownStabilization | Knob::ScaleDownCooldown | Knob::PollInterval
        )
    }

    /// The values tried besides the current one: a few steps on either side
    /// of every default, each one a setting somebody would write.
    fn grid(self) -> &'static [f64] {
        match self {
            Knob::MessagesPerReplica => &[5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0],
            Knob::TargetUtilization => &[0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
            Knob::Tolerance => &[0.0, 0.05, 0.1, 0.2, 0.3],
            Knob::ScaleDownStabilization => &[0.0, 15.0, 30.0, 60.0, 120.0, 300.0],
            Knob::ScaleDownCooldown => &[0.0, 15.0, 30.0, 60.0, 120.0, 300.0],
            Knob::PollInterval => &[5.0, 10.0, 15.0, 30.0, 60.0],
            Knob::MinReplicas => &[1.0, 2.0, 3.0, 5.0, 10.0],
        }
    }

    /// The knob's effective value in `s`, or `None` when the search leaves
    /// it alone: a signal the scaler does not use is not switched on (that
    /// changes what the policy is, not how it is set).
    pub fn get(self, s: &ScalerConfig, default_poll: Duration) -> Option<f64> {
        let p = &s.policy;
        match self {
            Knob::MessagesPerReplica => p.messages_per_replica,
            Knob::TargetUtilization => match &p.throughput {
                Some(t) => Some(t.target_utilization),
                // The learned throughput signal runs as a throughput
                // section without seconds_per_message would.
                None if p.learn_throughput && p.max_message_age.is_some() => Some(1.0),
                None => None,
            },
            Knob::Tolerance => Some(p.tolerance),
            Knob::ScaleDownStabilization => Some(
                p.scale_down
                    .stabilization
                    .unwrap_or(default_scale_down_stabilization())
                    .as_secs_f64(),
            ),
            Knob::ScaleDownCooldown => Some(
                p.scale_down
                    .cooldown
                    .unwrap_or(default_scale_down_cooldown())
                    .as_secs_f64(),
            ),
            Knob::PollInterval => Some(s.poll_interval.unwrap_or(default_poll).as_secs_f64()),
            // Scale to zero has its own rules (activation, the empty wait);
            // a scaler at zero is left there.
            Knob::MinReplicas => (p.min_replicas > 0).then_some(f64::from(p.min_replicas)),
        }
    }

    /// Set the knob in `s` (values come from [`Knob::values`]).
    pub fn set(self, s: &mut ScalerConfig, v: f64) {
        let p = &mut s.policy;
        let secs = || Duration::from_secs_f64(v.max(0.0));
        match self {
            Knob::MessagesPerReplica => p.messages_per_replica = Some(v),
            Knob::TargetUtilization => {
                p.throughput
                    .get_or_insert(ThroughputConfig {
                        seconds_per_message: None,
                        drain_within: None,
                        target_utilization: 1.0,
                    })
                    .target_utilization = v;
            }
            Knob::Tolerance => p.tolerance = v,
            Knob::ScaleDownStabilization => p.scale_down.stabilization = Some(secs()),
            Knob::ScaleDownCooldown => p.scale_down.cooldown = Some(secs()),
            Knob::PollInterval => s.poll_interval = Some(secs()),
            Knob::MinReplicas => p.min_replicas = v as u32,
        }
    }

    /// The values to try for a scaler whose current value is `current`: the
    /// grid plus the current value, ascending, without values the config
    /// would refuse.
    pub fn values(self, s: &ScalerConfig, current: f64) -> Vec<f64> {
        let cap = s
            .policy
            .max_parallelism
            .unwrap_or(s.policy.max_replicas)
            .min(s.policy.max_replicas);
        let mut v: Vec<f64> = self
            .grid()
            .iter()
            .copied()
            .filter(|&x| self != Knob::MinReplicas || x <= f64::from(cap))
            .chain(std::iter::once(current))
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v
    }

    /// The value as the config file writes it.
    pub fn toml_value(self, v: f64) -> String {
        if self.is_duration() {
            format!(
                "\"{}\"",
                humantime::format_duration(Duration::from_secs(v.round() as u64))
            )
        } else if self == Knob::MinReplicas {
            format!("{}", v as u32)
        } else {
            format!("{v}")
        }
    }
}

/// What a proposal must meet on the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Goal {
    /// Seconds over the age objective allowed.
    pub max_seconds_over: u64,
    /// Scale actions allowed.
    pub max_actions: u64,
}

impl Goal {
    pub fn met_by(&self, m: &Metrics) -> bool {
        m.seconds_over_objective <= self.max_seconds_over && m.scale_actions <= self.max_actions
    }

    /// Whether `a` is strictly better than `b`: meeting the goal first, then
    /// the cheaper; among runs that miss it, the one closer to it (fewer
    /// seconds over, then fewer actions), so the search walks towards it.
    pub fn better(&self, a: &Metrics, b: &Metrics) -> bool {
        let key = |m: &Metrics| {
            if self.met_by(m) {
                (
                    0,
                    m.replica_seconds,
                    m.seconds_over_objective,
                    m.scale_actions,
                )
            } else {
                (
                    1,
                    m.seconds_over_objective,
                    m.scale_actions,
                    m.replica_seconds,
                )
            }
        };
        key(a) < key(b)
    }
}

/// The search space: for each knob, the values it may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub knobs: Vec<(Knob, Vec<f64>)>,
}

/// One candidate: a value per knob of the [`Space`], in its order.
pub type Point = Vec<f64>;

/// What [`search`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub best: Point,
    pub metrics: Metrics,
    /// Distinct candidates simulated (the start included).
    pub evaluated: usize,
    /// Rounds started.
    pub rounds: usize,
    /// The search was stopped by its budget before it converged.
    pub stopped_early: bool,
}

/// Remembers every candidate simulated, so a round never re-runs one.
pub struct Memo<'a> {
    eval: &'a mut dyn FnMut(&[f64]) -> Metrics,
    seen: HashMap<Vec<u64>, Metrics>,
}

impl<'a> Memo<'a> {
    pub fn new(eval: &'a mut dyn FnMut(&[f64]) -> Metrics) -> Memo<'a> {
        Memo {
            eval,
            seen: HashMap::new(),
        }
    }

    /// The metrics of `p`, simulated at most once.
    pub fn get(&mut self, p: &[f64]) -> Metrics {
        let k: Vec<u64> = p.iter().map(|x| x.to_bits()).collect();
        if let Some(m) = self.seen.get(&k) {
            return m.clone();
        }
        let m = (self.eval)(p);
        self.seen.insert(k, m.clone());
        m
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Coordinate descent: from `start`, try every value of one knob with the
/// others at the best so far, keep the best, go on to the next knob; repeat
/// for up to [`MAX_ROUNDS`] rounds or until a round changes nothing. Ties
/// keep the earlier point, so the result depends only on the inputs.
/// `stop` is asked after each candidate (with the count so far and the best
/// point and its metrics) and ends the search early when it says so.
pub fn search(
    space: &Space,
    start: &[f64],
    goal: &Goal,
    memo: &mut Memo<'_>,
    stop: &mut dyn FnMut(usize, &[f64], &Metrics) -> bool,
) -> Found {
    let mut best: Point = start.to_vec();
    let mut best_m = memo.get(&best);
    let mut rounds = 0;
    for _ in 0..MAX_ROUNDS {
        rounds += 1;
        let mut improved = false;
        for (i, (_, values)) in space.knobs.iter().enumerate() {
            for &v in values {
                if v.to_bits() == best[i].to_bits() {
                    continue;
                }
                let mut cand = best.clone();
                cand[i] = v;
                let m = memo.get(&cand);
                if goal.better(&m, &best_m) {
                    best = cand;
                    best_m = m;
                    improved = true;
                }
                if stop(memo.len(), &best, &best_m) {
                    return Found {
                        best,
                        metrics: best_m,
                        evaluated: memo.len(),
                        rounds,
                        stopped_early: true,
                    };
                }
            }
        }
        if !improved {
            break;
        }
    }
    Found {
        best,
        metrics: best_m,
        evaluated: memo.len(),
        rounds,
        stopped_early: false,
    }
}

/// One changed knob and what it bought.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub knob: Knob,
    /// Where it lives under `[[scaler]]`, e.g. `policy.tolerance`.
    pub key: &'static str,
    pub from: f64,
    pub to: f64,
    /// The proposal re-run with this knob put back to `from`.
    pub reverted: Metrics,
    /// `reverted.replica_seconds - proposal.replica_seconds`: what the
    /// change saved (negative: what it cost, to buy age or actions).
    pub replica_seconds_saved: i64,
}

/// Everything `qscale tune` found; `--output json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Tuned {
    pub scaler: String,
    pub trace: String,
    pub objective_seconds: f64,
    pub goal: Goal,
    pub current: Metrics,
    pub proposal: Metrics,
    pub hpa: Metrics,
    pub changes: Vec<Change>,
    /// The TOML to merge into the config file.
    pub snippet: String,
    pub candidates: usize,
    pub rounds: usize,
    pub stopped_early: bool,
    /// Wall time of the baseline, the search and the runs after it.
    pub search_seconds: f64,
    #[serde(skip)]
    runs: Vec<Run>,
}

/// The TOML that sets the changed knobs of scaler `name`, in the config
/// file's own shape: merge it into the file (each key replaces the one of
/// the same name in that scaler).
pub fn snippet(name: &str, changes: &[(Knob, f64)]) -> String {
    let name = serde_json::to_string(name).unwrap_or_default();
    let mut out = format!("[[scaler]]\nname = {name}\n");
    for (k, v) in changes {
        if let Some(key) = k.key().strip_prefix("poll_interval") {
            out.push_str(&format!("poll_interval{key} = {}\n", k.toml_value(*v)));
        }
    }
    let mut section = |header: &str, prefix: &str| {
        let lines: Vec<String> = changes
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.key().strip_prefix(prefix)?;
                (!rest.contains('.')).then(|| format!("{rest} = {}", k.toml_value(*v)))
            })
            .collect();
        if !lines.is_empty() {
            out.push_str(&format!("\n[{header}]\n{}\n", lines.join("\n")));
        }
    };
    section("scaler.policy", "policy.");
    section("scaler.policy.throughput", "policy.throughput.");
    section("scaler.policy.scale_down", "policy.scale_down.");
    out
}

fn scaler_at(base: &ScalerConfig, space: &Space, p: &[f64]) -> ScalerConfig {
    let mut s = base.clone();
    for ((k, _), v) in space.knobs.iter().zip(p) {
        k.set(&mut s, *v);
    }
    s
}

fn simulate_at(
    scenario: &mut Scenario,
    s: &ScalerConfig,
    default_poll: Duration,
    name: &str,
) -> Run {
    // The first replicas are min_replicas, a knob of the search.
    scenario.initial_replicas = s.policy.min_replicas;
    let mut q = QscalePolicy::new(s, s.poll_interval.unwrap_or(default_poll))
        .with_seed(scenario.workers.seed);
    run(scenario, &mut q, name)
}

/// Load, simulate the start and the HPA, search, explain.
/// `progress` is called after each candidate with (candidates, best so far).
pub fn tune(
    args: &TuneArgs,
    progress: &mut dyn FnMut(usize, &Metrics),
) -> Result<Tuned, TuneError> {
    tune_with(args, None, progress)
}

/// [`tune`] on a trace already read (`preloaded`, from `--trace
/// history:...`), when given.
pub fn tune_with(
    args: &TuneArgs,
    preloaded: Option<Trace>,
    progress: &mut dyn FnMut(usize, &Metrics),
) -> Result<Tuned, TuneError> {
    if args.budget_seconds == 0 {
        return Err(TuneError::Flag {
            flag: "--budget-seconds",
            message: "must be at least 1",
        });
    }
    let cfg = Config::load(&args.config).map_err(SimulateError::from)?;
    let start = pick_scaler(&cfg, args.scaler.as_deref(), &args.config)?.clone();
    let (trace, duration) = super::load_trace(&args.trace, args.duration, preloaded)?;
    let sim_args = SimulateArgs {
        config: Some(args.config.clone()),
        scaler: None,
        trace: Some(args.trace.clone()),
        duration,
        compare: None,
        output: OutputFormat::Text,
        chart: None,
        seconds_per_message: args.seconds_per_message,
        startup_delay: args.startup_delay,
        pickup_interval: None,
        jitter: None,
        seed: args.seed,
        objective: None,
        hpa_messages_per_replica: None,
        generate_trace: None,
        resolution: Duration::from_secs(1),
    };
    let mut scenario = scenario_for(&start, trace, duration, &sim_args)?;
    // The budget covers the whole command: the baseline, the search and
    // the runs after it.
    let started = Instant::now();
    let budget = Duration::from_secs(args.budget_seconds);
    let hpa_run = run(
        &scenario,
        &mut Hpa::new(hpa_params_for(&start, None)?),
        "hpa",
    );
    let goal = Goal {
        max_seconds_over: args.max_seconds_over,
        max_actions: args.max_actions.unwrap_or_else(|| {
            (hpa_run.metrics.scale_actions as f64 * args.action_budget.0).floor() as u64
        }),
    };

    let default_poll = cfg.defaults.poll_interval;
    let mut knobs = Vec::new();
    let mut origin = Vec::new();
    for k in Knob::ALL {
        if let Some(v) = k.get(&start, default_poll) {
            knobs.push((k, k.values(&start, v)));
            origin.push(v);
        }
    }
    let space = Space { knobs };
    // The start re-expressed in the space: the same policy, every knob
    // explicit (so the default poll interval is written into it).
    let base = scaler_at(&start, &space, &origin);

    let chart_runs = if args.chart.is_some() { 2 } else { 0 };
    let mut eval = |p: &[f64]| {
        simulate_at(
            &mut scenario,
            &scaler_at(&base, &space, p),
            default_poll,
            "",
        )
        .metrics
    };
    let mut memo = Memo::new(&mut eval);
    let search_started = Instant::now();
    let found = search(&space, &origin, &goal, &mut memo, &mut |n, best, best_m| {
        progress(n, best_m);
        // Stop while there is still time for the next candidate and the
        // runs after the search: one per changed knob (it put back) and the
        // chart's two. A run cannot be interrupted, so this is an estimate.
        let per_run = search_started.elapsed() / n.max(1) as u32;
        let changed = best
            .iter()
            .zip(&origin)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        let after = per_run * (1 + changed + chart_runs) as u32;
        started.elapsed() + after >= budget
    });
    let current_m = memo.get(&origin);
    if !goal.met_by(&found.metrics) {
        return Err(TuneError::Infeasible {
            objective: humantime::format_duration(Duration::from_secs_f64(
                scenario.objective.round(),
            ))
            .to_string(),
            best_over: found.metrics.seconds_over_objective,
            best_actions: found.metrics.scale_actions,
            max_over: goal.max_seconds_over,
            max_actions: goal.max_actions,
        });
    }
    let mut changes = Vec::new();
    for (i, (k, _)) in space.knobs.iter().enumerate() {
        if found.best[i].to_bits() == origin[i].to_bits() {
            continue;
        }
        let mut back = found.best.clone();
        back[i] = origin[i];
        let reverted = memo.get(&back);
        changes.push(Change {
            knob: *k,
            key: k.key(),
            from: origin[i],
            to: found.best[i],
            replica_seconds_saved: reverted.replica_seconds as i64
                - found.metrics.replica_seconds as i64,
            reverted,
        });
    }
    let candidates = memo.len();
    drop(memo);
    // Only the chart needs the runs' series: without it the table is
    // drawn from the metrics the search already has.
    let runs = if args.chart.is_some() {
        vec![
            simulate_at(&mut scenario, &base, default_poll, "current"),
            simulate_at(
                &mut scenario,
                &scaler_at(&base, &space, &found.best),
                default_poll,
                "proposal",
            ),
            hpa_run,
        ]
    } else {
        let bare = |name: &str, metrics: &Metrics| Run {
            name: name.to_string(),
            metrics: metrics.clone(),
            series: report::Series::default(),
        };
        vec![
            bare("current", &current_m),
            bare("proposal", &found.metrics),
            hpa_run,
        ]
    };
    let pairs: Vec<(Knob, f64)> = changes.iter().map(|c| (c.knob, c.to)).collect();
    let search_seconds = started.elapsed().as_secs_f64();
    Ok(Tuned {
        scaler: start.name.clone(),
        trace: scenario.trace.label.clone(),
        objective_seconds: scenario.objective,
        goal,
        current: current_m,
        proposal: found.metrics,
        hpa: runs[2].metrics.clone(),
        snippet: snippet(&start.name, &pairs),
        changes,
        candidates,
        rounds: found.rounds,
        stopped_early: found.stopped_early,
        search_seconds,
        runs,
    })
}

fn show(k: Knob, v: f64) -> String {
    k.toml_value(v).trim_matches('"').to_string()
}

/// The text report: the rule, the table, what each change bought, the snippet.
pub fn text_report(t: &Tuned) -> String {
    let objective =
        humantime::format_duration(Duration::from_secs_f64(t.objective_seconds.round()));
    let mut out = format!(
        "scaler {}, trace {}: at most {} s over {objective}, at most {} scale actions (HPA: {})\n",
        t.scaler, t.trace, t.goal.max_seconds_over, t.goal.max_actions, t.hpa.scale_actions
    );
    out.push_str(&format!(
        "searched {} policies in {} round(s), {:.1} s{}\n",
        t.candidates,
        t.rounds,
        t.search_seconds,
        if t.stopped_early {
            "; stopped by --budget-seconds: the best found so far"
        } else {
            ""
        }
    ));
    let runs: Vec<&Run> = t.runs.iter().collect();
    out.push_str(&report::table(&runs, &objective.to_string()));
    if t.changes.is_empty() {
        out.push_str("\nthe current policy is already the cheapest one tried that meets the objective; nothing to change\n");
        return out;
    }
    out.push_str("\nwhat each change bought (the proposal with that knob put back):\n");
    for c in &t.changes {
        out.push_str(&format!(
            "  {} {} -> {}: {} replica-seconds {} (put back: {} replica-seconds, {} s over, {} actions)\n",
            c.key,
            show(c.knob, c.from),
            show(c.knob, c.to),
            c.replica_seconds_saved.unsigned_abs(),
            if c.replica_seconds_saved >= 0 {
                "saved"
            } else {
                "spent"
            },
            c.reverted.replica_seconds,
            c.reverted.seconds_over_objective,
            c.reverted.scale_actions
        ));
    }
    out.push_str("\n# merge into the config file: each key replaces the one of the same name in this scaler\n");
    out.push_str(&t.snippet);
    out
}

/// Run `qscale tune`, printing to `out`; a progress line goes to stderr
/// only when it is a terminal.
pub fn execute(args: &TuneArgs, out: &mut dyn Write) -> Result<(), TuneError> {
    execute_with(args, None, out)
}

/// [`execute`] on a trace already read (`preloaded`), when given.
pub fn execute_with(
    args: &TuneArgs,
    preloaded: Option<Trace>,
    out: &mut dyn Write,
) -> Result<(), TuneError> {
    let terminal = std::io::stderr().is_terminal();
    // The first candidate is shown at once, then at most five lines a
    // second: a terminal redraws, it need not see every candidate.
    let mut last: Option<Instant> = None;
    let mut progress = |n: usize, best: &Metrics| {
        if terminal && last.is_none_or(|l| l.elapsed() >= Duration::from_millis(200)) {
            last = Some(Instant::now());
            eprint!(
                "\rtune: {n} policies simulated, best {} replica-seconds, {} s over   ",
                best.replica_seconds, best.seconds_over_objective
            );
        }
    };
    let result = tune_with(args, preloaded, &mut progress);
    if terminal {
        eprint!("\r{:70}\r", "");
    }
    let t = result?;
    let write_err = |path: PathBuf| {
        move |e: std::io::Error| {
            TuneError::Simulate(SimulateError::Write {
                path,
                reason: e.to_string(),
            })
        }
    };
    if let Some(path) = &args.chart {
        let runs: Vec<&Run> = t.runs.iter().collect();
        let title = format!("qscale tune: {} on {}", t.scaler, t.trace);
        let svg =
            chart::render_svg(&runs, &title, t.objective_seconds).map_err(SimulateError::from)?;
        std::fs::write(path, svg).map_err(write_err(path.clone()))?;
    }
    let text = match args.output {
        OutputFormat::Text => {
            let mut s = text_report(&t);
            if let Some(path) = &args.chart {
                s.push_str(&format!("# chart written to {}\n", path.display()));
            }
            s
        }
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(&t).unwrap_or_default();
            s.push('\n');
            s
        }
    };
    out.write_all(text.as_bytes())
        .map_err(write_err(PathBuf::from("<stdout>")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(replica_seconds: u64, over: u64, actions: u64) -> Metrics {
        Metrics {
            age_p50_seconds: 0.0,
            age_p95_seconds: 0.0,
            age_max_seconds: 0.0,
            seconds_over_objective: over,
            replica_seconds,
            scale_actions: actions,
            peak_backlog: 0,
        }
    }

    const GOAL: Goal = Goal {
        max_seconds_over: 0,
        max_actions: 10,
    };

    fn space() -> Space {
        Space {
            knobs: vec![
                (Knob::Tolerance, vec![0.0, 0.1, 0.2, 0.3]),
                (Knob::PollInterval, vec![5.0, 10.0, 15.0, 30.0]),
            ],
        }
    }

    #[test]
    fn a_run_that_meets_the_goal_beats_any_that_misses_it_however_cheap() {
        assert!(GOAL.better(&metrics(1000, 0, 10), &metrics(10, 1, 0)));
        assert!(GOAL.better(&metrics(1000, 0, 5), &metrics(10, 0, 11)));
        assert!(GOAL.better(&metrics(999, 0, 10), &metrics(1000, 0, 0)));
        assert!(!GOAL.better(&metrics(1000, 0, 1), &metrics(1000, 0, 1)));
    }

    #[test]
    fn among_misses_the_one_closer_to_the_objective_wins() {
        assert!(GOAL.better(&metrics(5000, 3, 50), &metrics(10, 4, 0)));
        assert!(GOAL.better(&metrics(5000, 3, 20), &metrics(10, 3, 21)));
    }

    #[test]
    fn coordinate_descent_finds_the_cheapest_feasible_point_of_a_separable_cost() {
        // Cost grows away from tolerance 0.1 and poll 15 s; every point with
        // poll 5 s breaks the action budget.
        let mut calls = 0;
        let mut eval = |p: &[f64]| {
            calls += 1;
            let rs = 1000.0 + 100.0 * (p[0] - 0.1).abs() * 10.0 + (p[1] - 15.0).abs();
            metrics(rs as u64, 0, if p[1] == 5.0 { 20 } else { 3 })
        };
        let mut memo = Memo::new(&mut eval);
        let found = search(&space(), &[0.3, 5.0], &GOAL, &mut memo, &mut |_, _, _| {
            false
        });
        assert_eq!(found.best, vec![0.1, 15.0]);
        assert_eq!(found.metrics.replica_seconds, 1000);
        assert!(!found.stopped_early);
        // Round one: the start, 3 tolerances, 3 polls; round two: the 3
        // other tolerances at poll 15 s are new, the 3 polls are not.
        assert_eq!(found.evaluated, 10);
        assert_eq!(found.rounds, 2);
        drop(memo);
        assert_eq!(calls, 10, "a candidate is never simulated twice");
    }

    #[test]
    fn the_search_is_deterministic_and_keeps_the_earlier_point_on_ties() {
        let mut eval = |_: &[f64]| metrics(100, 0, 1);
        let mut memo = Memo::new(&mut eval);
        let a = search(&space(), &[0.2, 15.0], &GOAL, &mut memo, &mut |_, _, _| {
            false
        });
        assert_eq!(a.best, vec![0.2, 15.0], "a tie never moves the start");
        assert_eq!(a.rounds, 1);
    }

    #[test]
    fn the_budget_stops_the_search_with_the_best_so_far() {
        let mut eval = |p: &[f64]| metrics((p[0] * 100.0) as u64 + p[1] as u64, 0, 0);
        let mut memo = Memo::new(&mut eval);
        let found = search(&space(), &[0.3, 30.0], &GOAL, &mut memo, &mut |n, _, _| {
            n >= 3
        });
        assert!(found.stopped_early);
        assert_eq!(found.evaluated, 3);
        assert_eq!(found.best, vec![0.0, 30.0]);
    }

    #[test]
    fn an_unreachable_goal_returns_the_point_closest_to_it() {
        let mut eval = |p: &[f64]| metrics(10, (p[1] / 5.0) as u64, 0);
        let mut memo = Memo::new(&mut eval);
        let found = search(&space(), &[0.0, 30.0], &GOAL, &mut memo, &mut |_, _, _| {
            false
        });
        assert!(!GOAL.met_by(&found.metrics));
        assert_eq!(found.best[1], 5.0);
        assert_eq!(found.metrics.seconds_over_objective, 1);
    }

    #[test]
    fn the_snippet_writes_each_knob_in_its_own_table_with_units() {
        let s = snippet(
            "work\"ers",
            &[
                (Knob::MessagesPerReplica, 20.0),
                (Knob::TargetUtilization, 0.8),
                (Knob::ScaleDownStabilization, 120.0),
                (Knob::PollInterval, 10.0),
                (Knob::MinReplicas, 2.0),
            ],
        );
        assert_eq!(
            s,
            "[[scaler]]\nname = \"work\\\"ers\"\npoll_interval = \"10s\"\n\
             \n[scaler.policy]\nmessages_per_replica = 20\nmin_replicas = 2\n\
             \n[scaler.policy.throughput]\ntarget_utilization = 0.8\n\
             \n[scaler.policy.scale_down]\nstabilization = \"2m\"\n"
        );
    }

    #[test]
    fn the_action_budget_is_written_as_a_multiple_of_the_hpa() {
        assert_eq!(parse_action_budget("2x-hpa"), Ok(HpaMultiple(2.0)));
        assert_eq!(parse_action_budget("1.5x-hpa"), Ok(HpaMultiple(1.5)));
        for bad in ["2", "0x-hpa", "-1x-hpa", "NaNx-hpa", "twox-hpa"] {
            assert!(parse_action_budget(bad).is_err(), "{bad}");
        }
    }
}
