//! What each scaler last saw and decided, for /status, /readyz and `once`.
//!
//! The control loop writes one [`ScalerStatus`] per poll; the HTTP handlers
//! read them. A plain `RwLock` suffices: a write is a struct copy, a read is
//! a clone for serialization, and neither ever waits on I/O.
//!
//! Each scaler's [`Timeline`] (its recent history) is kept beside its
//! status, not in it: /status need not clone an hour of history on every
//! read, and a reload that restarts a scaler (and so resets its status)
//! keeps its history, as it keeps its policy state.

use std::collections::BTreeMap;
use std::sync::RwLock;
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
#[derive(Debug, Default)]
pub struct StatusBoard {
    inner: RwLock<BTreeMap<String, ScalerStatus>>,
    timelines: RwLock<BTreeMap<String, Timeline>>,
}

impl StatusBoard {
    pub fn new() -> StatusBoard {
        StatusBoard::default()
    }

    pub fn put(&self, s: ScalerStatus) {
        if let Ok(mut m) = self.inner.write() {
            m.insert(s.name.clone(), s);
        }
    }

    /// Change one scaler's status in place (no-op if it is unknown).
    pub fn update(&self, name: &str, f: impl FnOnce(&mut ScalerStatus)) {
        if let Ok(mut m) = self.inner.write()
            && let Some(s) = m.get_mut(name)
        {
            f(s);
        }
    }

    pub fn remove(&self, name: &str) {
        if let Ok(mut m) = self.inner.write() {
            m.remove(name);
        }
        if let Ok(mut m) = self.timelines.write() {
            m.remove(name);
        }
    }

    /// Add a poll to a known scaler's timeline (no-op if it is unknown, so
    /// a poll racing a reload that removed its scaler leaves nothing behind).
    pub fn record_poll(&self, name: &str, poll: &Poll) {
        let known = self.inner.read().is_ok_and(|m| m.contains_key(name));
        if !known {
            return;
        }
        if let Ok(mut m) = self.timelines.write() {
            // The name is copied only for a scaler's first poll, not every
            // poll (`entry` takes an owned key).
            match m.get_mut(name) {
                Some(t) => t.push(poll),
                None => m.entry(name.to_string()).or_default().push(poll),
            }
        }
    }

    /// A known scaler's history (empty before its first poll).
    pub fn history(&self, name: &str) -> Option<History> {
        self.inner.read().ok()?.get(name)?;
        let m = self.timelines.read().ok()?;
        Some(match m.get(name) {
            Some(t) => t.view(name),
            None => Timeline::new().view(name),
        })
    }

    pub fn get(&self, name: &str) -> Option<ScalerStatus> {
        self.inner.read().ok()?.get(name).cloned()
    }

    pub fn all(&self) -> Vec<ScalerStatus> {
        self.inner
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// `Ok` when every scaler is ready, else one line per scaler that is not.
    pub fn readiness(&self, now: Instant) -> Result<(), Vec<String>> {
        let m = match self.inner.read() {
            Ok(m) => m,
            Err(_) => return Err(vec!["status board unavailable".into()]),
        };
        let problems: Vec<String> = m.values().filter_map(|s| s.ready(now).err()).collect();
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
    fn a_timeline_outlives_a_restart_of_its_scaler_but_not_its_removal() {
        let board = StatusBoard::new();
        let st = ScalerStatus::new("a", "demo", "demo", Duration::from_secs(1));
        board.record_poll("a", &Poll::default());
        assert!(
            board.history("a").is_none(),
            "unknown scalers record nothing"
        );
        board.put(st.clone());
        board.record_poll("a", &Poll::default());
        board.put(st);
        assert_eq!(board.history("a").map(|h| h.points.len()), Some(1));
        board.remove("a");
        assert!(board.history("a").is_none());
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
