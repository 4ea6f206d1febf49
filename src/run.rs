//! `qscale run` and `qscale once`: the daemon's lifecycle and the one-shot
//! look at every source.
//!
//! `run` loads the config, binds the HTTP server (a port in use is reported
//! at once, not after the first poll), starts the [`Daemon`], and then waits
//! for signals: SIGTERM/SIGINT shut down, SIGHUP reloads, and so does a
//! change of the config file's content (checked every two seconds; this also
//! catches Kubernetes ConfigMap updates, which swap a symlink and send no
//! signal). An invalid new config is rejected with every error logged and
//! counted in `qscale_config_reload_failures_total`; the running scalers keep
//! going on the old one.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use crate::clients::Clients;
use crate::clock::{Clock, TimeScale};
use crate::config::{Config, ConfigError};
use crate::contract::Sample;
use crate::control_loop::{Daemon, Runtime};
use crate::http::{self, HttpError};
use crate::leader::{self, Elector, LeaderError, Leadership};
use crate::policy::queue_setting_warnings;

/// How often the config file is checked for changes.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}", .0.lines().join("\n"))]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("cannot install signal handlers: {0}")]
    Signals(String),
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

impl RunError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            RunError::Config(e) => e.metric_label(),
            RunError::Http(e) => e.metric_label(),
            RunError::Signals(_) => "signals",
            RunError::Leader(e) => e.metric_label(),
        }
    }
}

/// Options of `qscale run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub dry_run: bool,
    /// `--time-scale`: how many times faster the daemon's clock runs
    /// (benchmarks and demos only).
    pub time_scale: TimeScale,
}

/// What the reload watcher last saw of the config file. Its metadata is
/// read every check; its content only when the metadata moved (an edit
/// changes the size or the modification time, a ConfigMap update swaps in
/// a new file), so a config of thousands of scalers is not read and
/// hashed every two seconds for nothing.
struct Watched {
    path: PathBuf,
    stat: Option<(u64, u64, u64, Option<SystemTime>)>,
    hash: Option<u64>,
}

impl Watched {
    fn new(path: &Path) -> Watched {
        let mut w = Watched {
            path: path.to_path_buf(),
            stat: None,
            hash: None,
        };
        w.refresh();
        w
    }

    /// Take the file as it is now as the one running (after a reload).
    fn refresh(&mut self) {
        self.stat = self.read_stat();
        self.hash = self.read_hash();
    }

    /// Whether the file's content differs from what was last seen; a
    /// rewrite with the same content is no change.
    fn changed(&mut self) -> bool {
        let stat = self.read_stat();
        if stat.is_some() && stat == self.stat {
            return false;
        }
        self.stat = stat;
        let hash = self.read_hash();
        if hash == self.hash {
            return false;
        }
        self.hash = hash;
        true
    }

    fn read_stat(&self) -> Option<(u64, u64, u64, Option<SystemTime>)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.dev(), m.ino(), m.len(), m.modified().ok()))
    }

    fn read_hash(&self) -> Option<u64> {
        let bytes = std::fs::read(&self.path).ok()?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        Some(h.finish())
    }
}

/// Run the daemon until SIGTERM or SIGINT.
pub async fn run(opts: RunOptions) -> Result<(), RunError> {
    use tokio::signal::unix::{SignalKind, signal};

    let config = Config::load(&opts.config)?;
    let clock = Clock::scaled(opts.time_scale);
    if !clock.is_real() {
        tracing::warn!(
            time_scale = clock.scale(),
            "the daemon's clock runs {}x faster than the wall clock: for benchmarks and demos only",
            clock.scale()
        );
    }
    let mut rt = Runtime::new(Clients::with_clock(clock), opts.dry_run);
    let (stop_elector, elector_stopped) = watch::channel(false);
    let elector = if config.leader_election.enabled {
        let le = config.leader_election.clone();
        let client = kube::Client::try_default()
            .await
            .map_err(|e| RunError::Leader(LeaderError::Client(e.to_string())))?;
        rt.leadership = Leadership::shards(le.shards);
        let ns = leader::namespace(&le);
        let identity = leader::default_identity();
        tracing::info!(%identity, namespace = %ns, lease = %le.lease_name, shards = le.shards, "leader election on");
        let e = Elector::new(
            client,
            &ns,
            le,
            identity,
            rt.leadership.clone(),
            rt.metrics.clone(),
        );
        Some(tokio::spawn(e.run(elector_stopped)))
    } else {
        rt.metrics.leader.set(1);
        None
    };
    let (stop_http, mut http_stopped) = watch::channel(false);
    let (addr, http_task) = http::serve(
        config.server.listen,
        rt.metrics.clone(),
        rt.status.clone(),
        async move {
            let _ = http_stopped.wait_for(|v| *v).await;
        },
    )
    .await?;
    tracing::info!(
        %addr,
        scalers = config.scalers.len(),
        dry_run = opts.dry_run,
        version = crate::VERSION,
        "qscale started"
    );
    let mut daemon = Daemon::start(rt, config);

    let sig = |k: SignalKind| signal(k).map_err(|e| RunError::Signals(e.to_string()));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;
    let mut watched = Watched::new(&opts.config);
    let mut tick = tokio::time::interval(RELOAD_CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hup.recv() => {
                // Coalesce a storm of SIGHUPs into one reload.
                while tokio::time::timeout(Duration::from_millis(50), hup.recv()).await.is_ok() {}
                watched.refresh();
                reload(&mut daemon, &opts.config, "SIGHUP");
            }
            _ = tick.tick() => {
                if watched.changed() {
                    reload(&mut daemon, &opts.config, "config file changed");
                }
            }
        }
    }

    let grace = daemon.config().defaults.actuate_timeout;
    daemon.shutdown(grace).await;
    if let Some(e) = elector {
        // Scalers have stopped: hand the Leases over now, not at expiry.
        let _ = stop_elector.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(2), e).await;
    }
    let _ = stop_http.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), http_task).await;
    tracing::info!("qscale stopped");
    Ok(())
}

/// Validate and apply a new config; on failure keep the old one.
pub fn reload(daemon: &mut Daemon, path: &Path, why: &str) {
    match Config::load(path) {
        Ok(new) => {
            if new.server != daemon.config().server {
                tracing::warn!("server settings changed; restart qscale to apply them");
            }
            if new.leader_election != daemon.config().leader_election {
                tracing::warn!("leader_election settings changed; restart qscale to apply them");
            }
            let s = daemon.apply(new);
            tracing::info!(
                trigger = why,
                started = ?s.started,
                restarted = ?s.restarted,
                stopped = ?s.stopped,
                unchanged = s.unchanged,
                "config reloaded"
            );
        }
        Err(e) => {
            daemon.runtime().metrics.config_reload_failures.inc();
            for line in e.lines() {
                tracing::error!(trigger = why, "config reload rejected: {line}");
            }
            tracing::error!("keeping the previous config");
        }
    }
}

/// What `qscale once` reports for one scaler.
#[derive(Debug, Serialize)]
pub struct OnceReport {
    pub name: String,
    pub sample: Option<SampleView>,
    pub current_replicas: Option<u32>,
    pub ready_replicas: Option<u32>,
    pub desired_replicas: Option<u32>,
    pub reasons: Vec<String>,
    /// With several queues: what each queue saw and asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueReport>,
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

/// One queue of a `once` report for a scaler with several.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub name: String,
    pub sample: Option<SampleView>,
    /// What this queue needs, from its largest signal; `null` when no
    /// signal could say.
    pub replicas: Option<u32>,
    /// Each of its signals' proposals.
    pub proposals: Vec<crate::policy::Proposal>,
    pub error: Option<String>,
}

/// The sample fields `once --output json` promises, null where unmeasured.
#[derive(Debug, Serialize)]
pub struct SampleView {
    pub visible: Option<u64>,
    pub in_flight: Option<u64>,
    pub delayed: Option<u64>,
    pub oldest_age_seconds: Option<f64>,
    pub arrival_rate: Option<f64>,
    pub consumers: Option<u32>,
}

impl From<&Sample> for SampleView {
    fn from(s: &Sample) -> SampleView {
        SampleView {
            visible: s.visible,
            in_flight: s.in_flight,
            delayed: s.delayed,
            oldest_age_seconds: s.oldest_age.map(|d| d.as_secs_f64()),
            arrival_rate: s.arrival_rate,
            consumers: s.consumers,
        }
    }
}

/// Sample every (or one) scaler's source, read its target and decide,
/// without writing anything.
pub async fn once(config: &Config, only: Option<&str>) -> Vec<OnceReport> {
    let rt = Runtime::new(Clients::new(), true);
    let mut tasks = Vec::new();
    for s in config
        .scalers
        .iter()
        .filter(|s| only.is_none_or(|n| n == s.name))
    {
        let scaler = crate::control_loop::Scaler::new(
            s.clone(),
            config.defaults.clone(),
            Default::default(),
            rt.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut scaler = scaler;
            let p = scaler.prepare().await;
            (scaler.name().to_string(), p)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        let Ok((name, p)) = t.await else { continue };
        let names: Vec<String> = config
            .scaler(&name)
            .map(|s| s.queues().iter().map(|q| q.name.to_string()).collect())
            .unwrap_or_default();
        let multi = p.samples.len() > 1;
        let mut errors = Vec::new();
        if multi {
            for (q, s) in names.iter().zip(&p.samples) {
                if let Err(e) = s {
                    errors.push(format!("source: queue {q}: {e}"));
                }
            }
        } else if let Err(e) = &p.sample {
            errors.push(format!("source: {e}"));
        }
        if let Err(e) = &p.current {
            errors.push(format!("target: {e}"));
        }
        let settings = match &p.decision {
            Some(d) if multi => names
                .iter()
                .zip(&p.samples)
                .zip(&d.queues)
                .filter_map(|((q, s), qd)| {
                    let s = s.as_ref().ok()?;
                    Some(
                        queue_setting_warnings(
                            s.visibility_timeout,
                            s.max_receive_count,
                            qd.seconds_per_message,
                            qd.seconds_per_message_learned,
                        )
                        .into_iter()
                        .map(move |mut w| {
                            w.message = format!("{q}: {}", w.message);
                            w
                        }),
                    )
                })
                .flatten()
                .collect(),
            Some(d) => match &p.sample {
                Ok(s) => queue_setting_warnings(
                    s.visibility_timeout,
                    s.max_receive_count,
                    d.seconds_per_message,
                    d.seconds_per_message_learned,
                ),
                Err(_) => Vec::new(),
            },
            None => Vec::new(),
        };
        let queues = if multi {
            names
                .iter()
                .zip(&p.samples)
                .enumerate()
                .map(|(i, (q, s))| {
                    let qd = p.decision.as_ref().and_then(|d| d.queues.get(i));
                    QueueReport {
                        name: q.clone(),
                        sample: s.as_ref().ok().map(SampleView::from),
                        replicas: qd.and_then(|d| d.replicas),
                        proposals: qd.map(|d| d.proposals.clone()).unwrap_or_default(),
                        error: s.as_ref().err().map(|e| e.to_string()),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let warnings = rt
            .status
            .get(&name)
            .map(|s| s.warnings)
            .unwrap_or_default()
            .into_iter()
            .chain(
                p.sample
                    .as_ref()
                    .map(|s| s.notes.clone())
                    .unwrap_or_default(),
            )
            .chain(
                settings
                    .into_iter()
                    .map(|w| format!("queue: {}", w.message)),
            )
            .collect();
        out.push(OnceReport {
            name,
            sample: p.sample.as_ref().ok().map(SampleView::from),
            current_replicas: p.current.as_ref().ok().map(|c| c.desired),
            ready_replicas: p.current.as_ref().ok().and_then(|c| c.ready),
            desired_replicas: p.decision.as_ref().map(|d| d.replicas),
            reasons: p
                .decision
                .as_ref()
                .map(|d| d.reasons.iter().map(|r| r.to_string()).collect())
                .unwrap_or_default(),
            queues,
            warnings,
            error: (!errors.is_empty()).then(|| errors.join("; ")),
        });
    }
    out
}

/// What `qscale check --online` found for one scaler.
#[derive(Debug, Serialize)]
pub struct OnlineReport {
    pub name: String,
    /// One line: what the source answered.
    pub summary: String,
    /// What the user should change or know, one line each.
    pub warnings: Vec<String>,
    /// Why the source could not be sampled.
    pub error: Option<String>,
}

/// Sample every scaler's source once and check the queue's own settings
/// against the configured work (`qscale check --online`). Reads only.
pub async fn check_online(config: &Config) -> Vec<OnlineReport> {
    let clients = Clients::new();
    let timeout = config.defaults.sample_timeout;
    let mut tasks = Vec::new();
    for s in &config.scalers {
        let multi = s.is_multi_queue();
        for q in s.queues() {
            let clients = clients.clone();
            let name = if multi {
                format!("{} queue {}", s.name, q.name)
            } else {
                s.name.clone()
            };
            let (source, policy) = (q.source.clone(), q.policy);
            tasks.push(tokio::spawn(async move {
                let sampled = match source.build(&clients, timeout).await {
                    Ok(src) => tokio::time::timeout(timeout, src.sample())
                        .await
                        .unwrap_or(Err(crate::contract::SourceError::Timeout(timeout))),
                    Err(e) => Err(e),
                };
                online_report(&name, &policy, sampled)
            }));
        }
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

/// The report for one queue (named `name`: the scaler, or the scaler and
/// the queue) from what its source answered; `policy` is what its signals
/// read.
pub fn online_report(
    name: &str,
    policy: &crate::policy::PolicyConfig,
    sampled: Result<Sample, crate::contract::SourceError>,
) -> OnlineReport {
    let sample = match sampled {
        Ok(x) => x,
        Err(e) => {
            return OnlineReport {
                name: name.to_string(),
                summary: "source not sampled".into(),
                warnings: Vec::new(),
                error: Some(format!("source: {e}")),
            };
        }
    };
    let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut summary = format!(
        "visible {}, in flight {}",
        opt(sample.visible),
        opt(sample.in_flight)
    );
    match (&sample.dead_letter_queue, sample.dead_letter) {
        (Some(q), Some(n)) => summary.push_str(&format!("; dead-letter queue {q} holds {n}")),
        (Some(q), None) => summary.push_str(&format!("; dead-letter queue {q}, depth unknown")),
        (None, _) => summary.push_str("; no dead-letter queue"),
    }
    if let Some(v) = sample.visibility_timeout {
        summary.push_str(&format!(
            "; visibility timeout {}",
            humantime::format_duration(v)
        ));
    }
    if let Some(m) = sample.max_receive_count {
        summary.push_str(&format!("; maxReceiveCount {m}"));
    }
    let configured = policy
        .throughput
        .as_ref()
        .and_then(|t| t.seconds_per_message);
    let mut warnings: Vec<String> = queue_setting_warnings(
        sample.visibility_timeout,
        sample.max_receive_count,
        configured,
        false,
    )
    .into_iter()
    .map(|w| w.message)
    .collect();
    if policy.dead_letter.is_some() && sample.dead_letter.is_none() {
        warnings.push(
            "policy.dead_letter is set but the source reports no dead-letter queue depth, so \
             the rule cannot act; configure the source's dead-letter queue or give the queue \
             one (an SQS RedrivePolicy, a RabbitMQ dead-letter exchange)"
                .into(),
        );
    }
    warnings.extend(sample.notes.iter().map(|n| format!("source: {n}")));
    OnlineReport {
        name: name.to_string(),
        summary,
        warnings,
        error: None,
    }
}

/// The text form of a `once` report.
pub fn render_once_text(r: &OnceReport) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_string());
    let mut s = format!("{}\n", r.name);
    match &r.sample {
        Some(x) => s.push_str(&format!(
            "  sample: visible {}, in flight {}, delayed {}, oldest age {}, arrivals {}, consumers {}\n",
            opt(x.visible.map(|v| v.to_string())),
            opt(x.in_flight.map(|v| v.to_string())),
            opt(x.delayed.map(|v| v.to_string())),
            opt(x.oldest_age_seconds.map(|v| format!("{v:.0}s"))),
            opt(x.arrival_rate.map(|v| format!("{v:.2}/s"))),
            opt(x.consumers.map(|v| v.to_string())),
        )),
        None => s.push_str("  sample: -\n"),
    }
    s.push_str(&format!(
        "  replicas: current {} (ready {}) -> desired {}\n",
        opt(r.current_replicas.map(|v| v.to_string())),
        opt(r.ready_replicas.map(|v| v.to_string())),
        opt(r.desired_replicas.map(|v| v.to_string())),
    ));
    for q in &r.queues {
        let sample = match &q.sample {
            Some(x) => format!(
                "visible {}, in flight {}, oldest age {}",
                opt(x.visible.map(|v| v.to_string())),
                opt(x.in_flight.map(|v| v.to_string())),
                opt(x.oldest_age_seconds.map(|v| format!("{v:.0}s"))),
            ),
            None => "not sampled".to_string(),
        };
        s.push_str(&format!(
            "  queue {}: {sample} -> needs {}\n",
            q.name,
            opt(q.replicas.map(|v| v.to_string()))
        ));
    }
    for reason in &r.reasons {
        s.push_str(&format!("  - {reason}\n"));
    }
    for w in &r.warnings {
        s.push_str(&format!("  warning: {w}\n"));
    }
    if let Some(e) = &r.error {
        s.push_str(&format!("  error: {e}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reload_watcher_sees_edits_and_swapped_files_but_not_a_rewrite_of_the_same_text() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("qscale.toml");
        std::fs::write(&path, "a = 1\n").expect("write");
        let mut w = Watched::new(&path);
        assert!(!w.changed(), "nothing happened");

        // Same size, new text: the modification time moved.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "a = 2\n").expect("write");
        assert!(w.changed());
        assert!(!w.changed(), "seen once");

        // Rewritten with the same text: metadata moved, content did not.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&path, "a = 2\n").expect("write");
        assert!(!w.changed());

        // A ConfigMap update: a new file renamed over the old one.
        let next = dir.path().join("next.toml");
        std::fs::write(&next, "a = 3\n").expect("write");
        std::fs::rename(&next, &path).expect("rename");
        assert!(w.changed());

        // Gone, then back: both are changes.
        std::fs::remove_file(&path).expect("remove");
        assert!(w.changed());
        std::fs::write(&path, "a = 3\n").expect("write");
        assert!(w.changed());
    }
}
