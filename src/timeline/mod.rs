//! Each scaler's recent history, bounded: what /status/<scaler>/history and
//! /chart/<scaler>.svg show.
//!
//! /status answers "what now"; an operator tuning a policy asks "what
//! happened over the last hour": how the backlog and the oldest message's
//! age moved, what qscale asked for, how many workers were ready, and why it
//! changed the count. The daemon keeps that itself so it needs no Prometheus
//! to answer, and it must cost little for a daemon running hundreds of
//! scalers, so memory is bounded by counts, not by time:
//!
//! - the last [`FULL_WINDOW`] at full resolution, at most [`FULL_POINTS`]
//!   polls (the whole window at the default 5 s poll interval; with faster
//!   polls, the newest `FULL_POINTS`);
//! - before that, one bucket per [`BUCKET`] of wall-clock time keeping the
//!   minimum, maximum and last value of the charted series (backlog, age,
//!   desired and ready replicas: a short spike is never averaged away) and
//!   the last value of the others, at most [`BUCKETS`] buckets;
//! - the last [`EVENTS`] changes of the replica count the policy decided,
//!   with their one-line reason (at most [`REASON_BYTES`] bytes), and
//!   whether qscale wrote them.
//!
//! Values are stored as `f32` (exact for counts up to 16 777 216; ages and
//! rates keep seven significant digits), unknown ones as NaN, and a poll's
//! time as an `f32` offset from the timeline's base (moved along so the
//! offsets stay within an hour: exact to a fraction of a millisecond), so
//! a point is 40 bytes. [`Timeline::heap_bytes`] gives the bound; the figure is in
//! docs/metrics.md. Time is passed in (Unix seconds, the wall clock): the
//! module is pure and tested without a daemon.

pub mod chart;

use std::collections::VecDeque;

use serde::Serialize;

/// How far back polls are kept one by one.
pub const FULL_WINDOW: f64 = 300.0;
/// Polls kept one by one at most.
pub const FULL_POINTS: usize = 60;
/// Width of a downsampled bucket, seconds.
pub const BUCKET: f64 = 60.0;
/// Buckets kept at most (half an hour of them, before the full-resolution
/// five minutes).
pub const BUCKETS: usize = 30;
/// Changes of the replica count kept at most.
pub const EVENTS: usize = 8;
/// A change's reason is cut to this many bytes (at a character boundary).
pub const REASON_BYTES: usize = 192;
/// How far, in seconds, a point's time may lie from the base it is stored
/// against before the base moves.
const REBASE: f64 = 3600.0;

/// The signal whose proposal won a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Backlog,
    Throughput,
    Age,
}

impl Signal {
    /// The signal named as in a decision's proposals.
    pub fn from_name(name: &str) -> Option<Signal> {
        match name {
            "backlog" => Some(Signal::Backlog),
            "throughput" => Some(Signal::Throughput),
            "age" => Some(Signal::Age),
            _ => None,
        }
    }

    fn code(s: Option<Signal>) -> u8 {
        match s {
            None => 0,
            Some(Signal::Backlog) => 1,
            Some(Signal::Throughput) => 2,
            Some(Signal::Age) => 3,
        }
    }

    fn decode(c: u8) -> Option<Signal> {
        match c {
            1 => Some(Signal::Backlog),
            2 => Some(Signal::Throughput),
            3 => Some(Signal::Age),
            _ => None,
        }
    }
}

/// A replica change qscale wrote in a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub from: u32,
    pub to: u32,
}

/// What one poll saw and decided. `None` is unknown (a failed sample, a
/// source that cannot measure it, a target read that failed).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Poll {
    /// Unix seconds.
    pub at: f64,
    pub visible: Option<u64>,
    pub in_flight: Option<u64>,
    /// Messages the policy counted as backlog.
    pub backlog: Option<u64>,
    /// Age of the oldest waiting message the policy used, seconds.
    pub oldest_age: Option<f64>,
    /// `oldest_age` is qscale's estimate, not the source's measurement.
    pub oldest_age_estimated: bool,
    /// Messages/s, measured or estimated.
    pub arrival_rate: Option<f64>,
    /// The count the policy decided.
    pub desired: Option<u32>,
    /// The target's count before this poll's write.
    pub current: Option<u32>,
    pub ready: Option<u32>,
    pub signal: Option<Signal>,
    /// The sample or a target call failed.
    pub error: bool,
    /// What qscale wrote, if it wrote.
    pub action: Option<Action>,
    /// The decision's reasons on one line (kept only for a change).
    pub reason: String,
}

/// The stored series, in the order of a point's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum S {
    Visible = 0,
    InFlight,
    Backlog,
    OldestAge,
    ArrivalRate,
    Desired,
    Current,
    Ready,
}
const SERIES: usize = 8;
/// The series a bucket keeps the minimum and maximum of.
const RANGED: [S; 4] = [S::Backlog, S::OldestAge, S::Desired, S::Ready];

const ESTIMATED: u8 = 1;
const ERROR: u8 = 2;
const ACTED: u8 = 4;

/// One poll as stored: 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    /// Seconds since the timeline's `base`.
    at: f32,
    v: [f32; SERIES],
    flags: u8,
    signal: u8,
}

/// A bucket of polls older than the full-resolution window: 72 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    /// Its start in whole [`BUCKET`]s since the Unix epoch (a bucket starts
    /// on one), good until the year 10 000.
    start: u32,
    /// Polls folded into it (saturating: at most one [`BUCKET`] of them).
    polls: u16,
    min: [f32; RANGED.len()],
    max: [f32; RANGED.len()],
    last: [f32; SERIES],
    /// Any poll of the bucket had the flag.
    flags: u8,
    signal: u8,
}

/// A change of the replica count the policy decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unix seconds.
    pub at: f64,
    pub from: u32,
    pub to: u32,
    /// qscale wrote it (not: dry run, paused, not the leader, or the write failed).
    pub acted: bool,
    pub reason: String,
}

/// One scaler's bounded history.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    /// Unix seconds the points' times count from.
    base: f64,
    points: VecDeque<Point>,
    buckets: VecDeque<Bucket>,
    events: VecDeque<Event>,
    last_desired: Option<u32>,
}

impl Default for Timeline {
    fn default() -> Self {
        Timeline::new()
    }
}

fn f(v: Option<f64>) -> f32 {
    v.map_or(f32::NAN, |x| x as f32)
}

fn known(x: f32) -> Option<f32> {
    (!x.is_nan()).then_some(x)
}

/// NaN-aware minimum and maximum: an unknown value never wins.
fn fmin(a: f32, b: f32) -> f32 {
    if a.is_nan() { b } else { a.min(b) }
}
fn fmax(a: f32, b: f32) -> f32 {
    if a.is_nan() { b } else { a.max(b) }
}

/// Cut `s` to at most `REASON_BYTES` bytes and a mark, at a character
/// boundary; the string's capacity is exactly its length.
fn cut(s: &str) -> String {
    if s.len() <= REASON_BYTES {
        return s.to_string();
    }
    let mut end = REASON_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + '…'.len_utf8());
    out.push_str(&s[..end]);
    out.push('…');
    out
}

/// Push onto a deque that the caller keeps under `limit` items. Its
/// capacity grows by doubling as it fills, but never past `limit`: a
/// timeline costs what it holds (a new scaler's a few points, not its whole
/// bound from the first poll), and never more than its bound.
fn push_bounded<T>(d: &mut VecDeque<T>, limit: usize, x: T) {
    if d.len() == d.capacity() {
        let want = (d.len() * 2).clamp(4, limit.max(d.len() + 1));
        d.reserve_exact(want - d.len());
    }
    d.push_back(x);
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline {
            base: 0.0,
            points: VecDeque::new(),
            buckets: VecDeque::new(),
            events: VecDeque::new(),
            last_desired: None,
        }
    }

    /// Record a poll. Polls are expected in time order; one that goes back
    /// (the wall clock was set back) is kept, and its bucket is merged into
    /// the newest one so the history stays ordered.
    pub fn push(&mut self, p: &Poll) {
        let u = |x: Option<u64>| f(x.map(|v| v as f64));
        let r = |x: Option<u32>| f(x.map(f64::from));
        let mut v = [f32::NAN; SERIES];
        v[S::Visible as usize] = u(p.visible);
        v[S::InFlight as usize] = u(p.in_flight);
        v[S::Backlog as usize] = u(p.backlog);
        v[S::OldestAge as usize] = f(p.oldest_age);
        v[S::ArrivalRate as usize] = f(p.arrival_rate);
        v[S::Desired as usize] = r(p.desired);
        v[S::Current as usize] = r(p.current);
        v[S::Ready as usize] = r(p.ready);
        let flags = if p.oldest_age_estimated && p.oldest_age.is_some() {
            ESTIMATED
        } else {
            0
        } | if p.error { ERROR } else { 0 }
            | if p.action.is_some() { ACTED } else { 0 };
        // Make room first, so no deque ever grows past its limit.
        while let Some(first) = self.points.front().copied() {
            if self.points.len() < FULL_POINTS && self.unix(&first) >= p.at - FULL_WINDOW {
                break;
            }
            self.points.pop_front();
            self.fold(first);
        }
        self.rebase_for(p.at);
        push_bounded(
            &mut self.points,
            FULL_POINTS,
            Point {
                at: (p.at - self.base) as f32,
                v,
                flags,
                signal: Signal::code(p.signal),
            },
        );
        self.record_event(p);
    }

    /// A written change is an event; so is a decided one that was not
    /// written (dry run, paused, not the leader), once, when it first
    /// differs from the previous decision.
    fn record_event(&mut self, p: &Poll) {
        let event = match (p.action, p.desired, p.current) {
            (Some(a), _, _) => Some((a.from, a.to, true)),
            (None, Some(d), Some(c)) if d != c && self.last_desired != Some(d) => {
                Some((c, d, false))
            }
            _ => None,
        };
        if p.desired.is_some() {
            self.last_desired = p.desired;
        }
        if let Some((from, to, acted)) = event {
            if self.events.len() >= EVENTS {
                self.events.pop_front();
            }
            push_bounded(
                &mut self.events,
                EVENTS,
                Event {
                    at: p.at,
                    from,
                    to,
                    acted,
                    reason: cut(&p.reason),
                },
            );
        }
    }

    /// A stored point's time, Unix seconds.
    fn unix(&self, p: &Point) -> f64 {
        self.base + f64::from(p.at)
    }

    /// Move the base to `at` when it is more than [`REBASE`] seconds away
    /// (or the timeline is empty), so every offset stays small enough for
    /// an `f32` to keep it exact to a fraction of a millisecond. The
    /// points kept span at most [`FULL_WINDOW`], unless the wall clock
    /// jumped; then their offsets lose precision, not their order.
    fn rebase_for(&mut self, at: f64) {
        if self.points.is_empty() {
            self.base = at;
            return;
        }
        if (at - self.base).abs() <= REBASE {
            return;
        }
        let old = self.base;
        self.base = at;
        for p in self.points.iter_mut() {
            p.at = (old + f64::from(p.at) - at) as f32;
        }
    }

    fn fold(&mut self, p: Point) {
        // Saturating casts: a clock before 1970 or past the range lands in
        // the first or last bucket, never wraps.
        let start = (self.unix(&p) / BUCKET).floor() as u32;
        match self.buckets.back_mut() {
            Some(b) if start <= b.start => {
                b.polls = b.polls.saturating_add(1);
                for (i, s) in RANGED.iter().enumerate() {
                    b.min[i] = fmin(b.min[i], p.v[*s as usize]);
                    b.max[i] = fmax(b.max[i], p.v[*s as usize]);
                }
                // The last known value: an unknown one does not erase it.
                for (l, x) in b.last.iter_mut().zip(p.v) {
                    if !x.is_nan() {
                        *l = x;
                    }
                }
                b.flags |= p.flags;
                if p.signal != 0 {
                    b.signal = p.signal;
                }
            }
            _ => {
                let pick = |s: S| p.v[s as usize];
                if self.buckets.len() >= BUCKETS {
                    self.buckets.pop_front();
                }
                push_bounded(
                    &mut self.buckets,
                    BUCKETS,
                    Bucket {
                        start,
                        polls: 1,
                        min: RANGED.map(pick),
                        max: RANGED.map(pick),
                        last: p.v,
                        flags: p.flags,
                        signal: p.signal,
                    },
                );
            }
        }
    }

    /// Polls kept one by one.
    pub fn full_points(&self) -> usize {
        self.points.len()
    }

    /// Buckets kept.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes this timeline holds on the heap and inline (its capacity
    /// grows as it fills, never past the limits above).
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of::<Timeline>()
            + self.points.capacity() * std::mem::size_of::<Point>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.events.capacity() * std::mem::size_of::<Event>()
            + self
                .events
                .iter()
                .map(|e| e.reason.capacity())
                .sum::<usize>()
    }

    /// The most bytes a timeline can hold: every bucket, point and event
    /// present, every reason at its longest.
    pub fn max_bytes() -> usize {
        std::mem::size_of::<Timeline>()
            + FULL_POINTS * std::mem::size_of::<Point>()
            + BUCKETS * std::mem::size_of::<Bucket>()
            + EVENTS * (std::mem::size_of::<Event>() + REASON_BYTES + '…'.len_utf8())
    }

    /// The history as /status/<scaler>/history serves it, oldest first.
    pub fn view(&self, scaler: &str) -> History {
        History {
            scaler: scaler.to_string(),
            full_resolution_seconds: FULL_WINDOW,
            bucket_seconds: BUCKET,
            buckets: self.buckets.iter().map(BucketView::of).collect(),
            points: self
                .points
                .iter()
                // To the millisecond: the offset's f32 noise hidden.
                .map(|p| PointView::of(p, (self.unix(p) * 1000.0).round() / 1000.0))
                .collect(),
            events: self.events.iter().cloned().collect(),
        }
    }
}

/// A count as JSON: an integer, or null when unknown.
fn count(x: f32) -> Option<u64> {
    known(x).map(|v| v.round().max(0.0) as u64)
}

/// A measurement as JSON, to the millisecond (f32 noise hidden).
fn measure(x: f32) -> Option<f64> {
    known(x).map(|v| (f64::from(v) * 1000.0).round() / 1000.0)
}

/// One full-resolution poll.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointView {
    /// Unix seconds.
    pub at: f64,
    pub visible: Option<u64>,
    pub in_flight: Option<u64>,
    pub backlog: Option<u64>,
    pub oldest_age_seconds: Option<f64>,
    pub oldest_age_estimated: bool,
    pub arrival_rate: Option<f64>,
    pub desired: Option<u32>,
    pub current: Option<u32>,
    pub ready: Option<u32>,
    /// The winning signal of the decision.
    pub signal: Option<Signal>,
    /// The sample or a target call failed.
    pub error: bool,
    /// qscale wrote a new count in this poll.
    pub acted: bool,
}

impl PointView {
    fn of(p: &Point, at: f64) -> PointView {
        let v = |s: S| p.v[s as usize];
        let r = |s: S| count(v(s)).map(|x| x.min(u64::from(u32::MAX)) as u32);
        PointView {
            at,
            visible: count(v(S::Visible)),
            in_flight: count(v(S::InFlight)),
            backlog: count(v(S::Backlog)),
            oldest_age_seconds: measure(v(S::OldestAge)),
            oldest_age_estimated: p.flags & ESTIMATED != 0,
            arrival_rate: measure(v(S::ArrivalRate)),
            desired: r(S::Desired),
            current: r(S::Current),
            ready: r(S::Ready),
            signal: Signal::decode(p.signal),
            error: p.flags & ERROR != 0,
            acted: p.flags & ACTED != 0,
        }
    }
}

/// The minimum, maximum and last known value of a series in a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range<T> {
    pub min: Option<T>,
    pub max: Option<T>,
    pub last: Option<T>,
}

/// The polls of one [`BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BucketView {
    /// Unix seconds at the bucket's start.
    pub start: f64,
    pub polls: u32,
    pub backlog: Range<u64>,
    pub oldest_age_seconds: Range<f64>,
    pub desired: Range<u64>,
    pub ready: Range<u64>,
    /// Last known values.
    pub visible: Option<u64>,
    pub in_flight: Option<u64>,
    pub arrival_rate: Option<f64>,
    pub current: Option<u64>,
    /// Some poll of the bucket used an estimated age.
    pub oldest_age_estimated: bool,
    /// Some poll of the bucket failed.
    pub error: bool,
    /// qscale wrote a new count in some poll of the bucket.
    pub acted: bool,
    /// The winning signal of the bucket's last decision that had one.
    pub signal: Option<Signal>,
}

impl BucketView {
    fn of(b: &Bucket) -> BucketView {
        let at = |s: S| RANGED.iter().position(|r| *r == s).unwrap_or(0);
        let counts = |s: S| Range {
            min: count(b.min[at(s)]),
            max: count(b.max[at(s)]),
            last: count(b.last[s as usize]),
        };
        BucketView {
            start: f64::from(b.start) * BUCKET,
            polls: u32::from(b.polls),
            backlog: counts(S::Backlog),
            oldest_age_seconds: Range {
                min: measure(b.min[at(S::OldestAge)]),
                max: measure(b.max[at(S::OldestAge)]),
                last: measure(b.last[S::OldestAge as usize]),
            },
            desired: counts(S::Desired),
            ready: counts(S::Ready),
            visible: count(b.last[S::Visible as usize]),
            in_flight: count(b.last[S::InFlight as usize]),
            arrival_rate: measure(b.last[S::ArrivalRate as usize]),
            current: count(b.last[S::Current as usize]),
            oldest_age_estimated: b.flags & ESTIMATED != 0,
            error: b.flags & ERROR != 0,
            acted: b.flags & ACTED != 0,
            signal: Signal::decode(b.signal),
        }
    }
}

/// One scaler's history as JSON: buckets, then full-resolution points,
/// then the recent changes, each oldest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct History {
    pub scaler: String,
    pub full_resolution_seconds: f64,
    pub bucket_seconds: f64,
    pub buckets: Vec<BucketView>,
    pub points: Vec<PointView>,
    pub events: Vec<Event>,
}

#[cfg(test)]
mod tests;
