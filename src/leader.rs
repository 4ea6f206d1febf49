//! Leader election and sharding with Kubernetes Leases.
//!
//! With several qscale replicas, only the holder of a scaler's Lease writes
//! replica counts; the others keep sampling and exporting metrics, so a
//! takeover acts at once. Kubernetes is the coordination engine: every claim
//! is a Lease update with optimistic concurrency (resourceVersion), so two
//! replicas can never both win the same Lease.
//!
//! - One shard (the default): a classic leader election on `lease_name`.
//! - `shards = N`: scalers are split by a stable hash of their name into N
//!   shards, each with its own Lease `<lease_name>-<i>`. Every replica holds
//!   at most its fair share `ceil(N / live replicas)` and picks up orphaned
//!   Leases, so adding replicas spreads the work and losing one moves its
//!   shards within a lease duration. Live replicas announce themselves by a
//!   heartbeat counter in the annotations of `<lease_name>-members`.
//!
//! Time: like client-go, a Lease (or heartbeat) is judged expired by when
//! *this* process last saw it change, on the monotonic clock, never by
//! comparing another machine's timestamp with ours. A holder that could not
//! renew for `renew_deadline` stops actuating, which is before the Lease can
//! expire for the others (`lease_duration` > `renew_deadline`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::config::LeaderElectionConfig;
use crate::metrics::Metrics;

/// Whether this process may actuate a given scaler. Without leader election
/// it always may; with it, only until the renewal deadline of the Lease of
/// the scaler's shard. Holding a *deadline* rather than a flag means that
/// even if the elector hangs on a dead API server, actuation stops by itself
/// in time.
#[derive(Clone)]
pub struct Leadership {
    epoch: std::time::Instant,
    /// Per shard: milliseconds since `epoch` until which we may actuate.
    until: Arc<Vec<AtomicU64>>,
}

impl Leadership {
    /// A single replica: always leader.
    pub fn always() -> Leadership {
        Leadership {
            epoch: std::time::Instant::now(),
            until: Arc::new(vec![AtomicU64::new(u64::MAX)]),
        }
    }

    /// `n` shards, none held yet.
    pub fn shards(n: u32) -> Leadership {
        Leadership {
            epoch: std::time::Instant::now(),
            until: Arc::new((0..n.max(1)).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    /// The shard of a scaler: a stable hash of its name (FNV-1a, so every
    /// replica and every version agrees).
    pub fn shard_of(&self, scaler: &str) -> usize {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in scaler.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        (h % self.until.len() as u64) as usize
    }

    pub fn shard_count(&self) -> usize {
        self.until.len()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn may_actuate(&self, scaler: &str) -> bool {
        self.holds(self.shard_of(scaler))
    }

    /// Whether shard `i` is held now.
    pub fn holds(&self, i: usize) -> bool {
        self.until
            .get(i)
            .is_some_and(|u| self.now_ms() < u.load(Ordering::SeqCst))
    }

    /// Hold shard `i` until `deadline`.
    pub fn grant(&self, i: usize, deadline: std::time::Instant) {
        if let Some(u) = self.until.get(i) {
            let ms = u64::try_from(deadline.saturating_duration_since(self.epoch).as_millis())
                .unwrap_or(u64::MAX);
            u.store(ms, Ordering::SeqCst);
        }
    }

    /// Give up shard `i` now.
    pub fn revoke(&self, i: usize) {
        if let Some(u) = self.until.get(i) {
            u.store(0, Ordering::SeqCst);
        }
    }

    /// Holds at least one shard.
    pub fn any(&self) -> bool {
        (0..self.until.len()).any(|i| self.holds(i))
    }
}

/// Annotation on the members Lease: JSON map of identity -> heartbeat count.
pub const MEMBERS_ANNOTATION: &str = "qscale.io/members";

/// Why a Lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("another replica changed Lease {0} first")]
    Conflict(String),
    #[error(
        "cannot use Lease {name}: {reason}; qscale needs get, create and update on leases in its namespace"
    )]
    Api { name: String, reason: String },
    #[error("cannot reach the Kubernetes API for leader election: {0}")]
    Client(String),
}

impl LeaderError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            LeaderError::Conflict(_) => "conflict",
            LeaderError::Api { .. } => "api",
            LeaderError::Client(_) => "unavailable",
        }
    }
}

/// The Lease name of shard `i` of `shards`.
pub fn shard_lease_name(base: &str, i: usize, shards: usize) -> String {
    if shards <= 1 {
        base.to_string()
    } else {
        format!("{base}-{i}")
    }
}

/// The largest number of shards one replica should hold.
pub fn fair_share(shards: usize, live_replicas: usize) -> usize {
    shards.div_ceil(live_replicas.max(1))
}

/// What this process knows about one shard's Lease.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardView {
    /// The holder named in the Lease, if any.
    pub holder: Option<String>,
    /// The holder has not renewed within the lease duration (as observed here).
    pub expired: bool,
}

/// What to do with one shard this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Ours, within our share: renew.
    Renew,
    /// Ours, beyond our share: give it back so another replica can take it.
    Release,
    /// Free or expired, and we are below our share: try to take it.
    Acquire,
    /// Someone else's and alive: leave it.
    Leave,
}

/// Decide, for every shard, what this replica does. Pure, for tests.
pub fn plan(me: &str, shards: &[ShardView], live_replicas: usize) -> Vec<Plan> {
    let fair = fair_share(shards.len(), live_replicas);
    let mut mine = 0;
    let mut out: Vec<Plan> = shards
        .iter()
        .map(|s| {
            if s.holder.as_deref() == Some(me) {
                mine += 1;
                if mine <= fair {
                    Plan::Renew
                } else {
                    Plan::Release
                }
            } else {
                Plan::Leave
            }
        })
        .collect();
    let mut held = mine.min(fair);
    for (i, s) in shards.iter().enumerate() {
        if held >= fair {
            break;
        }
        let free = s.holder.as_deref().is_none_or(str::is_empty) || s.expired;
        if out[i] == Plan::Leave && free {
            out[i] = Plan::Acquire;
            held += 1;
        }
    }
    out
}

/// Local observation of a remote record, to judge expiry on our own clock.
#[derive(Debug, Clone)]
struct Observed {
    record: String,
    at: Instant,
}

fn observe(
    map: &mut HashMap<String, Observed>,
    key: &str,
    record: String,
    now: Instant,
) -> Instant {
    match map.get_mut(key) {
        Some(o) if o.record == record => o.at,
        _ => {
            map.insert(key.to_string(), Observed { record, at: now });
            now
        }
    }
}

/// A leader elector for one process.
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaderElectionConfig,
    identity: String,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    observed: HashMap<String, Observed>,
    /// Per shard: when we last renewed successfully.
    renewed: Vec<Option<Instant>>,
    heartbeat: u64,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        cfg: LeaderElectionConfig,
        identity: String,
        leadership: Leadership,
        metrics: Arc<Metrics>,
    ) -> Elector {
        let n = leadership.shard_count();
        Elector {
            api: Api::namespaced(client, namespace),
            cfg,
            identity,
            leadership,
            metrics,
            observed: HashMap::new(),
            renewed: vec![None; n],
            heartbeat: 0,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn shards(&self) -> usize {
        self.leadership.shard_count()
    }

    fn lease_name(&self, i: usize) -> String {
        shard_lease_name(&self.cfg.lease_name, i, self.shards())
    }

    fn members_name(&self) -> String {
        format!("{}-members", self.cfg.lease_name)
    }

    async fn get(&self, name: &str) -> Result<Option<Lease>, LeaderError> {
        match self.api.get_opt(name).await {
            Ok(l) => Ok(l),
            Err(e) => Err(api_error(name, e)),
        }
    }

    /// Write `lease` (create when it has no resourceVersion).
    async fn put(&self, name: &str, lease: Lease) -> Result<(), LeaderError> {
        let pp = PostParams {
            field_manager: Some("qscale".into()),
            ..Default::default()
        };
        let res = if lease.metadata.resource_version.is_some() {
            self.api.replace(name, &pp, &lease).await
        } else {
            self.api.create(&pp, &lease).await
        };
        match res {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Err(LeaderError::Conflict(name.to_string()))
            }
            Err(e) => Err(api_error(name, e)),
        }
    }

    /// Heartbeat in the members Lease and return how many replicas are live.
    async fn members(&mut self, now: Instant) -> Result<usize, LeaderError> {
        let name = self.members_name();
        let lease = self.get(&name).await?;
        let mut members: BTreeMap<String, u64> = lease
            .as_ref()
            .and_then(|l| l.metadata.annotations.as_ref())
            .and_then(|a| a.get(MEMBERS_ANNOTATION))
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let ttl = self.cfg.lease_duration;
        let mut live = 1;
        let mut dead = Vec::new();
        for (id, beat) in &members {
            if *id == self.identity {
                continue;
            }
            let seen = observe(
                &mut self.observed,
                &format!("member/{id}"),
                beat.to_string(),
                now,
            );
            if now.saturating_duration_since(seen) <= ttl {
                live += 1;
            } else {
                dead.push(id.clone());
            }
        }
        for id in dead {
            members.remove(&id);
        }
        self.heartbeat += 1;
        members.insert(self.identity.clone(), self.heartbeat);
        let mut l = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec::default()),
        });
        l.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                MEMBERS_ANNOTATION.to_string(),
                serde_json::to_string(&members).unwrap_or_default(),
            );
        match self.put(&name, l).await {
            Ok(()) | Err(LeaderError::Conflict(_)) => Ok(live),
            Err(e) => Err(e),
        }
    }

    /// One round: observe every Lease, then renew, release or acquire.
    pub async fn round(&mut self) -> Result<(), LeaderError> {
        let now = Instant::now();
        let n = self.shards();
        let live = if n > 1 { self.members(now).await? } else { 1 };
        let mut leases = Vec::with_capacity(n);
        let mut views = Vec::with_capacity(n);
        for i in 0..n {
            let name = self.lease_name(i);
            let lease = self.get(&name).await?;
            let spec = lease
                .as_ref()
                .and_then(|l| l.spec.clone())
                .unwrap_or_default();
            let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
            let record = format!(
                "{:?}/{:?}",
                holder,
                spec.renew_time.as_ref().map(|t| t.0.to_string())
            );
            let seen = observe(&mut self.observed, &format!("lease/{name}"), record, now);
            let duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.cfg.lease_duration);
            let expired = holder.as_deref() != Some(self.identity.as_str())
                && now.saturating_duration_since(seen) > duration;
            views.push(ShardView { holder, expired });
            leases.push(lease);
        }
        let plans = plan(&self.identity, &views, live);
        for (i, p) in plans.into_iter().enumerate() {
            let name = self.lease_name(i);
            let lease = leases[i].take();
            let result = match p {
                Plan::Leave => {
                    self.renewed[i] = None;
                    Ok(())
                }
                Plan::Renew | Plan::Acquire => {
                    let acquiring = p == Plan::Acquire;
                    // The deadline counts from before the write: others may
                    // see the renewal as early as that.
                    let before = Instant::now();
                    let r = self.claim(&name, lease, acquiring).await;
                    if r.is_ok() {
                        self.renewed[i] = Some(before);
                        if acquiring {
                            tracing::info!(lease = %name, identity = %self.identity, "acquired lease");
                        }
                    }
                    r
                }
                Plan::Release => {
                    self.renewed[i] = None;
                    self.leadership.revoke(i);
                    tracing::info!(lease = %name, "releasing lease beyond this replica's fair share");
                    self.release(&name, lease).await
                }
            };
            if let Err(e) = result
                && !matches!(e, LeaderError::Conflict(_))
            {
                tracing::warn!(lease = %name, error = %e, "lease update failed");
            }
        }
        self.publish();
        Ok(())
    }

    /// Reflect our holdings into the shared [`Leadership`]: a shard counts as
    /// held only while its last renewal is within `renew_deadline`.
    fn publish(&self) {
        for (i, r) in self.renewed.iter().enumerate() {
            match r {
                Some(t) => self.leadership.grant(i, *t + self.cfg.renew_deadline),
                None => self.leadership.revoke(i),
            }
        }
        self.metrics.leader.set(i64::from(self.leadership.any()));
    }

    async fn claim(
        &self,
        name: &str,
        lease: Option<Lease>,
        acquiring: bool,
    ) -> Result<(), LeaderError> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let mut l = lease.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            spec: Some(LeaseSpec::default()),
        });
        let spec = l.spec.get_or_insert_with(LeaseSpec::default);
        if acquiring {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.cfg.lease_duration.as_secs()).unwrap_or(15));
        spec.renew_time = Some(now);
        self.put(name, l).await
    }

    async fn release(&self, name: &str, lease: Option<Lease>) -> Result<(), LeaderError> {
        let Some(mut l) = lease else { return Ok(()) };
        if let Some(spec) = l.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        self.put(name, l).await
    }

    /// Give back everything we hold (on shutdown), so another replica can
    /// take over at once instead of waiting for the Lease to expire.
    pub async fn release_all(&mut self) {
        for i in 0..self.shards() {
            self.leadership.revoke(i);
            let name = self.lease_name(i);
            if let Ok(Some(l)) = self.get(&name).await
                && l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                    == Some(self.identity.as_str())
            {
                let _ = self.release(&name, Some(l)).await;
            }
        }
        self.metrics.leader.set(0);
    }

    /// Run rounds every `retry_period` until `stop` turns true, then release.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.cfg.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => break,
            }
            // A hung API server must not hold the round forever; what we
            // could not renew lapses by itself at its deadline.
            match tokio::time::timeout(self.cfg.renew_deadline, self.round()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "leader election round failed"),
                Err(_) => tracing::warn!("leader election round timed out"),
            }
            self.metrics.leader.set(i64::from(self.leadership.any()));
        }
        self.release_all().await;
    }
}

fn api_error(name: &str, e: kube::Error) -> LeaderError {
    match e {
        kube::Error::Api(s) => LeaderError::Api {
            name: name.to_string(),
            reason: format!("{} ({})", s.message, s.code),
        },
        other => LeaderError::Client(other.to_string()),
    }
}

/// This process's identity: `$POD_NAME` when set (the chart sets it), else
/// the host name, plus a random suffix so two processes on one host differ.
pub fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "qscale".to_string());
    format!("{base}-{:08x}", rand::random::<u32>())
}

/// The Lease namespace: configured, else `$POD_NAMESPACE`, else `default`.
pub fn namespace(cfg: &LeaderElectionConfig) -> String {
    cfg.namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(holder: Option<&str>, expired: bool) -> ShardView {
        ShardView {
            holder: holder.map(str::to_string),
            expired,
        }
    }

    #[test]
    fn fair_share_rounds_up() {
        assert_eq!(fair_share(1, 2), 1);
        assert_eq!(fair_share(6, 3), 2);
        assert_eq!(fair_share(7, 3), 3);
        assert_eq!(fair_share(3, 0), 3);
    }

    #[test]
    fn a_lone_replica_takes_every_free_shard() {
        let shards = vec![v(None, false), v(Some(""), false), v(Some("b"), true)];
        assert_eq!(plan("a", &shards, 1), vec![Plan::Acquire; 3]);
    }

    #[test]
    fn live_shards_of_others_are_left_alone() {
        let shards = vec![v(Some("b"), false), v(None, false)];
        assert_eq!(plan("a", &shards, 2), vec![Plan::Leave, Plan::Acquire]);
    }

    #[test]
    fn a_replica_above_its_share_releases_the_extra() {
        let shards = vec![
            v(Some("a"), false),
            v(Some("a"), false),
            v(Some("a"), false),
        ];
        // Three replicas are live: a keeps one and gives two back.
        assert_eq!(
            plan("a", &shards, 3),
            vec![Plan::Renew, Plan::Release, Plan::Release]
        );
    }

    #[test]
    fn a_replica_at_its_share_acquires_nothing_more() {
        let shards = vec![
            v(Some("a"), false),
            v(None, false),
            v(None, false),
            v(Some("a"), false),
        ];
        assert_eq!(
            plan("a", &shards, 2),
            vec![Plan::Renew, Plan::Leave, Plan::Leave, Plan::Renew]
        );
    }

    #[test]
    fn lease_names_carry_the_shard_index_only_when_sharded() {
        assert_eq!(shard_lease_name("qscale", 0, 1), "qscale");
        assert_eq!(shard_lease_name("qscale", 2, 3), "qscale-2");
    }
}
