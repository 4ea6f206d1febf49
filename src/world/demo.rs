//! The demo world: simulated queues that run in real time.
//!
//! `source.kind = "demo"` and `target.kind = "demo"` let qscale run for real
//! (control loop, metrics, /status, logs) on a laptop with no cloud account.
//! Both sides of a scaler must see the *same* queue: the source samples it,
//! the target resizes the workers that drain it. They meet here, in a
//! registry keyed by the queue name, one per process (the daemon keeps it
//! with its other process-wide clients), so building the source and the target in any order,
//! or rebuilding them on a config reload, finds the same queue.
//!
//! Each queue is the simulator's [`Model`], advanced lazily: whenever
//! anyone looks at it, it first catches up to the real time elapsed since
//! the queue was created (whole seconds), feeding in the arrivals of its
//! pattern second by second. Time is the daemon's [`Clock`] (tokio's, so
//! a paused tokio runtime drives the demo too; N times faster under
//! `qscale run --time-scale N`, so the simulated queue plays the same
//! compressed trace the daemon's policy sees); every method also has an
//! `_at` form that takes the time as an argument, which the tests use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::clock::Clock;

use super::model::{Model, Observation, WorkerParams};
use super::trace::{Arrivals, Pattern};
use crate::validate::Problems;

/// The queue name demo sources and targets use unless told otherwise.
pub fn default_queue() -> String {
    "demo".to_string()
}

/// A demo queue name: what a metric label and a log line can carry as is.
pub fn validate_queue_name(p: &mut Problems, path: &str, name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        p.push(path, "must be 1-64 letters, digits, '-', '_' or '.'");
    }
}

/// All demo queues of the process, by name. Cheap to clone (shared inside).
#[derive(Clone, Default)]
pub struct DemoWorld {
    queues: Arc<Mutex<HashMap<String, Arc<DemoQueue>>>>,
    clock: Clock,
}

impl std::fmt::Debug for DemoWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = lock(&self.queues).keys().cloned().collect();
        f.debug_struct("DemoWorld").field("queues", &names).finish()
    }
}

/// Lock, recovering from a poisoned mutex: the state is plain data that a
/// panicking holder cannot leave half-written in a way that matters here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DemoWorld {
    pub fn new() -> DemoWorld {
        DemoWorld::default()
    }

    /// A world whose queues run on `clock` (the daemon's).
    pub fn with_clock(clock: Clock) -> DemoWorld {
        DemoWorld {
            queues: Arc::default(),
            clock,
        }
    }

    /// The queue called `name`, created (empty, no workers) on first use;
    /// its clock starts then.
    pub fn queue(&self, name: &str) -> Arc<DemoQueue> {
        self.queue_at(name, self.clock.now())
    }

    /// [`DemoWorld::queue`], with the clock of a new queue starting at `now`.
    pub fn queue_at(&self, name: &str, now: Instant) -> Arc<DemoQueue> {
        lock(&self.queues)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(DemoQueue::new(now, self.clock)))
            .clone()
    }

    /// Names of the queues created so far.
    pub fn queue_names(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.queues).keys().cloned().collect();
        v.sort();
        v
    }
}

/// What the demo source reads from a queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoSnapshot {
    pub observation: Observation,
    /// Messages that have arrived since the queue was created.
    pub arrived_total: u64,
}

struct State {
    started: Instant,
    model: Model,
    arrivals: Option<(String, Arrivals)>,
    /// The next second whose arrivals are still to be fed in.
    next_arrival: u64,
    workers_attached: bool,
}

/// One simulated queue and its workers.
pub struct DemoQueue {
    state: Mutex<State>,
    clock: Clock,
}

impl DemoQueue {
    fn new(started: Instant, clock: Clock) -> DemoQueue {
        DemoQueue {
            clock,
            state: Mutex::new(State {
                started,
                // The daemon never reads the waits (the simulator does).
                model: Model::new(WorkerParams::default(), 0).without_waits(),
                arrivals: None,
                next_arrival: 0,
                workers_attached: false,
            }),
        }
    }

    /// Drive arrivals from `pattern` (the demo source does this when it is
    /// built). The same pattern again keeps its place, so a config reload
    /// does not restart the stream; a different one starts from its own
    /// second 0 now.
    pub fn attach_arrivals(&self, pattern: &Pattern) {
        self.attach_arrivals_at(pattern, self.clock.now())
    }

    pub fn attach_arrivals_at(&self, pattern: &Pattern, now: Instant) {
        let mut s = lock(&self.state);
        catch_up(&mut s, now);
        if s.arrivals.as_ref().is_some_and(|(t, _)| *t == pattern.text) {
            return;
        }
        // The pattern's second 0 is the current second, whose arrivals (of
        // the previous stream, if any) are already in: add its own now.
        let mut arrivals = pattern.arrivals();
        let first = arrivals.next().unwrap_or(0);
        s.model.arrive(first);
        s.arrivals = Some((pattern.text.clone(), arrivals));
    }

    /// Set how the workers behave (the demo target does this when it is
    /// built); the first call also starts `initial` replicas, ready at once.
    pub fn attach_workers(&self, params: WorkerParams, initial: u32) {
        self.attach_workers_at(params, initial, self.clock.now())
    }

    pub fn attach_workers_at(&self, params: WorkerParams, initial: u32, now: Instant) {
        let mut s = lock(&self.state);
        catch_up(&mut s, now);
        s.model.set_params(params);
        if !s.workers_attached {
            s.workers_attached = true;
            let startup = params.startup_delay;
            // Initial workers exist already: no start-up delay for them.
            s.model.set_params(WorkerParams {
                startup_delay: 0.0,
                ..params
            });
            s.model.set_replicas(initial);
            s.model.set_params(WorkerParams {
                startup_delay: startup,
                ..params
            });
        }
    }

    /// The queue and workers as of now.
    pub fn snapshot(&self) -> DemoSnapshot {
        self.snapshot_at(self.clock.now())
    }

    pub fn snapshot_at(&self, now: Instant) -> DemoSnapshot {
        let mut s = lock(&self.state);
        catch_up(&mut s, now);
        DemoSnapshot {
            observation: s.model.observe(),
            arrived_total: s.model.arrived_total(),
        }
    }

    /// The time on this queue's clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Ask for `n` workers now.
    pub fn set_replicas(&self, n: u32) {
        self.set_replicas_at(n, self.clock.now())
    }

    pub fn set_replicas_at(&self, n: u32, now: Instant) {
        let mut s = lock(&self.state);
        catch_up(&mut s, now);
        s.model.set_replicas(n);
    }
}

/// Advance the model to the whole second of `now`, feeding arrivals of every
/// second up to and including it.
fn catch_up(s: &mut State, now: Instant) {
    let target = now.saturating_duration_since(s.started).as_secs();
    while s.next_arrival <= target {
        while s.model.now() < s.next_arrival {
            s.model.step();
        }
        let n = s.arrivals.as_mut().and_then(|(_, a)| a.next()).unwrap_or(0);
        s.model.arrive(n);
        s.next_arrival += 1;
    }
    while s.model.now() < target {
        s.model.step();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_demo_queue_fills_in_real_time_and_its_workers_drain_it() {
        let t0 = Instant::now();
        let world = DemoWorld::new();
        let q = world.queue_at("jobs", t0);
        q.attach_arrivals_at(&Pattern::parse("constant:rate=10").unwrap(), t0);
        let snap = q.snapshot_at(t0);
        assert_eq!(snap.arrived_total, 10, "second 0's arrivals are in");
        let snap = q.snapshot_at(t0 + secs(9));
        assert_eq!(snap.arrived_total, 100);
        assert_eq!(snap.observation.visible, 100, "no workers yet");
        assert_eq!(snap.observation.oldest_age, 9.0);

        q.attach_workers_at(
            WorkerParams {
                seconds_per_message: 0.1,
                startup_delay: 5.0,
                ..WorkerParams::default()
            },
            2,
            t0 + secs(9),
        );
        // The initial workers are ready at once; at 10 msg/s each they clear
        // the 100 waiting plus 10 msg/s of arrivals in 10 s, leaving only the
        // arrivals of second 19, which arrived just now.
        let snap = q.snapshot_at(t0 + secs(19));
        assert_eq!(snap.observation.ready, 2);
        assert_eq!(snap.observation.visible, 10, "{snap:?}");
        assert_eq!(snap.observation.oldest_age, 0.0);
    }

    #[test]
    fn new_demo_workers_start_after_the_startup_delay() {
        let t0 = Instant::now();
        let q = DemoWorld::new().queue_at("q", t0);
        q.attach_workers_at(
            WorkerParams {
                startup_delay: 10.0,
                ..WorkerParams::default()
            },
            1,
            t0,
        );
        assert_eq!(q.snapshot_at(t0).observation.ready, 1, "initial: ready");
        q.set_replicas_at(3, t0 + secs(1));
        assert_eq!(q.snapshot_at(t0 + secs(10)).observation.ready, 1);
        assert_eq!(q.snapshot_at(t0 + secs(11)).observation.ready, 3);
    }

    #[test]
    fn source_and_target_meet_on_the_queue_name() {
        let world = DemoWorld::new();
        let a = world.queue("q");
        let b = world.clone().queue("q");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &world.queue("other")));
        assert_eq!(world.queue_names(), vec!["other", "q"]);
    }

    #[test]
    fn attaching_the_same_pattern_again_keeps_the_stream_going() {
        let t0 = Instant::now();
        let q = DemoWorld::new().queue_at("q", t0);
        let p = Pattern::parse("burst:size=100,at=3").unwrap();
        q.attach_arrivals_at(&p, t0);
        q.attach_arrivals_at(&p, t0 + secs(2));
        assert_eq!(q.snapshot_at(t0 + secs(4)).arrived_total, 100);
    }
}
