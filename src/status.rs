//! What each scaler last saw and decided, for /status, /readyz and `once`.
//!
//! The control loop writes one [`ScalerStatus`] per poll, through the
//! scaler's own [`StatusSlot`]; the HTTP handlers find slots by name and
//! read them. Plain locks suffice: a write is a struct copy, a read is a
//! clone for serialization, and neither ever waits on I/O.
//!
//! Each scaler's [`Timeline`] (its recent history) is kept beside its
//! status, not in it: /status need not clone an hour of history on every
//! read, and a reload that restarts a scaler (and so resets its status)
//! keeps its history, as it keeps its policy state.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::contract::{Replicas, Sample};
use crate::policy::{Proposal, QueueDecision, Reason};
use crate::timeline::{History, Poll, Timeline};

/// An error a scaler hit, as /status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorStatus {
    /// `sample`, `target` or `actuate`.
    pub phase: &'static str,
    /// The bounded metric label (`timeout`, `not_found`, ...).
    pub label: &'static str,
    /// One line that says what to fix.
    pub message: String,
    /// Unix seconds.
    pub at: f64,
}

/// The last replica change qscale made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionStatus {
    pub from: u32,
    pub to: u32,
    /// Unix seconds.
    pub at: f64,
    pub reasons: Vec<Reason>,
}

/// One queue of a scaler that drains several, as /status shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStatus {
    pub name: String,
    /// The queue's source kind.
    pub source: &'static str,
    /// What this queue asked for at the last decision.
    pub decision: Option<QueueDecision>,
    /// Its last sample.
    pub sample: Option<Sample>,
    /// Its last sample's error, until it samples again.
    pub error: Option<ErrorStatus>,
}

/// One scaler's state, as /status serializes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalerStatus {
    pub name: String,
    pub source: &'static str,
    pub target: &'static str,
    pub poll_interval_seconds: f64,
    pub dry_run: bool,
    /// Paused by config or by the target's `qscale.io/paused` annotation.
    pub paused: bool,
    /// `config` or `annotation` when paused.
    pub paused_by: Option<&'static str>,
    /// Whether this process may actuate this scaler (leader election).
    pub leader: bool,
    /// Unix seconds of the last completed poll.
    pub last_poll: Option<f64>,
    /// Unix seconds of the last poll whose sample and target read succeeded.
    pub last_success: Option<f64>,
    pub sample: Option<Sample>,
    pub current: Option<Replicas>,
    pub desired: Option<u32>,
    pub reasons: Vec<Reason>,
    pub proposals: Vec<Proposal>,
    /// With several queues (`sources`): each queue's sample, proposal and
    /// error. `sample`, `oldest_age_seconds` and the rates above are then
    /// the pool's: totals, and the oldest age among the queues.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueStatus>,
    pub arrival_rate: Option<f64>,
    pub seconds_per_message: Option<f64>,
    /// Messages per second arriving in the dead-letter queue.
    pub dead_letter_rate: Option<f64>,
    /// Age of the oldest waiting message the policy used (seconds):
    /// the source's measurement, or qscale's estimate.
    pub oldest_age_seconds: Option<f64>,
    /// `oldest_age_seconds` is qscale's estimate from the queue's history.
    pub oldest_age_estimated: bool,
    pub fallback_active: bool,
    pub consecutive_failures: u32,
    pub last_error: Option<ErrorStatus>,
    pub last_action: Option<ActionStatus>,
    /// Things the user should know: another controller scales the same
    /// target, a source cannot see part of the queue, ...
    pub warnings: Vec<String>,
    #[serde(skip)]
    pub started: Option<Instant>,
    #[serde(skip)]
    pub last_success_mono: Option<Instant>,
    #[serde(skip)]
    pub poll_interval: Duration,
    /// The last poll read the target and decided. A fallback only makes a
    /// scaler ready while it can act: with the target unreadable it is as
    /// blind as any other failing scaler, whatever the last decision said.
    #[serde(skip)]
    pub last_poll_decided: bool,
}

impl ScalerStatus {
    pub fn new(
        name: &str,
        source: &'static str,
        target: &'static str,
        poll_interval: Duration,
    ) -> ScalerStatus {
        ScalerStatus {
            name: name.to_string(),
            source,
            target,
            poll_interval_seconds: poll_interval.as_secs_f64(),
            dry_run: false,
            paused: false,
            paused_by: None,
            leader: true,
            last_poll: None,
            last_success: None,
            sample: None,
            current: None,
            desired: None,
            reasons: Vec::new(),
            proposals: Vec::new(),
            queues: Vec::new(),
            arrival_rate: None,
            seconds_per_message: None,
            dead_letter_rate: None,
            oldest_age_seconds: None,
            oldest_age_estimated: false,
            fallback_active: false,
            consecutive_failures: 0,
            last_error: None,
            last_action: None,
            warnings: Vec::new(),
            started: Some(Instant::now()),
            last_success_mono: None,
            poll_interval,
            last_poll_decided: false,
        }
    }

    /// Ready when a poll succeeded within three poll intervals, or when the
    /// scaler is in its fallback (a state it explains in /status) and its
    /// last poll could still read the target.
    pub fn ready(&self, now: Instant) -> Result<(), String> {
        if self.fallback_active && self.last_poll_decided {
            return Ok(());
        }
        let limit = self.poll_interval * 3;
        match self.last_success_mono {
            Some(t) if now.saturating_duration_since(t) <= limit => Ok(()),
            Some(t) => Err(format!(
                "{}: last successful poll {}s ago (limit {}s){}",
                self.name,
                now.saturating_duration_since(t).as_secs(),
                limit.as_secs(),
                self.error_suffix()
            )),
            None => Err(format!(
                "{}: no successful poll yet{}",
                self.name,
                self.error_suffix()
            )),
        }
    }

    fn error_suffix(&self) -> String {
        self.last_error
            .as_ref()
            .map(|e| format!("; last error: {}", e.message))
            .unwrap_or_default()
    }
}

/// Every scaler's status and timeline, by name.
///
/// Each scaler writes through its own [`StatusSlot`], which [`put`]
/// returns, so a poll neither searches the map by name nor takes a lock
/// that other scalers' polls also need: with thousands of scalers, three
/// searches a poll (string compares on keys scattered over the heap) and
/// one board-wide write lock were a fifth of the daemon's CPU time.
///
/// [`put`]: StatusBoard::put
#[derive(Debug, Default)]
pub struct StatusBoard {
    slots: RwLock<BTreeMap<String, StatusSlot>>,
}

/// One scaler's place on the board: its status and its timeline.
///
/// A slot removed from the board (its scaler stopped by a reload) can
/// still be written by a poll that was under way, and nothing reads what
/// it writes.
#[derive(Debug, Clone)]
pub struct StatusSlot(Arc<Slot>);

#[derive(Debug)]
struct Slot {
    status: Mutex<ScalerStatus>,
    timeline: Mutex<Timeline>,
}

/// The value behind a lock. Every write to a status or timeline is a
/// plain assignment that leaves it whole, so one poisoned by a panic
/// elsewhere is still right to read.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StatusSlot {
    /// Change the scaler's status in place.
    pub fn update(&self, f: impl FnOnce(&mut ScalerStatus)) {
        f(&mut lock(&self.0.status));
    }

    /// Add a poll to the scaler's timeline.
    pub fn record_poll(&self, poll: &Poll) {
        lock(&self.0.timeline).push(poll);
    }

    fn status(&self) -> ScalerStatus {
        lock(&self.0.status).clone()
    }
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    /// Set a scaler's status (a new scaler, or one restarted by a reload,
    /// which keeps its timeline) and return the slot its polls write to.
    pub fn put(&self, s: ScalerStatus) -> StatusSlot {
        let mut m = match self.slots.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(slot) = m.get(&s.name) {
            slot.update(|st| *st = s);
            return slot.clone();
        }
        let name = s.name.clone();
        let slot = StatusSlot(Arc::new(Slot {
            status: Mutex::new(s),
            timeline: Mutex::new(Timeline::new()),
        }));
        m.insert(name, slot.clone());
        slot
    }

    fn slot(&self, name: &str) -> Option<StatusSlot> {
        self.slots.read().ok()?.get(name).cloned()
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.slots.write() {
            m.remove(name);
        }
    }

    /// A known scaler's history (empty before its first poll).
    pub fn history(&self, name: &str) -> Option<History> {
        let slot = self.slot(name)?;
        let view = lock(&slot.0.timeline).view(name);
        Some(view)
    }

    pub fn get(&self, name: &str) -> Option<ScalerStatus> {
        self.slot(name).map(|s| s.status())
    }

    pub fn all(&self) -> Vec<ScalerStatus> {
        self.slots
            .read()
            .map(|m| m.values().map(StatusSlot::status).collect())
            .unwrap_or_default()
    }

    /// `Ok` when every scaler is ready, else one line per scaler that is not.
    pub fn readiness(&self, now: Instant) -> Result<(), Vec<String>> {
        let m = match self.slots.read() {
            Ok(m) => m,
            Err(_) => return Err(vec!["status board unavailable".into()]),
        };
        let problems: Vec<String> = m
            .values()
            .filter_map(|slot| lock(&slot.0.status).ready(now).err())
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Unix seconds of a wall-clock time.
pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaler_writes_through_its_slot_until_a_reload_removes_it() {
        let board = StatusBoard::new();
        let slot = board.put(ScalerStatus::new(
            "a",
            "demo",
            "demo",
            Duration::from_secs(1),
        ));
        slot.update(|s| s.desired = Some(4));
        slot.record_poll(&Poll::default());
        assert_eq!(board.get("a").and_then(|s| s.desired), Some(4));
        assert_eq!(board.history("a").map(|h| h.points.len()), Some(1));

        // A restart puts a fresh status in the same slot: the old task's
        // handle still reaches it, and the timeline is kept.
        let again = board.put(ScalerStatus::new(
            "a",
            "demo",
            "demo",
            Duration::from_secs(1),
        ));
        assert_eq!(board.get("a").and_then(|s| s.desired), None);
        slot.update(|s| s.desired = Some(5));
        assert_eq!(board.get("a").and_then(|s| s.desired), Some(5));
        again.record_poll(&Poll::default());
        assert_eq!(board.history("a").map(|h| h.points.len()), Some(2));

        // Removed, its late writes reach nobody, and a new scaler of the
        // same name starts clean.
        board.remove("a");
        slot.update(|s| s.desired = Some(6));
        slot.record_poll(&Poll::default());
        assert!(board.get("a").is_none());
        board.put(ScalerStatus::new(
            "a",
            "demo",
            "demo",
            Duration::from_secs(1),
        ));
        assert_eq!(board.get("a").and_then(|s| s.desired), None);
        assert_eq!(board.history("a").map(|h| h.points.len()), Some(0));
    }

    #[test]
    fn a_scaler_is_ready_only_after_a_recent_successful_poll_or_in_fallback() {
        let now = Instant::now();
        let mut s = ScalerStatus::new("a", "sqs", "kubernetes", Duration::from_secs(10));
        assert!(s.ready(now).is_err());
        s.last_success_mono = Some(now);
        assert!(s.ready(now + Duration::from_secs(30)).is_ok());
        let err = s.ready(now + Duration::from_secs(31)).unwrap_err();
        assert!(err.contains("last successful poll 31s ago"), "{err}");
        s.fallback_active = true;
        s.last_poll_decided = true;
        assert!(s.ready(now + Duration::from_secs(300)).is_ok());
        // A fallback that can no longer read its target acts on nothing.
        s.last_poll_decided = false;
        assert!(s.ready(now + Duration::from_secs(300)).is_err());
    }
}
