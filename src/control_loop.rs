//! The control loop: one task per scaler, supervised by the [`Daemon`].
//!
//! Each scaler polls on its own jittered interval: sample the source, read
//! the target, run the pure policy, and, when the number changes (and the
//! scaler is neither paused nor in dry run, and this process leads), write
//! it in the *same* poll: no second loop as with KEDA feeding an HPA.
//! Every phase is bounded by a timeout, and scalers share nothing that can
//! block, so a slow or failing scaler never delays another. A scaler whose
//! workers drain several queues samples them at the same time, each within
//! the sample timeout, so a slow or failing queue delays neither the poll
//! nor the other queues; the policy sees each queue's sample or its failure.
//!
//! The daemon owns the tasks. A reload diffs the new config against the
//! running one: unchanged scalers keep running untouched; changed ones are
//! restarted with their policy state (stabilization windows, learned rates)
//! carried over; removed ones are stopped and their metrics dropped.
//! Shutdown stops new polls, lets an in-flight write finish (bounded), and
//! returns.
//!
//! Policy time (the poll interval, and the `now` every decision and every
//! recorded scale event gets) is read from the daemon's [`Clock`], which
//! `--time-scale` makes run faster for benchmarks; phase timeouts, metric
//! durations and log throttling stay on the wall clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clients::Clients;
use crate::clock::Clock;
use crate::config::{Config, DefaultsConfig, ScalerConfig};
use crate::contract::{Capabilities, QueueSource, Sample, SourceError};
use crate::contract::{Replicas, ScaleTarget, TargetError};
use crate::leader::Leadership;
use crate::metrics::{Metrics, ScaleDirection, ScalerCell};
use crate::policy::{
    Combine, Decision, Policy, PolicyState, QueueSample, Reason, SettingWarning, Step, decide_many,
    queue_setting_warnings,
};
use crate::sources::SourceConfig;
use crate::status::{
    ActionStatus, ErrorStatus, QueueStatus, ScalerStatus, StatusBoard, StatusSlot, unix,
};
use crate::timeline::{self, Signal};

/// How often a scaler re-checks for other controllers on its target.
const CONFLICT_CHECK_EVERY: Duration = Duration::from_secs(600);
/// A repeated identical error is logged at most this often.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(60);
/// A queue-settings warning that comes back (a learned processing time
/// hovering around the visibility timeout) is logged again at most this
/// often; one that stays is logged once.
const SETTING_LOG_EVERY: Duration = Duration::from_secs(3600);

/// What every scaler task shares.
#[derive(Clone)]
pub struct Runtime {
    pub shared: Clients,
    pub metrics: Arc<Metrics>,
    pub status: Arc<StatusBoard>,
    pub leadership: Leadership,
    /// `--dry-run` on the command line: no scaler writes.
    pub dry_run: bool,
}

impl Runtime {
    pub fn new(shared: Clients, dry_run: bool) -> Runtime {
        Runtime {
            shared,
            metrics: Arc::new(Metrics::new()),
            status: Arc::new(StatusBoard::new()),
            leadership: Leadership::always(),
            dry_run,
        }
    }
}

/// A phase failure, normalized for metrics, status and logs.
#[derive(Debug, Clone)]
struct PhaseError {
    phase: &'static str,
    label: &'static str,
    message: String,
}

impl PhaseError {
    fn source(e: &SourceError) -> PhaseError {
        PhaseError {
            phase: "sample",
            label: e.metric_label(),
            message: e.to_string(),
        }
    }
    fn target(phase: &'static str, e: &TargetError) -> PhaseError {
        PhaseError {
            phase,
            label: e.metric_label(),
            message: e.to_string(),
        }
    }
}

/// Logs an error when it is new, and a repeated one at most once a minute,
/// so a dead endpoint does not flood the log.
#[derive(Default)]
struct ErrorLog {
    last: Option<(String, std::time::Instant, u64)>,
}

impl ErrorLog {
    fn error(&mut self, scaler: &str, e: &PhaseError) {
        let key = format!("{}/{}", e.phase, e.message);
        let now = std::time::Instant::now();
        match &mut self.last {
            Some((k, at, repeats)) if *k == key => {
                *repeats += 1;
                if now.duration_since(*at) >= ERROR_LOG_EVERY {
                    tracing::warn!(
                        scaler,
                        phase = e.phase,
                        error = e.label,
                        repeated = *repeats,
                        "{}",
                        e.message
                    );
                    *at = now;
                    *repeats = 0;
                }
            }
            _ => {
                tracing::warn!(scaler, phase = e.phase, error = e.label, "{}", e.message);
                self.last = Some((key, now, 0));
            }
        }
    }

    fn ok(&mut self, scaler: &str) {
        if let Some((k, _, _)) = self.last.take() {
            tracing::info!(scaler, previous = %k, "recovered");
        }
    }
}

/// Logs each kind of queue-settings warning when it appears, not every
/// poll: the same warning stays in /status for as long as it holds.
#[derive(Default)]
struct SettingLog {
    /// Kinds warned about at the last poll.
    active: Vec<&'static str>,
    /// When each kind was last logged (wall clock).
    logged: HashMap<&'static str, std::time::Instant>,
}

impl SettingLog {
    fn poll(&mut self, scaler: &str, warnings: &[crate::policy::SettingWarning]) {
        let now = std::time::Instant::now();
        for w in warnings {
            let recent = self
                .logged
                .get(w.kind)
                .is_some_and(|t| now.duration_since(*t) < SETTING_LOG_EVERY);
            if !self.active.contains(&w.kind) && !recent {
                tracing::warn!(scaler, setting = w.kind, "{}", w.message);
                self.logged.insert(w.kind, now);
            }
        }
        self.active = warnings.iter().map(|w| w.kind).collect();
    }
}

/// The outcome of the read-only half of a poll.
pub struct Prepared {
    /// What the scaler saw: its queue's sample, or with several queues
    /// their totals (the oldest age among them); an error only when every
    /// queue failed.
    pub sample: Result<Sample, SourceError>,
    /// Each queue's own sample, in config order.
    pub samples: Vec<Result<Sample, SourceError>>,
    pub current: Result<Replicas, TargetError>,
    pub paused_by: Option<&'static str>,
    pub decision: Option<Decision>,
    started: Instant,
}

/// One queue of a scaler: its source, built on first use, and the policy
/// its signals read.
struct QueueRuntime {
    /// The `sources` entry's name; empty for the single `source`.
    name: String,
    /// Its source's kind; the source's config stays in the scaler's
    /// (`ScalerConfig::queue_source`), not copied here.
    kind: &'static str,
    /// The scaler's policy with this queue's own settings in place; `None`
    /// for a scaler's only queue, which is decided by the scaler's policy
    /// (boxed: a scaler with one queue pays a pointer, not a policy).
    policy: Option<Box<Policy>>,
    source: Option<Arc<dyn QueueSource>>,
    /// With several queues, each logs its own errors and settings warnings
    /// (one queue uses the scaler's).
    errors: ErrorLog,
    settings: SettingLog,
}

/// One scaler: its config, policy, state, and lazily built clients.
pub struct Scaler {
    /// Shared with the daemon's record of what runs (`Running::key`).
    cfg: Arc<ScalerConfig>,
    defaults: DefaultsConfig,
    policy: Policy,
    state: Arc<Mutex<PolicyState>>,
    /// Shared by every scaler of the daemon.
    rt: Arc<Runtime>,
    /// This scaler's metric values, found once.
    cell: ScalerCell,
    /// This scaler's status and timeline, found once.
    slot: StatusSlot,
    queues: Vec<QueueRuntime>,
    combine: Combine,
    target: Option<Arc<dyn ScaleTarget>>,
    errors: ErrorLog,
    settings: SettingLog,
    next_conflict_check: Option<Instant>,
}

impl Scaler {
    /// A scaler whose source and target are built on first use (and rebuilt
    /// on the next poll if building failed).
    pub fn new(
        cfg: ScalerConfig,
        defaults: DefaultsConfig,
        state: Arc<Mutex<PolicyState>>,
        rt: impl Into<Arc<Runtime>>,
    ) -> Scaler {
        let rt: Arc<Runtime> = rt.into();
        let multi = cfg.is_multi_queue();
        let queues: Vec<QueueRuntime> = cfg
            .queues()
            .into_iter()
            .map(|q| QueueRuntime {
                name: q.name.to_string(),
                kind: q.source.kind(),
                policy: multi.then(|| Box::new(Policy::new(&q.policy, &q.source.capabilities()))),
                source: None,
                errors: ErrorLog::default(),
                settings: SettingLog::default(),
            })
            .collect();
        // Steps 2 to 8 read the scaler's policy; only the signals read the
        // source's capabilities, and they read each queue's.
        let caps = cfg
            .queue_source(0)
            .map_or(Capabilities::none(), SourceConfig::capabilities);
        let policy = Policy::new(&cfg.policy, &caps);
        let mut st = ScalerStatus::new(
            &cfg.name,
            cfg.source_kind(),
            cfg.target.kind(),
            cfg.poll_interval(&defaults),
        );
        st.dry_run = rt.dry_run || cfg.target.dry_run();
        st.paused = cfg.policy.paused;
        st.paused_by = cfg.policy.paused.then_some("config");
        if queues.len() > 1 {
            st.queues = queues
                .iter()
                .map(|q| QueueStatus {
                    name: q.name.clone(),
                    source: q.kind,
                    decision: None,
                    sample: None,
                    error: None,
                })
                .collect();
        }
        let slot = rt.status.put(st);
        let mut kinds = queues.iter().map(|q| q.kind);
        rt.metrics
            .init_scaler(&cfg.name, kinds.next().unwrap_or("none"), cfg.target.kind());
        for k in kinds {
            rt.metrics.init_source_kind(&cfg.name, k);
        }
        let cell = rt.metrics.scaler_cell(&cfg.name);
        Scaler {
            cell,
            slot,
            combine: cfg.combine(),
            cfg: Arc::new(cfg),
            defaults,
            policy,
            state,
            rt,
            queues,
            target: None,
            errors: ErrorLog::default(),
            settings: SettingLog::default(),
            next_conflict_check: None,
        }
    }

    /// Use these clients instead of building them from the config (tests,
    /// and callers that already hold them); `source` serves the first queue.
    pub fn with_clients(
        mut self,
        source: Arc<dyn QueueSource>,
        target: Arc<dyn ScaleTarget>,
    ) -> Scaler {
        if let Some(q) = self.queues.first_mut() {
            q.source = Some(source);
        }
        self.target = Some(target);
        self
    }

    /// Use these clients for the queues, in config order (tests of a
    /// scaler with several queues); extra sources are ignored.
    pub fn with_queue_clients(
        mut self,
        sources: Vec<Arc<dyn QueueSource>>,
        target: Arc<dyn ScaleTarget>,
    ) -> Scaler {
        for (q, s) in self.queues.iter_mut().zip(sources) {
            q.source = Some(s);
        }
        self.target = Some(target);
        self
    }

    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    fn poll_interval(&self) -> Duration {
        self.cfg.poll_interval(&self.defaults)
    }

    /// The policy to decide with: the scaler's own, or a paused copy of it
    /// while paused (made only then: a second copy in every scaler would
    /// cost hundreds of bytes for a state that is rare).
    fn policy_for(&self, paused: bool) -> std::borrow::Cow<'_, Policy> {
        if paused {
            std::borrow::Cow::Owned(Policy {
                paused: true,
                ..self.policy.clone()
            })
        } else {
            std::borrow::Cow::Borrowed(&self.policy)
        }
    }

    fn dry_run(&self) -> bool {
        self.rt.dry_run || self.cfg.target.dry_run()
    }

    /// Queue `i`'s source, built on first use (and again after a failed
    /// build: bad credentials or an unreachable endpoint heal by themselves).
    async fn source(&mut self, i: usize) -> Result<Arc<dyn QueueSource>, SourceError> {
        let timeout = self.defaults.sample_timeout;
        let (Some(q), Some(config)) = (self.queues.get_mut(i), self.cfg.queue_source(i)) else {
            return Err(SourceError::Config("no such queue".into()));
        };
        if let Some(s) = &q.source {
            return Ok(s.clone());
        }
        let s = config.build(&self.rt.shared, timeout).await?;
        q.source = Some(s.clone());
        Ok(s)
    }

    /// Sample every queue, several at once, each bounded by the sample
    /// timeout; a queue whose source cannot be built fails alone.
    async fn sample_all(&mut self) -> Vec<Result<Sample, SourceError>> {
        let timeout = self.defaults.sample_timeout;
        let clock = self.rt.shared.clock;
        let mut built = Vec::with_capacity(self.queues.len());
        for i in 0..self.queues.len() {
            built.push(self.source(i).await);
        }
        if let [one] = built.as_slice() {
            return vec![match one {
                Ok(src) => take_sample(src.clone(), timeout, clock).await,
                Err(e) => Err(e.clone()),
            }];
        }
        let mut results: Vec<Option<Result<Sample, SourceError>>> = vec![None; built.len()];
        let mut set = tokio::task::JoinSet::new();
        for (i, b) in built.into_iter().enumerate() {
            match b {
                Ok(src) => {
                    set.spawn(async move { (i, take_sample(src, timeout, clock).await) });
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        while let Some(done) = set.join_next().await {
            if let Ok((i, s)) = done {
                results[i] = Some(s);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(SourceError::Unavailable("the sampling task ended".into())))
            })
            .collect()
    }

    /// Run the policy on this poll's samples.
    fn decide_on(
        &self,
        policy: &Policy,
        state: &mut PolicyState,
        samples: &[Result<Sample, SourceError>],
        current: Replicas,
        now: std::time::Instant,
    ) -> Decision {
        let single = self.queues.len() == 1;
        let queues: Vec<QueueSample> = self
            .queues
            .iter()
            .zip(samples)
            .map(|(q, s)| QueueSample {
                name: &q.name,
                // One queue: its policy is the scaler's (paused or not),
                // exactly as `decide` runs it.
                policy: match &q.policy {
                    Some(own) if !single => own.as_ref(),
                    _ => policy,
                },
                sample: s.as_ref().ok(),
            })
            .collect();
        decide_many(policy, state, &queues, self.combine, current, now)
    }

    async fn target(&mut self) -> Result<Arc<dyn ScaleTarget>, TargetError> {
        if let Some(t) = &self.target {
            return Ok(t.clone());
        }
        let t = self
            .cfg
            .target
            .build(&self.rt.shared, self.defaults.actuate_timeout)
            .await?;
        self.target = Some(t.clone());
        Ok(t)
    }

    async fn read_current(&mut self) -> Result<(Replicas, bool), TargetError> {
        let timeout = self.defaults.actuate_timeout;
        let target = self.target().await?;
        let current = bounded(timeout, target.current(), TargetError::Timeout(timeout)).await?;
        // Failing to read the pause switch must not stop scaling: the
        // annotation is an extra, and its error is reported like any other.
        let paused = match bounded(timeout, target.paused(), TargetError::Timeout(timeout)).await {
            Ok(p) => p,
            Err(e) => {
                let _ = self.target_error("target", &e);
                false
            }
        };
        Ok((current, paused))
    }

    /// Sample, read the target, decide. Writes nothing; safe to cancel.
    pub async fn prepare(&mut self) -> Prepared {
        let started = Instant::now();
        let clock = self.rt.shared.clock;
        let samples = self.sample_all().await;
        let sample = pool_sample(&self.queues, &samples);
        self.observe("sample", started.elapsed());
        let read = self.read_current().await;
        self.check_conflicts().await;
        let (current, paused_by) = match read {
            Ok((c, annotation)) => {
                let by = if self.cfg.policy.paused {
                    Some("config")
                } else if annotation {
                    Some("annotation")
                } else {
                    None
                };
                (Ok(c), by)
            }
            Err(e) => (Err(e), None),
        };
        let decision = match &current {
            Ok(c) => {
                let t = Instant::now();
                let policy = self.policy_for(paused_by.is_some());
                let state = self.state.clone();
                let mut state = state.lock().await;
                let now = clock.now().into_std();
                let d = self.decide_on(&policy, &mut state, &samples, *c, now);
                drop(state);
                self.observe("decide", t.elapsed());
                // Every poll's reasoning, for `RUST_LOG=qscale=debug`; the
                // changes themselves are logged at info when applied.
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let reasons: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
                    tracing::debug!(
                        scaler = %self.cfg.name,
                        current = c.desired,
                        ready = ?c.ready,
                        replicas = d.replicas,
                        reasons = %reasons.join("; "),
                        "decided"
                    );
                }
                Some(d)
            }
            Err(_) => {
                let now = clock.now().into_std();
                self.state.lock().await.record_blind_poll(now);
                None
            }
        };
        Prepared {
            sample,
            samples,
            current,
            paused_by,
            decision,
            started,
        }
    }

    /// Act on a prepared poll and record everything it saw.
    pub async fn finish(&mut self, p: Prepared) {
        let leader = self.rt.leadership.may_actuate(&self.cfg.name);
        let mut decision = p.decision;
        let current = p.current.clone().ok();
        let mut action = None;
        let mut act_error = None;
        if let (Some(d), Some(cur)) = (&decision, current)
            && d.changes()
            && !d.paused
            && !self.dry_run()
            && leader
        {
            let t = Instant::now();
            match self
                .actuate(d, cur, &p.samples, p.paused_by.is_some())
                .await
            {
                Ok(Some((d2, _))) => {
                    action = Some(ActionStatus {
                        from: d2.current,
                        to: d2.replicas,
                        at: unix(SystemTime::now()),
                        reasons: d2.reasons.clone(),
                    });
                    decision = Some(d2);
                }
                Ok(None) => {}
                Err(e) => act_error = Some(self.target_error("actuate", &e)),
            }
            self.observe("actuate", t.elapsed());
        }
        self.record(
            &p.sample,
            &p.samples,
            &p.current,
            decision,
            p.paused_by,
            leader,
            action,
            act_error,
            p.started,
        );
    }

    /// Write the decision. A conflict (someone changed the object between
    /// our read and our write) re-reads the target and re-decides on the same
    /// sample once; it never blindly overwrites. Returns the decision and the
    /// target state it was applied to, or `None` when nothing needed writing.
    async fn actuate(
        &mut self,
        d: &Decision,
        cur: Replicas,
        samples: &[Result<Sample, SourceError>],
        paused: bool,
    ) -> Result<Option<(Decision, Replicas)>, TargetError> {
        let timeout = self.defaults.actuate_timeout;
        let target = self.target().await?;
        match bounded(
            timeout,
            target.set_replicas(d.replicas),
            TargetError::Timeout(timeout),
        )
        .await
        {
            Ok(()) => {
                self.applied(cur.desired, d);
                Ok(Some((d.clone(), cur)))
            }
            Err(TargetError::Conflict(msg)) => {
                tracing::info!(scaler = %self.cfg.name, "write conflict ({msg}); re-reading and re-deciding");
                self.rt
                    .metrics
                    .target_errors
                    .with_label_values(&[&self.cfg.name, self.cfg.target.kind(), "conflict"])
                    .inc();
                let fresh =
                    bounded(timeout, target.current(), TargetError::Timeout(timeout)).await?;
                let policy = self.policy_for(paused);
                let state = self.state.clone();
                let mut state = state.lock().await;
                let now = self.rt.shared.clock.now().into_std();
                let d2 = self.decide_on(&policy, &mut state, samples, fresh, now);
                drop(state);
                if !d2.changes() || d2.paused {
                    return Ok(None);
                }
                bounded(
                    timeout,
                    target.set_replicas(d2.replicas),
                    TargetError::Timeout(timeout),
                )
                .await?;
                self.applied(fresh.desired, &d2);
                Ok(Some((d2, fresh)))
            }
            Err(e) => Err(e),
        }
    }

    fn applied(&mut self, from: u32, d: &Decision) {
        let now = self.rt.shared.clock.now().into_std();
        if let Ok(mut st) = self.state.try_lock() {
            st.record_scale(from, d.replicas, now);
        }
        let direction = ScaleDirection::of(from, d.replicas).label();
        self.rt
            .metrics
            .scale_operations
            .inc_in(&self.cell, direction);
        let reasons: Vec<String> = d.reasons.iter().map(|r| r.to_string()).collect();
        tracing::info!(
            scaler = %self.cfg.name,
            from,
            to = d.replicas,
            reasons = %reasons.join("; "),
            "scaled {direction}"
        );
    }

    async fn check_conflicts(&mut self) {
        let now = Instant::now();
        if self.next_conflict_check.is_some_and(|t| now < t) {
            return;
        }
        let Some(target) = self.target.clone() else {
            return;
        };
        self.next_conflict_check = Some(now + CONFLICT_CHECK_EVERY);
        let timeout = self.defaults.actuate_timeout;
        match bounded(timeout, target.conflicts(), TargetError::Timeout(timeout)).await {
            Ok(warnings) => {
                for w in &warnings {
                    tracing::warn!(scaler = %self.cfg.name, "{w}");
                }
                self.slot.update(|s| s.warnings = warnings);
            }
            Err(e) => {
                tracing::debug!(scaler = %self.cfg.name, error = %e, "could not check for other controllers");
            }
        }
    }

    fn observe(&self, phase: &str, d: Duration) {
        self.rt
            .metrics
            .poll_duration
            .observe_in(&self.cell, phase, d.as_secs_f64());
    }

    /// Count and log a target error; the caller puts it into the status.
    fn target_error(&mut self, phase: &'static str, e: &TargetError) -> PhaseError {
        let pe = PhaseError::target(phase, e);
        self.rt
            .metrics
            .target_errors
            .inc_in(&self.cell, self.cfg.target.kind(), pe.label);
        self.errors.error(&self.cfg.name, &pe);
        pe
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        sample: &Result<Sample, SourceError>,
        samples: &[Result<Sample, SourceError>],
        current: &Result<Replicas, TargetError>,
        owned_decision: Option<Decision>,
        paused_by: Option<&'static str>,
        leader: bool,
        action: Option<ActionStatus>,
        act_error: Option<PhaseError>,
        started: Instant,
    ) {
        // Read by reference until the status takes the reasons by value.
        let decision = owned_decision.as_ref();
        let m = &self.rt.metrics;
        let name = self.cfg.name.as_str();
        let multi = self.queues.len() > 1;
        let mut error = None;
        // With several queues, the first failing queue's error, for /status
        // (each queue logs its own).
        let mut queue_error = None;
        let cell = &self.cell;
        if let Ok(s) = sample {
            m.record_sample_in(cell, s);
        }
        for (q, s) in self.queues.iter_mut().zip(samples) {
            match s {
                Ok(_) if multi => q.errors.ok(name),
                Ok(_) => {}
                Err(e) => {
                    let mut pe = PhaseError::source(e);
                    m.source_errors.inc_in(cell, q.kind, pe.label);
                    if multi {
                        pe.message = format!("queue {}: {}", q.name, pe.message);
                        q.errors.error(name, &pe);
                        queue_error = queue_error.or(Some(pe));
                    } else {
                        error = Some(pe);
                    }
                }
            }
        }
        match current {
            Ok(c) => {
                m.replicas.set_in(cell, &["current"], i64::from(c.desired));
                m.replicas
                    .set_or_remove_in(cell, &["ready"], c.ready.map(i64::from));
            }
            Err(e) => {
                let pe = PhaseError::target("target", e);
                m.target_errors
                    .inc_in(cell, self.cfg.target.kind(), pe.label);
                error = error.or(Some(pe));
            }
        }
        if let Some(d) = decision {
            m.replicas.set_in(cell, &["desired"], i64::from(d.replicas));
            m.arrival_rate.set_or_remove_in(cell, &[], d.arrival_rate);
            m.dead_letter_rate
                .set_or_remove_in(cell, &[], d.dead_letter_rate);
            m.oldest_age_estimated.set_or_remove_in(
                cell,
                &[],
                d.oldest_age
                    .filter(|_| d.oldest_age_estimated)
                    .map(|a| a.as_secs_f64()),
            );
            m.fallback_active
                .set_in(cell, &[], i64::from(d.fallback_active));
            for q in &d.queues {
                m.record_queue(name, &q.name, q.backlog, q.replicas);
            }
        }
        m.paused.set_in(cell, &[], i64::from(paused_by.is_some()));
        let ok = sample.is_ok() && current.is_ok();
        let now_wall = SystemTime::now();
        if ok {
            m.last_success.set_in(cell, &[], unix(now_wall));
            if act_error.is_none() {
                self.errors.ok(name);
            }
        }
        if let Some(pe) = &error {
            self.errors.error(name, pe);
        }
        let error = error.or(queue_error).or(act_error);
        let consecutive = self
            .state
            .try_lock()
            .map(|s| s.consecutive_failures())
            .unwrap_or(0);
        let mut warnings_from_sample: Vec<String> =
            sample.as_ref().map(|s| s.notes.clone()).unwrap_or_default();
        // The queue's settings against the processing time, when both are
        // known; a failed poll keeps the last ones shown.
        let settings = if multi {
            decision.map(|d| {
                let mut all = Vec::new();
                for ((q, s), qd) in self.queues.iter_mut().zip(samples).zip(&d.queues) {
                    let Ok(s) = s else { continue };
                    let ws: Vec<SettingWarning> = queue_setting_warnings(
                        s.visibility_timeout,
                        s.max_receive_count,
                        qd.seconds_per_message,
                        qd.seconds_per_message_learned,
                    )
                    .into_iter()
                    .map(|w| SettingWarning {
                        kind: w.kind,
                        message: format!("{}: {}", q.name, w.message),
                    })
                    .collect();
                    q.settings.poll(name, &ws);
                    all.extend(ws);
                }
                all
            })
        } else {
            match (sample, decision) {
                (Ok(s), Some(d)) => Some(queue_setting_warnings(
                    s.visibility_timeout,
                    s.max_receive_count,
                    d.seconds_per_message,
                    d.seconds_per_message_learned,
                )),
                _ => None,
            }
        };
        if !multi && let Some(w) = &settings {
            self.settings.poll(name, w);
        }
        let queue_kinds: Vec<&'static str> = if multi {
            self.queues.iter().map(|q| q.kind).collect()
        } else {
            Vec::new()
        };
        let dry_run = self.dry_run();
        self.slot.record_poll(&timeline_poll(
            unix(now_wall),
            sample.as_ref().ok(),
            current.as_ref().ok(),
            decision,
            action.as_ref(),
            error.is_some(),
        ));
        let decided = decision.is_some();
        self.slot.update(|st| {
            st.last_poll = Some(unix(now_wall));
            st.leader = leader;
            st.dry_run = dry_run;
            st.paused = paused_by.is_some();
            st.paused_by = paused_by;
            if ok {
                st.last_success = Some(unix(now_wall));
                st.last_success_mono = Some(started.into_std());
                st.last_error = None;
            }
            if let Ok(s) = sample {
                st.sample = Some(s.clone());
            }
            if let Ok(c) = current {
                st.current = Some(*c);
            }
            if multi {
                for (i, qs) in st.queues.iter_mut().enumerate() {
                    if let Some(k) = queue_kinds.get(i) {
                        qs.source = k;
                    }
                    match samples.get(i) {
                        Some(Ok(s)) => {
                            qs.sample = Some(s.clone());
                            qs.error = None;
                        }
                        Some(Err(e)) => {
                            let pe = PhaseError::source(e);
                            qs.error = Some(ErrorStatus {
                                phase: pe.phase,
                                label: pe.label,
                                message: pe.message,
                                at: unix(now_wall),
                            });
                        }
                        None => {}
                    }
                    if let Some(d) = &owned_decision {
                        qs.decision = d.queues.get(i).cloned();
                    }
                }
            }
            if let Some(d) = owned_decision {
                st.desired = Some(d.replicas);
                st.reasons = d.reasons;
                st.proposals = d.proposals;
                st.arrival_rate = d.arrival_rate;
                st.seconds_per_message = d.seconds_per_message;
                st.dead_letter_rate = d.dead_letter_rate;
                st.oldest_age_seconds = d.oldest_age.map(|a| a.as_secs_f64());
                st.oldest_age_estimated = d.oldest_age_estimated;
                st.fallback_active = d.fallback_active;
            }
            st.consecutive_failures = consecutive;
            st.last_poll_decided = decided;
            if let Some(a) = action {
                st.last_action = Some(a);
            }
            // Keep conflict warnings (set by check_conflicts); replace notes.
            st.warnings.retain(|w| !w.starts_with("source: "));
            st.warnings.extend(
                warnings_from_sample
                    .drain(..)
                    .map(|n| format!("source: {n}")),
            );
            if let Some(ws) = settings {
                st.warnings.retain(|w| !w.starts_with("queue: "));
                st.warnings
                    .extend(ws.into_iter().map(|w| format!("queue: {}", w.message)));
            }
            if let Some(pe) = error {
                st.last_error = Some(ErrorStatus {
                    phase: pe.phase,
                    label: pe.label,
                    message: pe.message,
                    at: unix(now_wall),
                });
            }
        });
    }

    /// Poll until `shutdown` turns true. The read-only half of a poll is
    /// abandoned at shutdown; a write in progress is allowed to finish.
    ///
    /// The scaler, its result and a poll's futures are boxed. A tokio task
    /// is as big as the larger of its future and its output, for as long as
    /// it lives: inline, the scaler (in the future and again as the output)
    /// and the largest poll future (the write, with its re-decide on a
    /// conflict) made every task over 5 KB for the whole time it sleeps
    /// between polls, and thousands of scalers sleep at once. Boxed, the
    /// task is a few hundred bytes and a poll's futures exist only while it
    /// runs.
    pub async fn run(mut self: Box<Self>, mut shutdown: watch::Receiver<bool>) -> Box<Scaler> {
        let interval = self.poll_interval();
        let clock = self.rt.shared.clock;
        // Spread the first polls of many scalers over up to a (virtual) second.
        let first =
            Duration::from_secs_f64(rand::random_range(0.0..interval.as_secs_f64().min(1.0)));
        let mut next = clock.now() + first;
        loop {
            if *shutdown.borrow() {
                return self;
            }
            tokio::select! {
                _ = clock.sleep_until(next) => {}
                _ = shutdown.changed() => return self,
            }
            let prepared = tokio::select! {
                p = Box::pin(self.prepare()) => p,
                _ = shutdown.changed() => return self,
            };
            Box::pin(self.finish(prepared)).await;
            next = clock.now() + jittered(interval);
        }
    }
}

/// One sample of `src`, bounded by `timeout`, in the daemon's time.
async fn take_sample(
    src: Arc<dyn QueueSource>,
    timeout: Duration,
    clock: Clock,
) -> Result<Sample, SourceError> {
    bounded(timeout, src.sample(), SourceError::Timeout(timeout))
        .await
        .map(|s| {
            if src.on_daemon_clock() {
                s
            } else {
                on_daemon_clock(&clock, s)
            }
        })
}

/// What the scaler saw as one sample: its queue's, or with several queues
/// the pool's: the totals of the counts and rates the queues measured, the
/// oldest age among them, each queue's notes under its name. An error only
/// when every queue failed (the first queue's error). The metrics and the
/// timeline record this; /status shows each queue's own beside it.
fn pool_sample(
    queues: &[QueueRuntime],
    samples: &[Result<Sample, SourceError>],
) -> Result<Sample, SourceError> {
    if let [one] = samples {
        return one.clone();
    }
    let ok: Vec<(&QueueRuntime, &Sample)> = queues
        .iter()
        .zip(samples)
        .filter_map(|(q, s)| s.as_ref().ok().map(|s| (q, s)))
        .collect();
    let Some(at) = ok.iter().map(|(_, s)| s.at).max() else {
        return match samples.first() {
            Some(Err(e)) => Err(e.clone()),
            _ => Err(SourceError::Config("no queue configured".into())),
        };
    };
    fn total(xs: impl Iterator<Item = Option<u64>>) -> Option<u64> {
        xs.flatten().reduce(|a, b| a.saturating_add(b))
    }
    let mut pool = Sample::empty(at);
    pool.visible = total(ok.iter().map(|(_, s)| s.visible));
    pool.in_flight = total(ok.iter().map(|(_, s)| s.in_flight));
    pool.delayed = total(ok.iter().map(|(_, s)| s.delayed));
    pool.dead_letter = total(ok.iter().map(|(_, s)| s.dead_letter));
    pool.oldest_age = ok.iter().filter_map(|(_, s)| s.oldest_age).max();
    pool.arrival_rate = ok
        .iter()
        .filter_map(|(_, s)| s.arrival_rate)
        .reduce(|a, b| a + b);
    pool.consumers = ok
        .iter()
        .filter_map(|(_, s)| s.consumers)
        .reduce(|a, b| a.saturating_add(b));
    let dlqs: Vec<String> = ok
        .iter()
        .filter_map(|(q, s)| {
            s.dead_letter_queue
                .as_ref()
                .map(|d| format!("{}: {d}", q.name))
        })
        .collect();
    pool.dead_letter_queue = (!dlqs.is_empty()).then(|| dlqs.join("; "));
    pool.notes = ok
        .iter()
        .flat_map(|(q, s)| s.notes.iter().map(move |n| format!("{}: {n}", q.name)))
        .collect();
    Ok(pool)
}

/// A sample's ages and rates, measured on the wall clock, in the daemon's
/// time: under `--time-scale N` a message that has waited 12 real seconds
/// has waited 2 virtual minutes, and 10 arrivals per real second are 1 per
/// virtual second. The wall clock leaves the sample as it is.
fn on_daemon_clock(clock: &Clock, mut s: Sample) -> Sample {
    if clock.is_real() {
        return s;
    }
    s.oldest_age = s.oldest_age.map(|a| clock.to_virtual(a));
    s.visibility_timeout = s.visibility_timeout.map(|v| clock.to_virtual(v));
    s.arrival_rate = s.arrival_rate.map(|r| r / clock.scale());
    s
}

/// What a poll adds to the scaler's timeline.
fn timeline_poll(
    at: f64,
    sample: Option<&Sample>,
    current: Option<&Replicas>,
    decision: Option<&Decision>,
    action: Option<&ActionStatus>,
    error: bool,
) -> timeline::Poll {
    // The largest proposal won. The policy compares unrounded proposals, so
    // on a tie of the rounded counts this names the first signal: either
    // asked for the same count.
    let winner = decision.and_then(|d| {
        d.proposals
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.replicas.map(|r| (r, i)))
            .reduce(|best, p| if p.0 > best.0 { p } else { best })
            .map(|(_, i)| i)
    });
    let signal = match decision {
        // Several queues: the winning signal of the queue that asks most.
        Some(d) if !d.queues.is_empty() => d
            .queues
            .iter()
            .filter_map(|q| {
                let best = q
                    .proposals
                    .iter()
                    .filter_map(|p| p.replicas.map(|r| (r, p.signal)))
                    .reduce(|best, p| if p.0 > best.0 { p } else { best })?;
                Some(best)
            })
            .reduce(|best, p| if p.0 > best.0 { p } else { best })
            .and_then(|(_, s)| Signal::from_name(s)),
        _ => decision
            .zip(winner)
            .and_then(|(d, i)| Signal::from_name(d.proposals[i].signal)),
    };
    timeline::Poll {
        at,
        visible: sample.and_then(|s| s.visible),
        in_flight: sample.and_then(|s| s.in_flight),
        backlog: decision.and_then(|d| d.backlog),
        oldest_age: decision.and_then(|d| d.oldest_age.map(|a| a.as_secs_f64())),
        oldest_age_estimated: decision.is_some_and(|d| d.oldest_age_estimated),
        arrival_rate: decision.and_then(|d| d.arrival_rate),
        desired: decision.map(|d| d.replicas),
        current: current.map(|c| c.desired),
        ready: current.and_then(|c| c.ready),
        signal,
        error,
        action: action.map(|a| timeline::Action {
            from: a.from,
            to: a.to,
        }),
        // Only a poll that can become a timeline event (a write, or a
        // decided count other than the target's) keeps its reason: the
        // timeline drops the others', and formatting one every poll of
        // every scaler cost more than the rest of the timeline.
        reason: decision
            .filter(|d| action.is_some() || current.map(|c| c.desired) != Some(d.replicas))
            .map(|d| one_line(d, winner))
            .unwrap_or_default(),
    }
}

/// A decision's reasons on one short line: the winning signal's reason,
/// then every step after the signals (tolerance, stabilization, rate
/// limits, bounds, ...), which is what explains a number that differs from
/// the signal's. The signals that lost are left to /status.
fn one_line(d: &Decision, winner: Option<usize>) -> String {
    // `decide` gives one signal reason per proposal, in the same order.
    let signal_reasons: Vec<&Reason> = d
        .reasons
        .iter()
        .filter(|r| r.step == Step::Signal)
        .collect();
    let won = winner.and_then(|i| signal_reasons.get(i).copied());
    won.into_iter()
        .chain(d.reasons.iter().filter(|r| r.step != Step::Signal))
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `interval` ± 10 %, so scalers started together drift apart.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.9..1.1))
}

/// Run `fut`, giving up with `on_timeout` after `limit`.
async fn bounded<T, E>(
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
    on_timeout: E,
) -> Result<T, E> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(on_timeout),
    }
}

struct Running {
    /// What the task runs: its config (the task's own copy, shared) and the
    /// defaults it was started with; a reload compares against it.
    key: (Arc<ScalerConfig>, DefaultsConfig),
    stop: watch::Sender<bool>,
    handle: JoinHandle<Box<Scaler>>,
}

/// The supervisor of all scaler tasks.
pub struct Daemon {
    /// One for all scalers: each task holds a pointer to it.
    rt: Arc<Runtime>,
    /// The daemon-wide settings of the running config, without its
    /// scalers: each scaler's config lives once, shared by its task and
    /// its `Running::key` (at 10 000 scalers another copy here was ~10 MB).
    config: Config,
    running: HashMap<String, Running>,
    states: HashMap<String, Arc<Mutex<PolicyState>>>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub started: Vec<String>,
    pub restarted: Vec<String>,
    pub stopped: Vec<String>,
    pub unchanged: usize,
}

impl Daemon {
    /// Start a task for every scaler of `config`.
    pub fn start(rt: Runtime, config: Config) -> Daemon {
        let mut d = Daemon {
            rt: Arc::new(rt),
            config: Config {
                scalers: Vec::new(),
                ..config.clone()
            },
            running: HashMap::new(),
            states: HashMap::new(),
        };
        d.apply(config);
        d
    }

    pub fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// The running config's daemon-wide settings (`server`, `defaults`,
    /// `leader_election`, ...); its `scalers` list is empty.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Move to `new`: start new scalers, restart changed ones (keeping their
    /// policy state), stop removed ones, leave unchanged ones alone.
    pub fn apply(&mut self, mut new: Config) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let scalers = std::mem::take(&mut new.scalers);
        let wanted: std::collections::HashSet<&str> =
            scalers.iter().map(|s| s.name.as_str()).collect();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if !wanted.contains(name.as_str())
                && let Some(r) = self.running.remove(&name)
            {
                let _ = r.stop.send(true);
                self.states.remove(&name);
                self.rt.metrics.remove_scaler(&name);
                self.rt.status.remove(&name);
                summary.stopped.push(name);
            }
        }
        drop(wanted);
        for s in scalers {
            match self.running.get(&s.name) {
                Some(r) if *r.key.0 == s && r.key.1 == new.defaults => summary.unchanged += 1,
                existing => {
                    if existing.is_some() {
                        if let Some(r) = self.running.remove(&s.name) {
                            let _ = r.stop.send(true);
                            // Error series of a kind the scaler no longer
                            // has would stay at their last value forever.
                            let old = &r.key.0;
                            let kinds = |c: &ScalerConfig| -> Vec<&'static str> {
                                c.queues().iter().map(|q| q.source.kind()).collect()
                            };
                            let new_kinds = kinds(&s);
                            for k in kinds(old) {
                                if !new_kinds.contains(&k) {
                                    self.rt.metrics.remove_source_kind(&s.name, k);
                                }
                            }
                            // Per-queue series of queues the new config
                            // no longer has (only a scaler that had
                            // several queues has any).
                            if old.is_multi_queue() {
                                let keep: Vec<&str> = if s.is_multi_queue() {
                                    s.sources.iter().map(|q| q.name.as_str()).collect()
                                } else {
                                    Vec::new()
                                };
                                self.rt.metrics.remove_queues(&s.name, &keep);
                            }
                            if old.target.kind() != s.target.kind() {
                                self.rt
                                    .metrics
                                    .remove_target_kind(&s.name, old.target.kind());
                            }
                        }
                        summary.restarted.push(s.name.clone());
                    } else {
                        summary.started.push(s.name.clone());
                    }
                    let state = self
                        .states
                        .entry(s.name.clone())
                        .or_insert_with(|| Arc::new(Mutex::new(PolicyState::new())))
                        .clone();
                    let scaler = Scaler::new(s, new.defaults.clone(), state, self.rt.clone());
                    let key = (scaler.cfg.clone(), new.defaults.clone());
                    self.start_task(scaler, key);
                }
            }
        }
        self.config = new;
        summary
    }

    /// Run a prepared scaler under this daemon (tests inject clients this way).
    pub fn spawn(&mut self, scaler: Scaler, key: (ScalerConfig, DefaultsConfig)) {
        let cfg = if *scaler.cfg == key.0 {
            scaler.cfg.clone()
        } else {
            Arc::new(key.0)
        };
        self.start_task(scaler, (cfg, key.1));
    }

    fn start_task(&mut self, scaler: Scaler, key: (Arc<ScalerConfig>, DefaultsConfig)) {
        let (stop, rx) = watch::channel(false);
        let name = scaler.name().to_string();
        let handle = tokio::spawn(Box::new(scaler).run(rx));
        self.running.insert(name, Running { key, stop, handle });
    }

    /// Stop every scaler; wait for in-flight writes up to `grace`.
    pub async fn shutdown(self, grace: Duration) {
        for r in self.running.values() {
            let _ = r.stop.send(true);
        }
        let all = futures_join(self.running.into_values().map(|r| r.handle).collect());
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!("some scalers did not stop within {grace:?}; exiting anyway");
        }
    }
}

async fn futures_join(handles: Vec<JoinHandle<Box<Scaler>>>) {
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::policy::{PolicyConfig, decide};

    #[test]
    fn a_timeline_reason_names_the_winning_signal_and_the_steps_that_changed_its_number() {
        let cfg: PolicyConfig = toml::from_str(
            "min_replicas = 1\nmax_replicas = 4\nmessages_per_replica = 10\nmax_message_age = \"30s\"",
        )
        .expect("policy");
        let caps = Capabilities {
            oldest_age: true,
            arrival_rate: false,
            in_flight: false,
            delayed: false,
            count_in_flight: false,
            count_delayed: false,
        };
        let policy = Policy::new(&cfg, &caps);
        let sample = Sample {
            visible: Some(100),
            oldest_age: Some(Duration::from_secs(10)),
            ..Sample::empty(SystemTime::now())
        };
        let current = Replicas {
            desired: 1,
            ready: Some(1),
        };
        let d = decide(
            &policy,
            &mut PolicyState::new(),
            Some(&sample),
            current,
            Instant::now(),
        );
        let p = timeline_poll(1.0, Some(&sample), Some(&current), Some(&d), None, false);
        assert_eq!(p.signal, Some(Signal::Backlog));
        assert_eq!(
            (p.desired, p.current, p.backlog),
            (Some(4), Some(1), Some(100))
        );
        assert!(p.reason.starts_with("signal: backlog 100"), "{}", p.reason);
        assert!(p.reason.contains("bounds: "), "{}", p.reason);
        assert!(
            !p.reason.contains("oldest message"),
            "a losing signal is left out: {}",
            p.reason
        );
    }

    #[test]
    fn a_poll_that_cannot_become_a_timeline_event_carries_no_reason() {
        let cfg: PolicyConfig =
            toml::from_str("min_replicas = 1\nmax_replicas = 4\nmessages_per_replica = 10")
                .expect("policy");
        let policy = Policy::new(&cfg, &Capabilities::none());
        let sample = Sample {
            visible: Some(20),
            ..Sample::empty(SystemTime::now())
        };
        let current = Replicas {
            desired: 2,
            ready: Some(2),
        };
        let d = decide(
            &policy,
            &mut PolicyState::new(),
            Some(&sample),
            current,
            Instant::now(),
        );
        assert_eq!(d.replicas, 2, "{:?}", d.reasons);
        // Decided what the target has, nothing written: no event, no reason.
        let p = timeline_poll(1.0, Some(&sample), Some(&current), Some(&d), None, false);
        assert_eq!(p.reason, "");
        // The same decision written (a target that had drifted) is an event.
        let wrote = ActionStatus {
            from: 3,
            to: 2,
            at: 1.0,
            reasons: Vec::new(),
        };
        let p = timeline_poll(
            1.0,
            Some(&sample),
            Some(&current),
            Some(&d),
            Some(&wrote),
            false,
        );
        assert!(p.reason.starts_with("signal: backlog 20"), "{}", p.reason);
    }

    #[tokio::test]
    async fn a_scaler_and_its_sleeping_task_take_under_a_kibibyte_each() {
        // Issue 14: 10 000 scalers in 160 MiB. The task lives for as long as
        // the scaler runs, mostly asleep between polls; what a poll needs is
        // boxed while it runs (see `Scaler::run`).
        let text = "[[scaler]]\nname = \"a\"\n[scaler.source]\nkind = \"demo\"\nqueue = \"q\"\npattern = \"constant:rate=1\"\n[scaler.target]\nkind = \"demo\"\nqueue = \"q\"\nseconds_per_message = 0.5\n[scaler.policy]\nmin_replicas = 1\nmax_replicas = 5\nmessages_per_replica = 5\n";
        let cfg = Config::from_str_with_env(text, std::path::Path::new("t.toml"), Vec::new())
            .expect("valid config");
        let rt = Runtime::new(Clients::new(), false);
        let s = Scaler::new(
            cfg.scalers[0].clone(),
            cfg.defaults.clone(),
            Default::default(),
            rt,
        );
        assert!(
            std::mem::size_of::<Scaler>() < 1024,
            "{}",
            std::mem::size_of::<Scaler>()
        );
        let (_stop, rx) = watch::channel(false);
        let task = Box::new(s).run(rx);
        assert!(
            std::mem::size_of_val(&task) < 1024,
            "{}",
            std::mem::size_of_val(&task)
        );
    }
}
