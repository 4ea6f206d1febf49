//! The queue-and-workers model, in virtual time.
//!
//! This is what both the simulator (`qscale simulate`) and the demo source
//! and target run: a queue that messages enter, and a set of worker replicas
//! that take messages one at a time and spend `seconds_per_message` on each.
//!
//! Time advances in whole seconds ([`Model::step`]); within a second, work
//! is an exact event simulation: each worker takes the oldest visible
//! message as soon as it is free (a min-heap of the workers' free times), so
//! a burst of N messages on k workers drains in exactly N·s/k seconds.
//! Messages that arrive in second t arrive at its start ([`Model::arrive`])
//! or spread evenly over it ([`Model::arrive_spread`], what the simulator
//! uses: a real producer does not send a second's messages at one instant,
//! and a poll at the start of the second sees none of them). An idle worker
//! either takes a message the instant it arrives (long polling) or looks
//! again every `pickup_interval` (a worker that sleeps between empty
//! receives).
//!
//! What it counts matches SQS: a message is *visible* until a worker
//! receives it, then *in flight* until the worker finishes and deletes it.
//! The age of the oldest visible message is exact because the visible queue
//! is a FIFO of `(arrival time, count)` batches, which also keeps a 24 h
//! trace with millions of messages cheap (one batch per second, not one
//! entry per message).
//!
//! Replicas are pods, not numbers: a new one becomes ready only after
//! `startup_delay`; asking for more than `max_replicas` starts no more than
//! that; scaling down removes pods that are still starting first, then idle
//! ones, and a busy pod finishes its message before it goes (graceful
//! shutdown), so no message is lost or redelivered.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, VecDeque};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// How the workers behave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WorkerParams {
    /// Seconds one worker spends on one message (> 0).
    pub seconds_per_message: f64,
    /// Each message's service time is `seconds_per_message · (1 ± jitter)`,
    /// uniformly; 0 for none. At most 1.
    pub jitter: f64,
    /// Seconds from asking for a replica to it taking work.
    pub startup_delay: f64,
    /// Replicas above this never start.
    pub max_replicas: u32,
    /// Seed of the jitter's random generator.
    pub seed: u64,
    /// An idle worker that found the queue empty looks again after this
    /// many seconds; 0 takes a message the instant it arrives (long
    /// polling). A worker that just finished looks again at once.
    pub pickup_interval: f64,
}

impl Default for WorkerParams {
    fn default() -> Self {
        WorkerParams {
            seconds_per_message: 1.0,
            jitter: 0.0,
            startup_delay: 0.0,
            max_replicas: u32::MAX,
            seed: 0,
            pickup_interval: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Worker {
    /// When it takes its first message.
    ready_at: f64,
    /// When its current message is done (<= now when idle).
    busy_until: f64,
    /// Leaving: takes no new message, gone once `busy_until` has passed.
    terminating: bool,
}

/// Messages that arrived together and still wait: at one instant
/// (`spread` 0) or evenly over `spread` seconds from `arrived`, the k-th of
/// `total` at `arrived + spread * (k + 0.5) / total`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Batch {
    arrived: f64,
    count: u64,
    spread: f64,
    total: u64,
}

impl Batch {
    /// When the first message still waiting arrived.
    fn front_arrival(&self) -> f64 {
        if self.spread == 0.0 || self.total == 0 {
            return self.arrived;
        }
        let k = (self.total - self.count) as f64;
        self.arrived + self.spread * (k + 0.5) / self.total as f64
    }
}

/// A histogram of how long messages waited before a worker took them, in
/// tenths of a second.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WaitHistogram {
    buckets: Vec<u64>,
    count: u64,
}

/// Width of one histogram bucket, seconds.
const BUCKET: f64 = 0.1;
/// `1 / BUCKET`, exactly.
const BUCKETS_PER_SECOND: f64 = 10.0;

impl WaitHistogram {
    /// Record `n` messages that waited `wait` seconds.
    pub fn record(&mut self, wait: f64, n: u64) {
        if n == 0 {
            return;
        }
        let i = (wait.max(0.0) / BUCKET + 1e-9).floor() as usize;
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, 0);
        }
        self.buckets[i] += n;
        self.count += n;
    }

    /// Messages recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The wait `q` (0..=1) of messages waited at most, to 0.1 s (the
    /// bucket's lower edge); 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // Divide, not multiply by 0.1: 671 x 0.1 is 67.10000000000001.
                return i as f64 / BUCKETS_PER_SECOND;
            }
        }
        (self.buckets.len().saturating_sub(1)) as f64 / BUCKETS_PER_SECOND
    }
}

/// What the model looks like at the current instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Seconds since the start.
    pub now: u64,
    /// Messages waiting to be received.
    pub visible: u64,
    /// Messages a worker holds.
    pub in_flight: u64,
    /// Age of the oldest visible message, seconds (0 when none).
    pub oldest_age: f64,
    /// Replicas asked for.
    pub desired: u32,
    /// Pods that exist and are not leaving (starting or ready), what a
    /// Deployment's `status.replicas` shows.
    pub pods: u32,
    /// Pods that take work.
    pub ready: u32,
    /// Pods that cost money now: starting, ready and still-finishing.
    pub billed: u32,
}

/// A free time, ordered totally (no NaNs occur).
#[derive(Debug, Clone, Copy, PartialEq)]
struct At(f64);

impl Eq for At {}
impl PartialOrd for At {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for At {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The queue and its workers.
#[derive(Debug)]
pub struct Model {
    params: WorkerParams,
    now: u64,
    queue: VecDeque<Batch>,
    visible: u64,
    workers: Vec<Worker>,
    desired: u32,
    arrived_total: u64,
    waits: WaitHistogram,
    /// Whether `waits` is kept (see [`Model::without_waits`]).
    record_waits: bool,
    /// The service-time jitter's generator, made on its first draw from
    /// `params.seed` (the same draws as one made with the model): a model
    /// without jitter, each demo queue's by default, does not carry its
    /// 300-odd bytes.
    rng: Option<Box<StdRng>>,
    heap: BinaryHeap<Reverse<(At, usize)>>,
}

impl Model {
    /// An empty queue at time 0 with `initial` replicas already ready.
    pub fn new(params: WorkerParams, initial: u32) -> Model {
        let mut m = Model {
            params,
            now: 0,
            queue: VecDeque::new(),
            visible: 0,
            workers: Vec::new(),
            desired: 0,
            arrived_total: 0,
            waits: WaitHistogram::default(),
            record_waits: true,
            rng: None,
            heap: BinaryHeap::new(),
        };
        m.desired = initial;
        let n = initial.min(params.max_replicas);
        m.workers = (0..n)
            .map(|_| Worker {
                ready_at: 0.0,
                busy_until: 0.0,
                terminating: false,
            })
            .collect();
        m
    }

    /// The same model without the waits histogram, for a caller that
    /// never reads it (the daemon's demo queues): the histogram has a
    /// bucket per 0.1 s of the longest wait, so a long backlog grows it for
    /// as long as the queue lives (about 2 KB per demo queue within a minute
    /// of issue 14's footprint run).
    pub fn without_waits(mut self) -> Model {
        self.record_waits = false;
        self
    }

    pub fn params(&self) -> &WorkerParams {
        &self.params
    }

    /// Change how workers behave from now on (the demo target does this
    /// when its config is reloaded).
    pub fn set_params(&mut self, params: WorkerParams) {
        self.params = params;
    }

    /// Seconds since the start.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Messages that have arrived so far.
    pub fn arrived_total(&self) -> u64 {
        self.arrived_total
    }

    /// Waits of the messages workers took so far (none when made
    /// [`without_waits`](Model::without_waits)).
    pub fn waits(&self) -> &WaitHistogram {
        &self.waits
    }

    /// `n` messages arrive now.
    pub fn arrive(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        let now = self.now as f64;
        match self.queue.back_mut() {
            Some(b) if b.arrived == now && b.spread == 0.0 => {
                b.count += n;
                b.total += n;
            }
            _ => self.queue.push_back(Batch {
                arrived: now,
                count: n,
                spread: 0.0,
                total: n,
            }),
        }
        self.visible += n;
        self.arrived_total += n;
    }

    /// `n` messages arrive evenly spread over the coming second. Until
    /// [`Model::step`] has run they count as visible already; observe
    /// before arriving (as the simulator's scalers do) to see the queue as
    /// a poll at the start of the second would.
    pub fn arrive_spread(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.queue.push_back(Batch {
            arrived: self.now as f64,
            count: n,
            spread: 1.0,
            total: n,
        });
        self.visible += n;
        self.arrived_total += n;
    }

    /// The state now.
    pub fn observe(&self) -> Observation {
        let now = self.now as f64;
        let mut in_flight = 0;
        let mut pods = 0;
        let mut ready = 0;
        for w in &self.workers {
            if w.busy_until > now {
                in_flight += 1;
            }
            if !w.terminating {
                pods += 1;
                if w.ready_at <= now {
                    ready += 1;
                }
            }
        }
        Observation {
            now: self.now,
            visible: self.visible,
            in_flight,
            oldest_age: self
                .queue
                .front()
                .map_or(0.0, |b| (now - b.front_arrival()).max(0.0)),
            desired: self.desired,
            pods,
            ready,
            billed: self.workers.len() as u32,
        }
    }

    /// Ask for `n` replicas now (at most `max_replicas` start).
    pub fn set_replicas(&mut self, n: u32) {
        self.desired = n;
        let want = n.min(self.params.max_replicas) as usize;
        let now = self.now as f64;
        let mut have = self.workers.iter().filter(|w| !w.terminating).count();
        while have < want {
            // Reuse a leaving pod before starting a new one: it is warm.
            if let Some(w) = self.workers.iter_mut().find(|w| w.terminating) {
                w.terminating = false;
            } else {
                self.workers.push(Worker {
                    ready_at: now + self.params.startup_delay,
                    busy_until: now,
                    terminating: false,
                });
            }
            have += 1;
        }
        while have > want {
            // Starting pods go first (newest first), then idle, then busy.
            let pick = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| !w.terminating)
                .max_by(|(_, a), (_, b)| {
                    let rank = |w: &Worker| {
                        if w.ready_at > now {
                            (2, w.ready_at)
                        } else if w.busy_until <= now {
                            (1, 0.0)
                        } else {
                            (0, -w.busy_until)
                        }
                    };
                    let (ra, ta) = rank(a);
                    let (rb, tb) = rank(b);
                    ra.cmp(&rb).then(ta.total_cmp(&tb))
                })
                .map(|(i, _)| i);
            let Some(i) = pick else { break };
            if self.workers[i].busy_until > now && self.workers[i].ready_at <= now {
                self.workers[i].terminating = true;
            } else {
                self.workers.swap_remove(i);
            }
            have -= 1;
        }
    }

    fn service_time(&mut self) -> f64 {
        let s = self.params.seconds_per_message;
        if self.params.jitter > 0.0 {
            let seed = self.params.seed;
            let rng = self
                .rng
                .get_or_insert_with(|| Box::new(StdRng::seed_from_u64(seed)));
            let u: f64 = rng.random::<f64>();
            (s * (1.0 + self.params.jitter * (2.0 * u - 1.0))).max(1e-6)
        } else {
            s
        }
    }

    /// Let the workers work through the current second; time advances by 1.
    pub fn step(&mut self) {
        let t0 = self.now as f64;
        let t1 = t0 + 1.0;
        self.workers
            .retain(|w| !(w.terminating && w.busy_until <= t0));
        if self.visible > 0 {
            let mut heap = std::mem::take(&mut self.heap);
            heap.clear();
            for (i, w) in self.workers.iter().enumerate() {
                let free = w.busy_until.max(w.ready_at).max(t0);
                // `<=`: a worker that finishes (or becomes ready) exactly at
                // the end of the second takes its next message then, so an
                // observation at that instant sees it in flight, as a real
                // worker that receives again the moment it has deleted.
                if !w.terminating && free <= t1 {
                    heap.push(Reverse((At(free), i)));
                }
            }
            let pickup = self.params.pickup_interval;
            while self.visible > 0 {
                let Some(Reverse((At(free), i))) = heap.pop() else {
                    break;
                };
                let Some(front) = self.queue.front_mut() else {
                    break;
                };
                let arrived = front.front_arrival();
                // A message that arrives after the worker went idle is seen
                // at once (long polling) or at the worker's next look.
                let taken = if arrived <= free {
                    free
                } else if pickup > 0.0 {
                    free + ((arrived - free) / pickup).ceil() * pickup
                } else {
                    arrived
                };
                if taken > t1 {
                    // Not this second: the worker looks again in the next.
                    continue;
                }
                front.count -= 1;
                if front.count == 0 {
                    self.queue.pop_front();
                }
                self.visible -= 1;
                if self.record_waits {
                    self.waits.record(taken - arrived, 1);
                }
                let done = taken + self.service_time();
                self.workers[i].busy_until = done;
                if done <= t1 {
                    heap.push(Reverse((At(done), i)));
                }
            }
            self.heap = heap;
        }
        self.now += 1;
    }

    /// Count the messages still waiting as if they were taken now, so a run
    /// that never drains its queue cannot hide those waits.
    pub fn record_unfinished_waits(&mut self) {
        let now = self.now as f64;
        if !self.record_waits {
            return;
        }
        for b in &self.queue {
            self.waits.record(now - b.arrived, b.count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(s: f64, delay: f64) -> WorkerParams {
        WorkerParams {
            seconds_per_message: s,
            startup_delay: delay,
            ..WorkerParams::default()
        }
    }

    #[test]
    fn spread_arrivals_are_taken_as_they_come() {
        let mut m = Model::new(params(0.1, 0.0), 1);
        m.arrive_spread(5);
        m.step();
        // At 0.1, 0.3, ..., 0.9: each taken the instant it arrives.
        assert_eq!(m.observe().visible, 0);
        assert_eq!(m.waits().count(), 5);
        assert_eq!(m.waits().quantile(1.0), 0.0);
    }

    #[test]
    fn an_idle_worker_that_sleeps_between_receives_takes_a_message_at_its_next_look() {
        let mut m = Model::new(
            WorkerParams {
                pickup_interval: 0.5,
                ..params(0.1, 0.0)
            },
            1,
        );
        // Arrivals at 0.25 and 0.75. The worker looks at 0 and 0.5 (takes
        // the first, done at 0.6); its next look after the second arrival
        // falls in the next second, whose start it takes it at.
        m.arrive_spread(2);
        m.step();
        assert_eq!(m.observe().visible, 1);
        assert_eq!(m.observe().oldest_age, 0.25);
        m.step();
        assert_eq!(m.observe().visible, 0);
        assert_eq!(m.waits().count(), 2);
        // Both waited 0.25 s (the 0.2 s bucket).
        assert_eq!(m.waits().quantile(0.0), 0.2);
        assert_eq!(m.waits().quantile(1.0), 0.2);
    }

    #[test]
    fn an_idle_worker_takes_a_message_at_once_and_holds_it_for_its_service_time() {
        let mut m = Model::new(params(2.5, 0.0), 1);
        m.arrive(1);
        let o = m.observe();
        assert_eq!((o.visible, o.in_flight), (1, 0));
        m.step();
        assert_eq!((m.observe().visible, m.observe().in_flight), (0, 1));
        m.step();
        assert_eq!(m.observe().in_flight, 1);
        m.step();
        assert_eq!(m.observe().in_flight, 0, "done at 2.5 s");
        assert_eq!(m.waits().count(), 1);
        assert_eq!(m.waits().quantile(1.0), 0.0);
    }

    #[test]
    fn new_replicas_take_work_only_after_the_startup_delay() {
        let mut m = Model::new(params(1.0, 5.0), 0);
        m.arrive(100);
        m.set_replicas(2);
        let o = m.observe();
        assert_eq!((o.desired, o.pods, o.ready, o.billed), (2, 2, 0, 2));
        for _ in 0..4 {
            m.step();
        }
        assert_eq!(m.observe().visible, 100);
        assert_eq!(m.observe().ready, 0);
        m.step();
        // Ready at 5 s, each takes a message at that instant.
        assert_eq!(m.observe().ready, 2);
        assert_eq!(m.observe().visible, 98);
        assert_eq!(m.observe().in_flight, 2);
        m.step();
        assert_eq!(m.observe().visible, 96);
    }

    #[test]
    fn replicas_above_the_maximum_never_start() {
        let mut m = Model::new(
            WorkerParams {
                max_replicas: 3,
                ..params(1.0, 0.0)
            },
            1,
        );
        m.set_replicas(10);
        let o = m.observe();
        assert_eq!((o.desired, o.pods), (10, 3));
    }

    #[test]
    fn scaling_down_removes_starting_then_idle_pods_and_lets_busy_ones_finish() {
        let mut m = Model::new(params(10.0, 0.0), 2);
        m.arrive(1);
        m.step(); // one worker busy until t=10, one idle
        m.set_replicas(3); // a third starts (ready at once: delay 0)
        m.set_replicas(1);
        let o = m.observe();
        assert_eq!((o.pods, o.in_flight, o.billed), (1, 1, 1), "{o:?}");
        m.set_replicas(0);
        let o = m.observe();
        assert_eq!((o.pods, o.in_flight, o.billed), (0, 1, 1), "{o:?}");
        for _ in 0..9 {
            m.step();
        }
        let o = m.observe();
        assert_eq!((o.now, o.in_flight, o.billed), (10, 0, 1), "done at t=10");
        m.step();
        assert_eq!(m.observe().billed, 0);
    }

    #[test]
    fn jitter_varies_service_times_around_the_mean() {
        let mut m = Model::new(
            WorkerParams {
                jitter: 0.5,
                seed: 7,
                ..params(1.0, 0.0)
            },
            10,
        );
        m.arrive(10_000);
        let mut t = 0;
        while m.observe().visible + m.observe().in_flight > 0 {
            m.step();
            t += 1;
        }
        // Without jitter: exactly 1000 s. With a symmetric jitter the mean
        // holds, give or take the noise of 10 000 draws.
        assert!((980..=1020).contains(&t), "{t}");
    }

    #[test]
    fn the_wait_histogram_reports_quantiles_to_a_tenth_of_a_second() {
        let mut h = WaitHistogram::default();
        h.record(0.05, 50);
        h.record(3.04, 45);
        h.record(12.0, 5);
        assert_eq!(h.quantile(0.5), 0.0);
        assert!((h.quantile(0.95) - 3.0).abs() < 1e-9);
        assert!((h.quantile(1.0) - 12.0).abs() < 1e-9);
        assert_eq!(WaitHistogram::default().quantile(0.5), 0.0);
    }

    #[test]
    fn a_model_without_waits_works_the_same_and_keeps_no_histogram() {
        let mut with = Model::new(params(2.0, 0.0), 1);
        let mut without = Model::new(params(2.0, 0.0), 1).without_waits();
        for m in [&mut with, &mut without] {
            m.arrive(30);
            for _ in 0..20 {
                m.step();
            }
            m.record_unfinished_waits();
        }
        assert_eq!(with.observe(), without.observe());
        assert!(with.waits().count() > 0);
        assert_eq!(without.waits().count(), 0);
        assert_eq!(without.waits(), &WaitHistogram::default());
    }
}
