//! Every Prometheus metric qscale exports, registered in one place.
//!
//! The names and labels are a user contract (dashboards and alerts depend on
//! them; see docs/metrics.md), so they live here and nowhere else. Each
//! per-scaler series carries the `scaler` label; when a scaler is removed by
//! a reload its series are removed too, so dashboards do not show ghosts.
//! A measurement a source could not make is *removed* from its gauge rather
//! than set to zero: an absent series is honest, a zero is a lie that alerts
//! and autoscalers downstream would act on.
//!
//! Counters are the opposite: every counter series a scaler can produce from
//! a bounded label set (each error label of its source and target kind, each
//! scale direction) is created at 0 when the scaler starts
//! ([`Metrics::init_scaler`]). A counter that appears only at its first
//! increment is invisible to `increase(...[5m]) > 0` and `rate()` (they need
//! two samples), so the first error would go unseen. The label sets come from
//! [`SourceError::METRIC_LABELS`], [`TargetError::METRIC_LABELS`] and
//! [`ScaleDirection::ALL`].
//!
//! **Why the per-scaler series are not `prometheus` `*Vec`s.** A daemon
//! runs thousands of scalers (issue 14: 10 000 at a 1 s poll in < 160 MiB),
//! and each scaler has about 30 series, 3 of them histograms of 15 buckets.
//! In the `prometheus` crate every child of a `*Vec` keeps its own copy of
//! the family's descriptor (name, help, label names) and of its label pairs,
//! and a histogram keeps two shards of its buckets: about 16.7 KB per
//! scaler, a third of the daemon's memory. Here a scaler's values are one
//! small struct of plain numbers ([`ScalerFamilies`], about 0.8 KB), each
//! family's name, help and label names exist once, and the label strings are
//! written only at scrape time. The families keep the `*Vec` calls the
//! control loop makes (`with_label_values(..).set/inc/observe`,
//! `remove_label_values`), so call sites read as before, and
//! [`ScalerFamilies`] is a [`Collector`] whose protos the crate's own
//! [`TextEncoder`] turns into exactly the text [`Metrics::render`] writes (a
//! test holds the two byte for byte). `render` writes that text directly,
//! because building some 80 protos per scaler at every scrape would cost more
//! memory, for the length of the scrape, than the series themselves.
//!
//! Process-wide metrics (`qscale_leader`, `qscale_build_info`,
//! `qscale_config_reload_failures_total`) stay ordinary `prometheus` metrics
//! in the [`Registry`]; a new family that is not per scaler, or one with an
//! unbounded extra label, can be registered there as before and is rendered
//! with the rest.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{IntCounter, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::contract::{Sample, SourceError, TargetError};

/// The `direction` label of `qscale_scale_operations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDirection {
    Up,
    Down,
}

impl ScaleDirection {
    pub const ALL: [ScaleDirection; 2] = [ScaleDirection::Up, ScaleDirection::Down];

    /// The direction of a change from `from` to `to` replicas.
    pub fn of(from: u32, to: u32) -> ScaleDirection {
        if to > from {
            ScaleDirection::Up
        } else {
            ScaleDirection::Down
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ScaleDirection::Up => "up",
            ScaleDirection::Down => "down",
        }
    }
}

/// Histogram buckets for poll phases: most calls take milliseconds, a slow
/// cloud API seconds, a timeout tens of seconds.
const PHASE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BUCKETS: usize = PHASE_BUCKETS.len();

/// The label values of the bounded per-scaler labels, in slot order.
const STATES: &[&str] = &["visible", "in_flight", "delayed"];
const REPLICA_KINDS: &[&str] = &["current", "ready", "desired"];
const DIRECTIONS: &[&str] = &["up", "down"];
const PHASES: &[&str] = &["sample", "decide", "actuate"];

/// Error labels one source or target kind has at most.
const ERROR_SLOTS: usize = if SourceError::METRIC_LABELS.len() > TargetError::METRIC_LABELS.len() {
    SourceError::METRIC_LABELS.len()
} else {
    TargetError::METRIC_LABELS.len()
};

/// A label beside `scaler` whose values are a fixed list.
#[derive(Debug)]
struct Bounded {
    name: &'static str,
    values: &'static [&'static str],
}

/// Which error counter: a source's or a target's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

impl Side {
    /// The label naming the kind (`source="sqs"`).
    fn label(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }

    fn errors(self) -> &'static [&'static str] {
        match self {
            Side::Source => SourceError::METRIC_LABELS,
            Side::Target => TargetError::METRIC_LABELS,
        }
    }
}

/// Where a family's values live in a scaler's [`Values`].
#[derive(Debug)]
enum Shape {
    /// `Values::gauges[first..]`: one slot, or one per value of `label`.
    Gauge {
        first: usize,
        label: Option<Bounded>,
    },
    /// `Values::scale_operations`, one per direction.
    Operations(Bounded),
    /// `Values::source_errors` or `target_errors`: for each kind the
    /// scaler has, one slot per error label.
    Errors(Side),
    /// `Values::poll_duration`, one histogram per phase.
    Phases(Bounded),
}

/// A per-scaler family: what the exposition says about it, and its shape.
#[derive(Debug)]
pub struct Spec {
    name: &'static str,
    help: &'static str,
    shape: Shape,
}

impl Spec {
    fn metric_type(&self) -> MetricType {
        match self.shape {
            Shape::Gauge { .. } => MetricType::GAUGE,
            Shape::Operations(_) | Shape::Errors(_) => MetricType::COUNTER,
            Shape::Phases(_) => MetricType::HISTOGRAM,
        }
    }

    /// The label names beside `scaler`, in declaration order.
    fn extra_labels(&self) -> Vec<&'static str> {
        match &self.shape {
            Shape::Gauge { label, .. } => label.iter().map(|b| b.name).collect(),
            Shape::Operations(b) | Shape::Phases(b) => vec![b.name],
            Shape::Errors(side) => vec![side.label(), "error"],
        }
    }

    /// The scaler and the slot a label-value list names, `None` when the
    /// list does not fit the family (a programming error, logged).
    fn slot<'a, S: AsRef<str>>(&self, labels: &'a [S]) -> Option<(&'a str, usize)> {
        match labels {
            [s, rest @ ..] => self.slot_of(rest).map(|i| (s.as_ref(), i)),
            [] => {
                tracing::error!(metric = self.name, "no scaler label value");
                None
            }
        }
    }

    /// The slot the label values after `scaler` name.
    fn slot_of<S: AsRef<str>>(&self, rest: &[S]) -> Option<usize> {
        let bounded = |b: &Bounded, v: &str| b.values.iter().position(|x| *x == v);
        let found = match (&self.shape, rest) {
            (Shape::Gauge { first, label: None }, []) => Some(*first),
            (
                Shape::Gauge {
                    first,
                    label: Some(b),
                },
                [v],
            ) => bounded(b, v.as_ref()).map(|i| first + i),
            (Shape::Operations(b) | Shape::Phases(b), [v]) => bounded(b, v.as_ref()),
            _ => None,
        };
        if found.is_none() {
            let labels: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            tracing::error!(
                metric = self.name,
                ?labels,
                "label values do not fit the metric"
            );
        }
        found
    }
}

const GAUGES: usize = 14;

static QUEUE_MESSAGES: Spec = Spec {
    name: "qscale_queue_messages",
    help: "Messages in the queue at the last sample, by state.",
    shape: Shape::Gauge {
        first: 0,
        label: Some(Bounded {
            name: "state",
            values: STATES,
        }),
    },
};
static OLDEST_AGE: Spec = Spec {
    name: "qscale_queue_oldest_message_age_seconds",
    help: "Age of the oldest waiting message at the last sample.",
    shape: Shape::Gauge {
        first: 3,
        label: None,
    },
};
static OLDEST_AGE_ESTIMATED: Spec = Spec {
    name: "qscale_queue_oldest_message_age_estimated_seconds",
    help: "Age of the oldest waiting message as qscale estimated it from the queue's history, when the source did not measure it.",
    shape: Shape::Gauge {
        first: 4,
        label: None,
    },
};
static ARRIVAL_RATE: Spec = Spec {
    name: "qscale_queue_arrival_rate",
    help: "Messages per second entering the queue (measured or estimated).",
    shape: Shape::Gauge {
        first: 5,
        label: None,
    },
};
static DEAD_LETTER: Spec = Spec {
    name: "qscale_dead_letter_messages",
    help: "Messages in the dead-letter queue, configured or discovered (never a backlog).",
    shape: Shape::Gauge {
        first: 6,
        label: None,
    },
};
static DEAD_LETTER_RATE: Spec = Spec {
    name: "qscale_dead_letter_arrival_rate",
    help: "Messages per second arriving in the dead-letter queue (its net growth over the last 2 minutes).",
    shape: Shape::Gauge {
        first: 7,
        label: None,
    },
};
static REPLICAS: Spec = Spec {
    name: "qscale_replicas",
    help: "Replicas of the target: current (asked for), ready, and desired (qscale's decision).",
    shape: Shape::Gauge {
        first: 8,
        label: Some(Bounded {
            name: "kind",
            values: REPLICA_KINDS,
        }),
    },
};
static LAST_SUCCESS: Spec = Spec {
    name: "qscale_last_successful_poll_timestamp_seconds",
    help: "Unix time of the last poll whose sample and target read succeeded.",
    shape: Shape::Gauge {
        first: 11,
        label: None,
    },
};
static FALLBACK_ACTIVE: Spec = Spec {
    name: "qscale_fallback_active",
    help: "1 while the fallback is in force after repeated failed or stale samples.",
    shape: Shape::Gauge {
        first: 12,
        label: None,
    },
};
static PAUSED: Spec = Spec {
    name: "qscale_paused",
    help: "1 while the scaler is paused (config or qscale.io/paused annotation).",
    shape: Shape::Gauge {
        first: 13,
        label: None,
    },
};
static SCALE_OPERATIONS: Spec = Spec {
    name: "qscale_scale_operations_total",
    help: "Replica changes qscale made.",
    shape: Shape::Operations(Bounded {
        name: "direction",
        values: DIRECTIONS,
    }),
};
static SOURCE_ERRORS: Spec = Spec {
    name: "qscale_source_errors_total",
    help: "Failed samples, by source kind and bounded error label.",
    shape: Shape::Errors(Side::Source),
};
static TARGET_ERRORS: Spec = Spec {
    name: "qscale_target_errors_total",
    help: "Failed target reads or writes, by target kind and bounded error label.",
    shape: Shape::Errors(Side::Target),
};
static POLL_DURATION: Spec = Spec {
    name: "qscale_poll_duration_seconds",
    help: "Time spent in each phase of a poll.",
    shape: Shape::Phases(Bounded {
        name: "phase",
        values: PHASES,
    }),
};

/// Every per-scaler family.
static FAMILIES: [&Spec; 14] = [
    &QUEUE_MESSAGES,
    &OLDEST_AGE,
    &OLDEST_AGE_ESTIMATED,
    &ARRIVAL_RATE,
    &DEAD_LETTER,
    &DEAD_LETTER_RATE,
    &REPLICAS,
    &SCALE_OPERATIONS,
    &SOURCE_ERRORS,
    &TARGET_ERRORS,
    &POLL_DURATION,
    &LAST_SUCCESS,
    &FALLBACK_ACTIVE,
    &PAUSED,
];

/// One poll phase's histogram: counts per bucket (not cumulative; the
/// `+Inf` bucket is `count`), as the `prometheus` crate keeps them.
#[derive(Debug, Clone, Copy, Default)]
struct Hist {
    buckets: [u64; BUCKETS],
    count: u64,
    sum: f64,
}

impl Hist {
    fn observe(&mut self, v: f64) {
        if let Some(i) = PHASE_BUCKETS.iter().position(|b| v <= *b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }
}

/// The error counters of one source or target kind.
#[derive(Debug)]
struct KindErrors {
    kind: Box<str>,
    counts: [Option<u64>; ERROR_SLOTS],
}

/// Every per-scaler value. `None` is a series that does not exist (never
/// created, or removed), as opposed to one at 0.
#[derive(Debug, Default)]
struct Values {
    gauges: [Option<f64>; GAUGES],
    scale_operations: [Option<u64>; 2],
    source_errors: Vec<KindErrors>,
    target_errors: Vec<KindErrors>,
    poll_duration: [Option<Hist>; 3],
}

impl Values {
    fn errors(&mut self, side: Side) -> &mut Vec<KindErrors> {
        match side {
            Side::Source => &mut self.source_errors,
            Side::Target => &mut self.target_errors,
        }
    }

    /// The counts of `kind`, added (no series yet) when new. The list is
    /// kept in kind order, the order of the exposition.
    fn kind(&mut self, side: Side, kind: &str) -> &mut KindErrors {
        let list = self.errors(side);
        let i = match list.binary_search_by(|k| (*k.kind).cmp(kind)) {
            Ok(i) => i,
            Err(i) => {
                // Nearly always the only kind: no room for more.
                list.reserve_exact(1);
                list.insert(
                    i,
                    KindErrors {
                        kind: kind.into(),
                        counts: [None; ERROR_SLOTS],
                    },
                );
                i
            }
        };
        &mut list[i]
    }
}

type Cell = Arc<Mutex<Values>>;

/// A scaler's values are written by its own task and read by scrapes, so a
/// lock is never contended for long; a poisoned one still holds numbers.
fn lock(c: &Mutex<Values>) -> std::sync::MutexGuard<'_, Values> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The per-scaler values, by scaler name. A hash map: every poll looks a
/// scaler up a dozen times (once per series it sets), and comparing names
/// down a tree cost a fifth of a poll's instructions at 300 scalers; a
/// scrape sorts the names once instead.
#[derive(Debug, Default)]
struct Store {
    scalers: RwLock<HashMap<Arc<str>, Cell>>,
}

impl Store {
    fn get(&self, scaler: &str) -> Option<Cell> {
        let map = self.scalers.read().unwrap_or_else(PoisonError::into_inner);
        map.get(scaler).cloned()
    }

    fn get_or_insert(&self, scaler: &str) -> Cell {
        if let Some(c) = self.get(scaler) {
            return c;
        }
        let mut map = self.scalers.write().unwrap_or_else(PoisonError::into_inner);
        map.entry(Arc::from(scaler)).or_default().clone()
    }

    fn remove(&self, scaler: &str) {
        let mut map = self.scalers.write().unwrap_or_else(PoisonError::into_inner);
        map.remove(scaler);
    }

    /// Every scaler in name order, without holding the map's lock while
    /// the caller reads them.
    fn snapshot(&self) -> Vec<(Arc<str>, Cell)> {
        let mut all: Vec<(Arc<str>, Cell)> = {
            let map = self.scalers.read().unwrap_or_else(PoisonError::into_inner);
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// One scaler's values, found once ([`Metrics::scaler_cell`]) and kept by
/// its task: a poll sets a dozen series, and finding the scaler by name for
/// each cost a sixth of a poll's instructions. The families' `*_in`
/// methods take it in place of the scaler's name. A cell whose scaler was
/// removed by a reload is no longer scraped; writes to it go nowhere.
#[derive(Clone)]
pub struct ScalerCell(Cell);

/// Run `f` on a scaler's values; no-op when the labels did not fit.
fn with_cell(at: &Option<(Cell, usize)>, f: impl FnOnce(&mut Values, usize)) {
    if let Some((cell, slot)) = at {
        f(&mut lock(cell), *slot);
    }
}

/// A value an integer or a float gauge takes.
pub trait GaugeValue: Copy {
    fn to_f64(self) -> f64;
}

impl GaugeValue for i64 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl GaugeValue for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// A per-scaler gauge family (`V` = `i64` for integer gauges, `f64` else),
/// used like the `prometheus` crate's `GaugeVec`.
pub struct ScalerGauges<V> {
    store: Arc<Store>,
    spec: &'static Spec,
    _value: PhantomData<fn(V)>,
}

/// One series of a [`ScalerGauges`].
pub struct GaugeSeries<V> {
    at: Option<(Cell, usize)>,
    _value: PhantomData<fn(V)>,
}

impl<V: GaugeValue> ScalerGauges<V> {
    /// The series of these label values (`scaler` first, then the family's
    /// other label), created at 0 if it does not exist.
    pub fn with_label_values<S: AsRef<str>>(&self, labels: &[S]) -> GaugeSeries<V> {
        let at = self
            .spec
            .slot(labels)
            .map(|(scaler, slot)| (self.store.get_or_insert(scaler), slot));
        with_cell(&at, |v, slot| {
            v.gauges[slot].get_or_insert(0.0);
        });
        GaugeSeries {
            at,
            _value: PhantomData,
        }
    }

    /// Remove the series; `false` when it did not exist.
    pub fn remove_label_values<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        let Some((scaler, slot)) = self.spec.slot(labels) else {
            return false;
        };
        self.store
            .get(scaler)
            .is_some_and(|c| lock(&c).gauges[slot].take().is_some())
    }

    /// Set the series of `cell`'s scaler and the label values after
    /// `scaler` (`&[]` for a family with no other label).
    pub fn set_in(&self, cell: &ScalerCell, rest: &[&str], value: V) {
        if let Some(slot) = self.spec.slot_of(rest) {
            lock(&cell.0).gauges[slot] = Some(value.to_f64());
        }
    }

    /// Remove the series of `cell`'s scaler and these label values.
    pub fn remove_in(&self, cell: &ScalerCell, rest: &[&str]) {
        if let Some(slot) = self.spec.slot_of(rest) {
            lock(&cell.0).gauges[slot] = None;
        }
    }

    /// Set the series, or remove it when the value is unknown (or, for a
    /// float, not finite).
    pub fn set_or_remove_in(&self, cell: &ScalerCell, rest: &[&str], value: Option<V>) {
        match value.filter(|v| v.to_f64().is_finite()) {
            Some(v) => self.set_in(cell, rest, v),
            None => self.remove_in(cell, rest),
        }
    }
}

impl<V: GaugeValue> GaugeSeries<V> {
    pub fn set(&self, value: V) {
        with_cell(&self.at, |v, slot| v.gauges[slot] = Some(value.to_f64()));
    }
}

/// `qscale_scale_operations_total`, used like an `IntCounterVec`.
pub struct ScalerOperations {
    store: Arc<Store>,
}

/// One series of a per-scaler counter family.
pub struct CounterSeries<'a> {
    at: Option<(Cell, usize)>,
    /// The kind of an error counter's series.
    kind: Option<(Side, &'a str)>,
}

impl ScalerOperations {
    /// The series of `[scaler, direction]`, created at 0 if new.
    pub fn with_label_values<S: AsRef<str>>(&self, labels: &[S]) -> CounterSeries<'static> {
        let at = SCALE_OPERATIONS
            .slot(labels)
            .map(|(scaler, slot)| (self.store.get_or_insert(scaler), slot));
        with_cell(&at, |v, slot| {
            v.scale_operations[slot].get_or_insert(0);
        });
        CounterSeries { at, kind: None }
    }

    /// Count one operation of `cell`'s scaler in `direction`.
    pub fn inc_in(&self, cell: &ScalerCell, direction: &str) {
        if let Some(slot) = SCALE_OPERATIONS.slot_of(&[direction]) {
            let mut v = lock(&cell.0);
            let c = &mut v.scale_operations[slot];
            *c = Some(c.unwrap_or(0).saturating_add(1));
        }
    }
}

/// `qscale_source_errors_total` or `qscale_target_errors_total`, used like
/// an `IntCounterVec` with the labels `[scaler, kind, error]`.
pub struct ScalerErrors {
    store: Arc<Store>,
    spec: &'static Spec,
    side: Side,
}

impl ScalerErrors {
    fn slot<'a, S: AsRef<str>>(&self, labels: &'a [S]) -> Option<(&'a str, &'a str, usize)> {
        let found = match labels {
            [s, kind, e] => self
                .side
                .errors()
                .iter()
                .position(|x| *x == e.as_ref())
                .map(|i| (s.as_ref(), kind.as_ref(), i)),
            _ => None,
        };
        if found.is_none() {
            let labels: Vec<&str> = labels.iter().map(AsRef::as_ref).collect();
            tracing::error!(
                metric = self.spec.name,
                ?labels,
                "label values do not fit the metric"
            );
        }
        found
    }

    /// The series of `[scaler, kind, error]`, created at 0 if new.
    pub fn with_label_values<'a, S: AsRef<str>>(&self, labels: &'a [S]) -> CounterSeries<'a> {
        let Some((scaler, kind, slot)) = self.slot(labels) else {
            return CounterSeries {
                at: None,
                kind: None,
            };
        };
        let cell = self.store.get_or_insert(scaler);
        lock(&cell).kind(self.side, kind).counts[slot].get_or_insert(0);
        CounterSeries {
            at: Some((cell, slot)),
            kind: Some((self.side, kind)),
        }
    }

    /// Count one error of `cell`'s scaler: `kind` of source or target,
    /// `error` its label.
    pub fn inc_in(&self, cell: &ScalerCell, kind: &str, error: &str) {
        let labels = ["", kind, error];
        let Some((_, _, slot)) = self.slot(&labels) else {
            return;
        };
        let mut v = lock(&cell.0);
        let c = &mut v.kind(self.side, kind).counts[slot];
        *c = Some(c.unwrap_or(0).saturating_add(1));
    }

    /// Remove the series; `false` when it did not exist.
    pub fn remove_label_values<S: AsRef<str>>(&self, labels: &[S]) -> bool {
        let Some((scaler, kind, slot)) = self.slot(labels) else {
            return false;
        };
        let Some(cell) = self.store.get(scaler) else {
            return false;
        };
        let mut v = lock(&cell);
        let list = v.errors(self.side);
        let Ok(i) = list.binary_search_by(|k| (*k.kind).cmp(kind)) else {
            return false;
        };
        let removed = list[i].counts[slot].take().is_some();
        if list[i].counts.iter().all(Option::is_none) {
            list.remove(i);
        }
        removed
    }
}

impl CounterSeries<'_> {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        with_cell(&self.at, |v, slot| {
            let count = match self.kind {
                Some((side, kind)) => &mut v.kind(side, kind).counts[slot],
                None => &mut v.scale_operations[slot],
            };
            *count = Some(count.unwrap_or(0).saturating_add(n));
        });
    }
}

/// `qscale_poll_duration_seconds`, used like a `HistogramVec` with the
/// labels `[scaler, phase]`.
pub struct ScalerHistograms {
    store: Arc<Store>,
}

/// One series of [`ScalerHistograms`].
pub struct HistogramSeries {
    at: Option<(Cell, usize)>,
}

impl ScalerHistograms {
    /// The series of `[scaler, phase]`, created empty if new.
    pub fn with_label_values<S: AsRef<str>>(&self, labels: &[S]) -> HistogramSeries {
        let at = POLL_DURATION
            .slot(labels)
            .map(|(scaler, slot)| (self.store.get_or_insert(scaler), slot));
        with_cell(&at, |v, slot| {
            v.poll_duration[slot].get_or_insert_with(Hist::default);
        });
        HistogramSeries { at }
    }

    /// Observe a duration of `cell`'s scaler's `phase`.
    pub fn observe_in(&self, cell: &ScalerCell, phase: &str, seconds: f64) {
        if let Some(slot) = POLL_DURATION.slot_of(&[phase]) {
            lock(&cell.0).poll_duration[slot]
                .get_or_insert_with(Hist::default)
                .observe(seconds);
        }
    }
}

impl HistogramSeries {
    pub fn observe(&self, seconds: f64) {
        with_cell(&self.at, |v, slot| {
            v.poll_duration[slot]
                .get_or_insert_with(Hist::default)
                .observe(seconds);
        });
    }
}

/// The per-scaler families as a [`Collector`] (see [`Metrics::collector`]):
/// the protos the `prometheus` crate's own `*Vec`s would make.
pub struct ScalerFamilies {
    store: Arc<Store>,
    descs: Vec<Desc>,
}

impl ScalerFamilies {
    fn new(store: Arc<Store>) -> ScalerFamilies {
        let descs = FAMILIES
            .iter()
            .filter_map(|spec| {
                let mut labels = vec!["scaler".to_string()];
                labels.extend(spec.extra_labels().iter().map(|l| l.to_string()));
                Desc::new(
                    spec.name.to_string(),
                    spec.help.to_string(),
                    labels,
                    Default::default(),
                )
                .map_err(|e| tracing::error!(metric = spec.name, error = %e, "invalid metric"))
                .ok()
            })
            .collect();
        ScalerFamilies { store, descs }
    }
}

fn label_pair(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

/// A series' proto with its labels sorted by name, as the crate makes them.
fn metric(mut labels: Vec<LabelPair>) -> Metric {
    labels.sort();
    Metric::from_label(labels)
}

fn gauge_metric(labels: Vec<LabelPair>, v: f64) -> Metric {
    let mut m = metric(labels);
    let mut g = Gauge::default();
    g.set_value(v);
    m.set_gauge(g);
    m
}

fn counter_metric(labels: Vec<LabelPair>, v: u64) -> Metric {
    let mut m = metric(labels);
    let mut c = Counter::default();
    c.set_value(v as f64);
    m.set_counter(c);
    m
}

fn histogram_metric(labels: Vec<LabelPair>, h: &Hist) -> Metric {
    let mut m = metric(labels);
    let mut p = Histogram::default();
    p.set_sample_count(h.count);
    p.set_sample_sum(h.sum);
    let mut cumulative = 0;
    let buckets = PHASE_BUCKETS
        .iter()
        .zip(h.buckets)
        .map(|(le, n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*le);
            b
        })
        .collect();
    p.set_bucket(buckets);
    m.set_histogram(p);
    m
}

impl Collector for ScalerFamilies {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let cells = self.store.snapshot();
        let mut out = Vec::new();
        for spec in FAMILIES {
            let mut metrics = Vec::new();
            for (scaler, cell) in &cells {
                let v = lock(cell);
                let s = || label_pair("scaler", scaler);
                match &spec.shape {
                    Shape::Gauge { first, label } => match label {
                        None => {
                            metrics.extend(v.gauges[*first].map(|x| gauge_metric(vec![s()], x)))
                        }
                        Some(b) => {
                            for (i, value) in b.values.iter().enumerate() {
                                if let Some(x) = v.gauges[first + i] {
                                    metrics.push(gauge_metric(
                                        vec![s(), label_pair(b.name, value)],
                                        x,
                                    ));
                                }
                            }
                        }
                    },
                    Shape::Operations(b) => {
                        for (i, value) in b.values.iter().enumerate() {
                            if let Some(n) = v.scale_operations[i] {
                                metrics
                                    .push(counter_metric(vec![s(), label_pair(b.name, value)], n));
                            }
                        }
                    }
                    Shape::Errors(side) => {
                        let list = match side {
                            Side::Source => &v.source_errors,
                            Side::Target => &v.target_errors,
                        };
                        for k in list {
                            for (i, e) in side.errors().iter().enumerate() {
                                if let Some(n) = k.counts[i] {
                                    metrics.push(counter_metric(
                                        vec![
                                            s(),
                                            label_pair(side.label(), &k.kind),
                                            label_pair("error", e),
                                        ],
                                        n,
                                    ));
                                }
                            }
                        }
                    }
                    Shape::Phases(b) => {
                        for (i, value) in b.values.iter().enumerate() {
                            if let Some(h) = &v.poll_duration[i] {
                                metrics.push(histogram_metric(
                                    vec![s(), label_pair(b.name, value)],
                                    h,
                                ));
                            }
                        }
                    }
                }
            }
            if metrics.is_empty() {
                continue;
            }
            let mut f = MetricFamily::default();
            f.set_name(spec.name.to_string());
            f.set_help(spec.help.to_string());
            f.set_field_type(spec.metric_type());
            f.set_metric(metrics);
            out.push(f);
        }
        out
    }
}

/// Append `v` to `out` escaped as the text format wants it: `\` and a
/// newline always, `"` inside label values.
fn escape_into(out: &mut String, v: &str, quote: bool) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// A histogram bucket's `le` label.
#[derive(Clone, Copy)]
enum Le {
    At(f64),
    Inf,
}

impl std::fmt::Display for Le {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Le::At(v) => write!(f, "{v}"),
            Le::Inf => f.write_str("+Inf"),
        }
    }
}

/// One sample line: labels already in name order, then `le` if given.
fn sample_line(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<Le>,
    value: f64,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut sep = '{';
    for (k, v) in labels {
        out.push(sep);
        out.push_str(k);
        out.push_str("=\"");
        escape_into(out, v, true);
        out.push('"');
        sep = ',';
    }
    if let Some(le) = le {
        out.push(sep);
        let _ = write!(out, "le=\"{le}\"");
    }
    if !labels.is_empty() || le.is_some() {
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Two labels in name order.
fn ordered<'a>(a: (&'a str, &'a str), b: (&'a str, &'a str)) -> [(&'a str, &'a str); 2] {
    if a.0 <= b.0 { [a, b] } else { [b, a] }
}

/// The slot indices of `values`, in the order of their values.
fn sorted(values: &[&str]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by_key(|i| values[*i]);
    idx
}

impl ScalerFamilies {
    /// Write one family in the text format, series in the order the
    /// `prometheus` registry sorts them (by label values, labels in name
    /// order); nothing at all when it has no series.
    fn write_text(spec: &Spec, cells: &[(Arc<str>, Cell)], out: &mut String) {
        let start = out.len();
        out.push_str("# HELP ");
        out.push_str(spec.name);
        out.push(' ');
        escape_into(out, spec.help, false);
        let ty = match spec.metric_type() {
            MetricType::COUNTER => "counter",
            MetricType::HISTOGRAM => "histogram",
            _ => "gauge",
        };
        let _ = writeln!(out, "\n# TYPE {} {ty}", spec.name);
        let header = out.len();
        let name = spec.name;
        // A bounded label sorting before `scaler` is the outer loop.
        let nest =
            |b: &Bounded, out: &mut String, one: &dyn Fn(&mut String, &str, &Values, usize)| {
                let order = sorted(b.values);
                if b.name < "scaler" {
                    for &i in &order {
                        for (scaler, cell) in cells {
                            one(out, scaler, &lock(cell), i);
                        }
                    }
                } else {
                    for (scaler, cell) in cells {
                        let v = lock(cell);
                        for &i in &order {
                            one(out, scaler, &v, i);
                        }
                    }
                }
            };
        match &spec.shape {
            Shape::Gauge { first, label: None } => {
                for (scaler, cell) in cells {
                    if let Some(x) = lock(cell).gauges[*first] {
                        sample_line(out, name, "", &[("scaler", scaler)], None, x);
                    }
                }
            }
            Shape::Gauge {
                first,
                label: Some(b),
            } => nest(b, out, &|out, scaler, v, i| {
                if let Some(x) = v.gauges[first + i] {
                    let labels = ordered(("scaler", scaler), (b.name, b.values[i]));
                    sample_line(out, name, "", &labels, None, x);
                }
            }),
            Shape::Operations(b) => nest(b, out, &|out, scaler, v, i| {
                if let Some(n) = v.scale_operations[i] {
                    let labels = ordered(("scaler", scaler), (b.name, b.values[i]));
                    sample_line(out, name, "", &labels, None, n as f64);
                }
            }),
            Shape::Phases(b) => nest(b, out, &|out, scaler, v, i| {
                if let Some(h) = &v.poll_duration[i] {
                    let labels = ordered(("scaler", scaler), (b.name, b.values[i]));
                    let mut cumulative = 0;
                    for (le, n) in PHASE_BUCKETS.iter().zip(h.buckets) {
                        cumulative += n;
                        sample_line(
                            out,
                            name,
                            "_bucket",
                            &labels,
                            Some(Le::At(*le)),
                            cumulative as f64,
                        );
                    }
                    sample_line(out, name, "_bucket", &labels, Some(Le::Inf), h.count as f64);
                    sample_line(out, name, "_sum", &labels, None, h.sum);
                    sample_line(out, name, "_count", &labels, None, h.count as f64);
                }
            }),
            // Labels in name order are `error`, `scaler`, then `source` or
            // `target`, so series go by error, scaler, kind (the exposition
            // test, with two kinds on one scaler, holds this).
            Shape::Errors(side) => {
                let errors = side.errors();
                for &e in &sorted(errors) {
                    for (scaler, cell) in cells {
                        let v = lock(cell);
                        let list = match side {
                            Side::Source => &v.source_errors,
                            Side::Target => &v.target_errors,
                        };
                        // Kept in kind order by `Values::kind`.
                        for k in list {
                            if let Some(n) = k.counts[e] {
                                let labels = [
                                    ("error", errors[e]),
                                    ("scaler", &**scaler),
                                    (side.label(), &*k.kind),
                                ];
                                sample_line(out, name, "", &labels, None, n as f64);
                            }
                        }
                    }
                }
            }
        }
        if out.len() == header {
            out.truncate(start);
        }
    }
}

/// The registry and every metric in it.
pub struct Metrics {
    /// Process-wide metrics; the per-scaler ones are in `scalers`.
    registry: Registry,
    scalers: ScalerFamilies,
    /// The length of the last exposition, to size the next one at once.
    last_len: std::sync::atomic::AtomicUsize,
    pub queue_messages: ScalerGauges<i64>,
    /// Per queue of a scaler with several (`sources`): plain `prometheus`
    /// vectors, since the `queue` label's values come from the config; only
    /// scalers with several queues have them.
    pub queue_backlog: IntGaugeVec,
    pub queue_needed: IntGaugeVec,
    pub oldest_age: ScalerGauges<f64>,
    pub oldest_age_estimated: ScalerGauges<f64>,
    pub arrival_rate: ScalerGauges<f64>,
    pub dead_letter: ScalerGauges<i64>,
    pub dead_letter_rate: ScalerGauges<f64>,
    pub replicas: ScalerGauges<i64>,
    pub scale_operations: ScalerOperations,
    pub source_errors: ScalerErrors,
    pub target_errors: ScalerErrors,
    pub poll_duration: ScalerHistograms,
    pub last_success: ScalerGauges<f64>,
    pub fallback_active: ScalerGauges<i64>,
    pub paused: ScalerGauges<i64>,
    pub leader: IntGauge,
    pub build_info: IntGaugeVec,
    pub config_reload_failures: IntCounter,
}

/// Creating a metric fails only for an invalid name or a duplicate
/// registration, both programming errors caught by the tests of this module.
fn reg<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
    if let Err(e) = r.register(Box::new(c.clone())) {
        tracing::error!(error = %e, "metric registration failed");
    }
    c
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let store = Arc::new(Store::default());
        fn gauges<V>(store: &Arc<Store>, spec: &'static Spec) -> ScalerGauges<V> {
            ScalerGauges {
                store: store.clone(),
                spec,
                _value: PhantomData,
            }
        }
        let m = Metrics {
            queue_messages: gauges(&store, &QUEUE_MESSAGES),
            oldest_age: gauges(&store, &OLDEST_AGE),
            oldest_age_estimated: gauges(&store, &OLDEST_AGE_ESTIMATED),
            arrival_rate: gauges(&store, &ARRIVAL_RATE),
            dead_letter: gauges(&store, &DEAD_LETTER),
            dead_letter_rate: gauges(&store, &DEAD_LETTER_RATE),
            replicas: gauges(&store, &REPLICAS),
            last_success: gauges(&store, &LAST_SUCCESS),
            fallback_active: gauges(&store, &FALLBACK_ACTIVE),
            paused: gauges(&store, &PAUSED),
            scale_operations: ScalerOperations {
                store: store.clone(),
            },
            source_errors: ScalerErrors {
                store: store.clone(),
                spec: &SOURCE_ERRORS,
                side: Side::Source,
            },
            target_errors: ScalerErrors {
                store: store.clone(),
                spec: &TARGET_ERRORS,
                side: Side::Target,
            },
            poll_duration: ScalerHistograms {
                store: store.clone(),
            },
            queue_backlog: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "qscale_queue_backlog_messages",
                        "Backlog of one queue of a scaler that drains several, at the last decision.",
                    ),
                    &["scaler", "queue"],
                )
                .expect("valid metric"),
            ),
            queue_needed: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "qscale_queue_needed_replicas",
                        "Replicas one queue of a scaler that drains several asked for at the last decision (its largest signal).",
                    ),
                    &["scaler", "queue"],
                )
                .expect("valid metric"),
            ),
            leader: reg(
                &r,
                IntGauge::new("qscale_leader", "1 while this process may actuate.")
                    .expect("valid metric"),
            ),
            build_info: reg(
                &r,
                IntGaugeVec::new(
                    Opts::new("qscale_build_info", "Always 1; the version label."),
                    &["version"],
                )
                .expect("valid metric"),
            ),
            config_reload_failures: reg(
                &r,
                IntCounter::new(
                    "qscale_config_reload_failures_total",
                    "Config reloads rejected because the new file was invalid.",
                )
                .expect("valid metric"),
            ),
            scalers: ScalerFamilies::new(store),
            last_len: std::sync::atomic::AtomicUsize::new(0),
            registry: r,
        };
        m.build_info.with_label_values(&[crate::VERSION]).set(1);
        m
    }

    /// The values of `scaler`, to write a poll's series through (created
    /// if new, like the series of [`Metrics::init_scaler`]).
    pub fn scaler_cell(&self, scaler: &str) -> ScalerCell {
        ScalerCell(self.scalers.store.get_or_insert(scaler))
    }

    /// [`Metrics::record_sample`] through a scaler's cell.
    pub fn record_sample_in(&self, cell: &ScalerCell, s: &Sample) {
        let int = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        for (state, v) in [
            ("visible", s.visible),
            ("in_flight", s.in_flight),
            ("delayed", s.delayed),
        ] {
            self.queue_messages.set_or_remove_in(cell, &[state], int(v));
        }
        self.oldest_age
            .set_or_remove_in(cell, &[], s.oldest_age.map(|d| d.as_secs_f64()));
        self.dead_letter
            .set_or_remove_in(cell, &[], int(s.dead_letter));
    }

    /// Record what a sample saw; unmeasured values are removed, not zeroed.
    pub fn record_sample(&self, scaler: &str, s: &Sample) {
        self.record_sample_in(&self.scaler_cell(scaler), s);
    }

    /// Create at 0 the counter series a scaler can produce: every error
    /// label of its source and target kind and both scale directions, and
    /// the last-success timestamp at 0 ("never", so a scaler that never
    /// succeeds is stale to the alert, not absent). Existing series keep
    /// their values, so calling this again (a restart on reload) is harmless.
    pub fn init_scaler(&self, scaler: &str, source_kind: &str, target_kind: &str) {
        for d in ScaleDirection::ALL {
            self.scale_operations
                .with_label_values(&[scaler, d.label()]);
        }
        self.init_source_kind(scaler, source_kind);
        for e in TargetError::METRIC_LABELS {
            self.target_errors
                .with_label_values(&[scaler, target_kind, e]);
        }
        self.last_success.with_label_values(&[scaler]);
    }

    /// Create at 0 a scaler's error series of one more source kind (a
    /// scaler whose queues are of several kinds).
    pub fn init_source_kind(&self, scaler: &str, source_kind: &str) {
        for e in SourceError::METRIC_LABELS {
            self.source_errors
                .with_label_values(&[scaler, source_kind, e]);
        }
    }

    /// Remove a scaler's error series of a source kind it no longer has
    /// (a reload changed `source.kind`).
    pub fn remove_source_kind(&self, scaler: &str, source_kind: &str) {
        for e in SourceError::METRIC_LABELS {
            let _ = self
                .source_errors
                .remove_label_values(&[scaler, source_kind, e]);
        }
    }

    /// Remove a scaler's error series of a target kind it no longer has.
    pub fn remove_target_kind(&self, scaler: &str, target_kind: &str) {
        for e in TargetError::METRIC_LABELS {
            let _ = self
                .target_errors
                .remove_label_values(&[scaler, target_kind, e]);
        }
    }

    /// Record what one queue of a scaler with several had and asked for;
    /// unknown values are removed, not zeroed.
    pub fn record_queue(
        &self,
        scaler: &str,
        queue: &str,
        backlog: Option<u64>,
        needed: Option<u32>,
    ) {
        for (vec, v) in [
            (&self.queue_backlog, backlog),
            (&self.queue_needed, needed.map(u64::from)),
        ] {
            match v {
                Some(v) => vec
                    .with_label_values(&[scaler, queue])
                    .set(i64::try_from(v).unwrap_or(i64::MAX)),
                None => {
                    let _ = vec.remove_label_values(&[scaler, queue]);
                }
            }
        }
    }

    /// Remove a scaler's per-queue series of every queue not in `keep` (a
    /// reload renamed or dropped a queue; `&[]` removes them all).
    pub fn remove_queues(&self, scaler: &str, keep: &[&str]) {
        for vec in [&self.queue_backlog, &self.queue_needed] {
            for m in vec.collect().iter().flat_map(|f| f.get_metric()) {
                let get = |k: &str| {
                    m.get_label()
                        .iter()
                        .find(|l| l.name() == k)
                        .map(|l| l.value().to_string())
                };
                if get("scaler").as_deref() == Some(scaler)
                    && let Some(q) = get("queue")
                    && !keep.contains(&q.as_str())
                {
                    let _ = vec.remove_label_values(&[scaler, &q]);
                }
            }
        }
    }

    /// Forget every series of a scaler (after it was removed by a reload).
    pub fn remove_scaler(&self, scaler: &str) {
        self.remove_queues(scaler, &[]);
        self.scalers.store.remove(scaler);
    }

    /// The per-scaler families as a [`Collector`] over the same values, to
    /// register in a [`Registry`] that should gather them as protos.
    pub fn collector(&self) -> ScalerFamilies {
        ScalerFamilies::new(self.scalers.store.clone())
    }

    /// The text exposition format for /metrics: the registry's families
    /// through the crate's encoder, the per-scaler ones written directly
    /// (the same text), merged in name order.
    pub fn render(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let process = self.registry.gather();
        let cells = self.scalers.store.snapshot();
        let mut per_scaler: Vec<&Spec> = FAMILIES.to_vec();
        per_scaler.sort_by_key(|s| s.name);
        let mut out = String::with_capacity(self.last_len.load(Relaxed) + 4096);
        let enc = TextEncoder::new();
        let mut process = process.iter().peekable();
        let mut per_scaler = per_scaler.into_iter().peekable();
        loop {
            let take_process = match (process.peek(), per_scaler.peek()) {
                (Some(p), Some(s)) => p.name() <= s.name,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            if take_process {
                if let Some(f) = process.next()
                    && let Err(e) = enc.encode_utf8(std::slice::from_ref(f), &mut out)
                {
                    tracing::error!(error = %e, "encoding metrics failed");
                }
            } else if let Some(spec) = per_scaler.next() {
                ScalerFamilies::write_text(spec, &cells, &mut out);
            }
        }
        self.last_len.store(out.len(), Relaxed);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;
    use std::time::{Duration, SystemTime};

    #[test]
    fn writing_through_a_scaler_cell_exports_what_writing_by_name_does() {
        let (by_name, by_cell) = (Metrics::new(), Metrics::new());
        let s = Sample {
            visible: Some(3),
            in_flight: None,
            delayed: Some(0),
            oldest_age: Some(Duration::from_secs(7)),
            ..Sample::empty(SystemTime::now())
        };
        for m in [&by_name, &by_cell] {
            m.init_scaler("a", "sqs", "kubernetes");
        }
        by_name.record_sample("a", &s);
        by_name.replicas.with_label_values(&["a", "current"]).set(2);
        by_name.arrival_rate.with_label_values(&["a"]).set(1.5);
        by_name
            .scale_operations
            .with_label_values(&["a", "up"])
            .inc();
        by_name
            .source_errors
            .with_label_values(&["a", "sqs", "timeout"])
            .inc();
        by_name
            .target_errors
            .with_label_values(&["a", "kubernetes", "conflict"])
            .inc();
        by_name
            .poll_duration
            .with_label_values(&["a", "sample"])
            .observe(0.01);
        by_name.paused.with_label_values(&["a"]).set(0);

        let c = by_cell.scaler_cell("a");
        // A value set and then found unknown is removed, as by name.
        by_cell.oldest_age_estimated.set_in(&c, &[], 4.0);
        by_cell.oldest_age_estimated.set_or_remove_in(&c, &[], None);
        by_cell
            .arrival_rate
            .set_or_remove_in(&c, &[], Some(f64::NAN));
        by_cell.record_sample_in(&c, &s);
        by_cell.replicas.set_in(&c, &["current"], 2);
        by_cell.arrival_rate.set_or_remove_in(&c, &[], Some(1.5));
        by_cell.scale_operations.inc_in(&c, "up");
        by_cell.source_errors.inc_in(&c, "sqs", "timeout");
        by_cell.target_errors.inc_in(&c, "kubernetes", "conflict");
        by_cell.poll_duration.observe_in(&c, "sample", 0.01);
        by_cell.paused.set_in(&c, &[], 0);
        assert_eq!(by_cell.render(), by_name.render());

        // Once the scaler is removed, a write through its old cell brings
        // no series back.
        by_cell.remove_scaler("a");
        by_cell.replicas.set_in(&c, &["current"], 3);
        assert!(!by_cell.render().contains("scaler=\"a\""));
    }

    #[test]
    fn every_documented_metric_name_is_exported() {
        let m = Metrics::new();
        let s = Sample {
            visible: Some(3),
            in_flight: Some(1),
            delayed: Some(0),
            oldest_age: Some(Duration::from_secs(7)),
            ..Sample::empty(SystemTime::now())
        };
        m.record_sample("a", &s);
        m.arrival_rate.with_label_values(&["a"]).set(1.5);
        m.replicas.with_label_values(&["a", "current"]).set(2);
        m.scale_operations.with_label_values(&["a", "up"]).inc();
        m.source_errors
            .with_label_values(&["a", "sqs", "timeout"])
            .inc();
        m.target_errors
            .with_label_values(&["a", "kubernetes", "conflict"])
            .inc();
        m.poll_duration
            .with_label_values(&["a", "sample"])
            .observe(0.01);
        m.last_success.with_label_values(&["a"]).set(1.0);
        m.fallback_active.with_label_values(&["a"]).set(0);
        m.paused.with_label_values(&["a"]).set(0);
        m.dead_letter.with_label_values(&["a"]).set(0);
        m.dead_letter_rate.with_label_values(&["a"]).set(0.25);
        m.leader.set(1);
        m.config_reload_failures.inc();
        let text = m.render();
        for name in [
            "qscale_queue_messages{scaler=\"a\",state=\"visible\"} 3",
            "qscale_queue_oldest_message_age_seconds{scaler=\"a\"} 7",
            "qscale_queue_arrival_rate{scaler=\"a\"} 1.5",
            "qscale_replicas{kind=\"current\",scaler=\"a\"} 2",
            "qscale_scale_operations_total{direction=\"up\",scaler=\"a\"} 1",
            "qscale_source_errors_total{error=\"timeout\",scaler=\"a\",source=\"sqs\"} 1",
            "qscale_target_errors_total{error=\"conflict\",scaler=\"a\",target=\"kubernetes\"} 1",
            "qscale_poll_duration_seconds_bucket",
            "qscale_last_successful_poll_timestamp_seconds{scaler=\"a\"} 1",
            "qscale_fallback_active{scaler=\"a\"} 0",
            "qscale_paused{scaler=\"a\"} 0",
            "qscale_dead_letter_messages{scaler=\"a\"} 0",
            "qscale_dead_letter_arrival_rate{scaler=\"a\"} 0.25",
            "qscale_leader 1",
            "qscale_config_reload_failures_total 1",
            "qscale_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn an_unmeasured_value_is_removed_not_zeroed() {
        let m = Metrics::new();
        let mut s = Sample {
            visible: Some(3),
            oldest_age: Some(Duration::from_secs(7)),
            ..Sample::empty(SystemTime::now())
        };
        m.record_sample("a", &s);
        s.oldest_age = None;
        m.record_sample("a", &s);
        let text = m.render();
        assert!(
            !text.contains("qscale_queue_oldest_message_age_seconds{"),
            "{text}"
        );
        assert!(!text.contains("state=\"in_flight\""), "{text}");
    }

    #[test]
    fn a_started_scaler_has_every_bounded_counter_series_at_zero() {
        let m = Metrics::new();
        m.init_scaler("a", "sqs", "kubernetes");
        let text = m.render();
        for e in SourceError::METRIC_LABELS {
            let line = format!(
                "qscale_source_errors_total{{error=\"{e}\",scaler=\"a\",source=\"sqs\"}} 0\n"
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        for e in TargetError::METRIC_LABELS {
            let line = format!(
                "qscale_target_errors_total{{error=\"{e}\",scaler=\"a\",target=\"kubernetes\"}} 0\n"
            );
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        for d in ["up", "down"] {
            let line =
                format!("qscale_scale_operations_total{{direction=\"{d}\",scaler=\"a\"}} 0\n");
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        assert!(text.contains("qscale_last_successful_poll_timestamp_seconds{scaler=\"a\"} 0\n"));
        // Starting again (a restart on reload) keeps what was counted.
        m.source_errors
            .with_label_values(&["a", "sqs", "timeout"])
            .inc();
        m.last_success.with_label_values(&["a"]).set(5.0);
        m.init_scaler("a", "sqs", "kubernetes");
        let text = m.render();
        assert!(text.contains(
            "qscale_source_errors_total{error=\"timeout\",scaler=\"a\",source=\"sqs\"} 1\n"
        ));
        assert!(text.contains("qscale_last_successful_poll_timestamp_seconds{scaler=\"a\"} 5\n"));
    }

    #[test]
    fn a_changed_kind_drops_the_old_kinds_series_only() {
        let m = Metrics::new();
        m.init_scaler("a", "sqs", "kubernetes");
        m.init_scaler("b", "sqs", "kubernetes");
        m.remove_source_kind("a", "sqs");
        m.remove_target_kind("a", "kubernetes");
        m.init_scaler("a", "redis", "ecs");
        let text = m.render();
        assert!(!text.contains("scaler=\"a\",source=\"sqs\""), "{text}");
        assert!(
            !text.contains("scaler=\"a\",target=\"kubernetes\""),
            "{text}"
        );
        assert!(text.contains("scaler=\"a\",source=\"redis\""), "{text}");
        assert!(text.contains("scaler=\"a\",target=\"ecs\""), "{text}");
        assert!(text.contains("scaler=\"b\",source=\"sqs\""), "{text}");
    }

    #[test]
    fn scale_directions_label_every_change() {
        assert_eq!(ScaleDirection::of(1, 3).label(), "up");
        assert_eq!(ScaleDirection::of(3, 1).label(), "down");
        let labels: Vec<&str> = ScaleDirection::ALL.iter().map(|d| d.label()).collect();
        assert_eq!(labels, ["up", "down"]);
    }

    #[test]
    fn removing_a_scaler_removes_all_its_series() {
        let m = Metrics::new();
        m.record_sample(
            "gone",
            &Sample {
                visible: Some(1),
                ..Sample::empty(SystemTime::now())
            },
        );
        m.source_errors
            .with_label_values(&["gone", "sqs", "timeout"])
            .inc();
        m.init_scaler("gone", "sqs", "kubernetes");
        m.init_scaler("kept", "sqs", "kubernetes");
        m.dead_letter_rate.with_label_values(&["gone"]).set(1.0);
        m.replicas.with_label_values(&["kept", "current"]).set(1);
        m.remove_scaler("gone");
        let text = m.render();
        assert!(!text.contains("scaler=\"gone\""), "{text}");
        assert!(text.contains("scaler=\"kept\""), "{text}");
    }

    /// Every per-scaler family populated, some series removed again, and
    /// label values that need escaping.
    fn populated() -> Metrics {
        let m = Metrics::new();
        for name in ["b", "a", "odd \"name\"\\ with\nnewline", "a/eu-1"] {
            m.init_scaler(name, "sqs", "kubernetes");
            m.record_sample(
                name,
                &Sample {
                    visible: Some(12),
                    in_flight: Some(3),
                    delayed: None,
                    oldest_age: Some(Duration::from_millis(2500)),
                    dead_letter: Some(u64::MAX),
                    ..Sample::empty(SystemTime::now())
                },
            );
            m.arrival_rate.with_label_values(&[name]).set(0.1 + 0.2);
            m.oldest_age_estimated.with_label_values(&[name]).set(1e-7);
            m.dead_letter_rate.with_label_values(&[name]).set(1e21);
            for (kind, v) in [("current", 2), ("ready", 1), ("desired", 4)] {
                m.replicas.with_label_values(&[name, kind]).set(v);
            }
            m.scale_operations.with_label_values(&[name, "up"]).inc();
            m.source_errors
                .with_label_values(&[name, "sqs", "timeout"])
                .inc();
            m.target_errors
                .with_label_values(&[name, "kubernetes", "conflict"])
                .inc_by(3);
            for (phase, secs) in [("sample", 0.0004), ("sample", 0.3), ("decide", 31.0)] {
                m.poll_duration
                    .with_label_values(&[name, phase])
                    .observe(secs);
            }
            m.poll_duration
                .with_label_values(&[name, "actuate"])
                .observe(0.001);
            m.last_success
                .with_label_values(&[name])
                .set(1_767_225_600.25);
            m.fallback_active.with_label_values(&[name]).set(0);
            m.paused.with_label_values(&[name]).set(1);
        }
        // A scaler between a reload that changed its source kind and the
        // removal of the old kind's series has two kinds.
        m.init_scaler("b", "redis", "kubernetes");
        m.source_errors
            .with_label_values(&["b", "azure", "config"])
            .inc();
        let _ = m.replicas.remove_label_values(&["a", "ready"]);
        let _ = m.oldest_age.remove_label_values(&["b"]);
        m.record_queue("a", "critical", Some(3), Some(2));
        m.record_queue("b", "bulk", Some(30), None);
        m.leader.set(1);
        m.config_reload_failures.inc();
        m
    }

    #[test]
    fn the_exposition_is_byte_for_byte_what_the_crates_registry_and_encoder_make() {
        let m = populated();
        let r = Registry::new();
        r.register(Box::new(m.collector())).expect("register");
        r.register(Box::new(m.leader.clone())).expect("register");
        r.register(Box::new(m.queue_backlog.clone()))
            .expect("register");
        r.register(Box::new(m.queue_needed.clone()))
            .expect("register");
        r.register(Box::new(m.build_info.clone()))
            .expect("register");
        r.register(Box::new(m.config_reload_failures.clone()))
            .expect("register");
        let mut reference = Vec::new();
        TextEncoder::new()
            .encode(&r.gather(), &mut reference)
            .expect("encode");
        let reference = String::from_utf8(reference).expect("utf-8");
        let text = m.render();
        assert!(
            text.contains("odd \\\"name\\\"\\\\ with\\nnewline"),
            "{text}"
        );
        assert!(text.contains("source=\"azure\""), "{text}");
        assert_eq!(text, reference);
        // Rendering again (with the buffer sized from the last one) is the same.
        assert_eq!(m.render(), reference);
    }

    #[test]
    fn every_per_scaler_family_is_rendered_once_under_its_documented_name() {
        let text = populated().render();
        for spec in FAMILIES {
            let header = format!("# TYPE {} ", spec.name);
            assert_eq!(text.matches(&header).count(), 1, "{}", spec.name);
        }
        let mut names: Vec<&str> = FAMILIES.iter().map(|s| s.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
    }

    #[test]
    fn gauge_slots_of_different_families_never_overlap() {
        let mut used: Vec<usize> = Vec::new();
        for spec in FAMILIES {
            if let Shape::Gauge { first, label } = &spec.shape {
                let n = label.as_ref().map_or(1, |b| b.values.len());
                for slot in *first..first + n {
                    assert!(!used.contains(&slot), "{} slot {slot}", spec.name);
                    used.push(slot);
                }
            }
        }
        used.sort();
        assert_eq!(
            used,
            (0..GAUGES).collect::<Vec<_>>(),
            "every slot used once"
        );
    }

    #[test]
    fn label_values_that_do_not_fit_a_family_change_nothing() {
        let m = Metrics::new();
        m.replicas.with_label_values(&["a", "wanted"]).set(3);
        m.replicas.with_label_values(&["a"]).set(3);
        m.source_errors
            .with_label_values(&["a", "sqs", "no_such_error"])
            .inc();
        m.poll_duration
            .with_label_values(&["a", "nap"])
            .observe(1.0);
        assert!(!m.replicas.remove_label_values(&["a", "wanted"]));
        let text = m.render();
        assert!(!text.contains("scaler=\"a\""), "{text}");
    }

    #[test]
    fn a_scalers_metric_values_take_under_a_kibibyte() {
        // Issue 14: the whole daemon gets 16 KiB per scaler; the metrics'
        // share is this struct, its error kinds' names and the map entry.
        assert!(
            std::mem::size_of::<Values>() < 1024,
            "{}",
            std::mem::size_of::<Values>()
        );
    }

    #[test]
    fn per_queue_series_follow_the_configured_queues_and_go_with_the_scaler() {
        let m = Metrics::new();
        m.record_queue("pool", "critical", Some(40), Some(4));
        m.record_queue("pool", "bulk", Some(300), Some(6));
        m.record_queue("other", "bulk", Some(1), Some(1));
        let text = m.render();
        assert!(
            text.contains("qscale_queue_backlog_messages{queue=\"critical\",scaler=\"pool\"} 40\n"),
            "{text}"
        );
        assert!(
            text.contains("qscale_queue_needed_replicas{queue=\"bulk\",scaler=\"pool\"} 6\n"),
            "{text}"
        );
        // Unknown is absent, never zero.
        m.record_queue("pool", "bulk", None, None);
        assert!(!m.render().contains("queue=\"bulk\",scaler=\"pool\""));
        // A reload that drops a queue drops its series, and only its own.
        m.remove_queues("pool", &["bulk"]);
        let text = m.render();
        assert!(!text.contains("queue=\"critical\""), "{text}");
        assert!(text.contains("queue=\"bulk\",scaler=\"other\""), "{text}");
        m.remove_scaler("other");
        assert!(!m.render().contains("qscale_queue_backlog_messages{"));
    }
}
