//! What a simulation run measured, and how it is shown.
//!
//! [`Recorder`] watches a run second by second and keeps what the summary
//! and the chart need: the figures of [`Metrics`] (the contract of
//! `--output json`, so its field names are stable) and the four time series
//! of [`Series`]. The text table puts runs side by side so `--compare hpa`
//! reads as one table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::world::model::{Observation, WaitHistogram};

/// The summary of one run. Field names are the `--output json` contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    /// Median wait of a message before a worker took it, seconds (0.1 s
    /// resolution; messages still waiting when the run ends, at most
    /// [`crate::simulate::DRAIN_LIMIT_SECONDS`] after the trace, count with
    /// their age then).
    pub age_p50_seconds: f64,
    /// 95th percentile of the same.
    pub age_p95_seconds: f64,
    /// The oldest any message got while waiting, seconds.
    pub age_max_seconds: f64,
    /// Seconds during which the oldest waiting message was older than the
    /// objective.
    pub seconds_over_objective: u64,
    /// Sum over each second of the pods that existed (starting, ready and
    /// finishing their last message): what the run costs.
    pub replica_seconds: u64,
    /// Times the replica count was changed.
    pub scale_actions: u64,
    /// Most messages visible + in flight at once.
    pub peak_backlog: u64,
}

/// Per-second values of one run, for the chart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// Messages arriving in each second.
    pub arrivals: Vec<f64>,
    /// Visible + in-flight messages.
    pub backlog: Vec<f64>,
    /// Age of the oldest visible message, seconds.
    pub oldest_age: Vec<f64>,
    /// Replicas (pods that exist and are not leaving).
    pub replicas: Vec<f64>,
}

/// One finished run: which autoscaler, what it measured, how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// `qscale` or `hpa`.
    pub name: String,
    pub metrics: Metrics,
    pub series: Series,
}

/// Accumulates a run's figures one second at a time.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    objective: f64,
    over: u64,
    replica_seconds: u64,
    actions: u64,
    peak: u64,
    oldest_max: f64,
    series: Series,
}

impl Recorder {
    /// `objective`: the age, seconds, above which a second counts as over.
    pub fn new(objective: f64, seconds: usize) -> Recorder {
        Recorder {
            objective,
            series: Series {
                arrivals: Vec::with_capacity(seconds),
                backlog: Vec::with_capacity(seconds),
                oldest_age: Vec::with_capacity(seconds),
                replicas: Vec::with_capacity(seconds),
            },
            ..Recorder::default()
        }
    }

    /// The autoscaler changed the replica count.
    pub fn scale_action(&mut self) {
        self.actions += 1;
    }

    /// The state of one second, after its arrivals and any scaling.
    pub fn second(&mut self, arrivals: u64, o: &Observation) {
        let backlog = o.visible + o.in_flight;
        if o.oldest_age > self.objective {
            self.over += 1;
        }
        self.replica_seconds += u64::from(o.billed);
        self.peak = self.peak.max(backlog);
        self.oldest_max = self.oldest_max.max(o.oldest_age);
        self.series.arrivals.push(arrivals as f64);
        self.series.backlog.push(backlog as f64);
        self.series.oldest_age.push(o.oldest_age);
        self.series.replicas.push(f64::from(o.pods));
    }

    /// Close the run with the waits the model recorded.
    pub fn finish(self, name: &str, waits: &WaitHistogram) -> Run {
        Run {
            name: name.to_string(),
            metrics: Metrics {
                age_p50_seconds: waits.quantile(0.5),
                age_p95_seconds: waits.quantile(0.95),
                age_max_seconds: round1(self.oldest_max.max(waits.quantile(1.0))),
                seconds_over_objective: self.over,
                replica_seconds: self.replica_seconds,
                scale_actions: self.actions,
                peak_backlog: self.peak,
            },
            series: self.series,
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// How one row of the table renders a run's figure.
type Cell = Box<dyn Fn(&Metrics) -> String>;

/// The summary table, one column per run.
pub fn table(runs: &[&Run], objective_label: &str) -> String {
    let rows: Vec<(String, Cell)> = vec![
        (
            "message age p50 (s)".into(),
            Box::new(|m| format!("{:.1}", m.age_p50_seconds)),
        ),
        (
            "message age p95 (s)".into(),
            Box::new(|m| format!("{:.1}", m.age_p95_seconds)),
        ),
        (
            "message age max (s)".into(),
            Box::new(|m| format!("{:.1}", m.age_max_seconds)),
        ),
        (
            format!("seconds over objective ({objective_label})"),
            Box::new(|m| m.seconds_over_objective.to_string()),
        ),
        (
            "replica-seconds".into(),
            Box::new(|m| m.replica_seconds.to_string()),
        ),
        (
            "scale actions".into(),
            Box::new(|m| m.scale_actions.to_string()),
        ),
        (
            "peak backlog (messages)".into(),
            Box::new(|m| m.peak_backlog.to_string()),
        ),
    ];
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut out = String::new();
    let _ = write!(out, "{:label_width$}", "");
    for r in runs {
        let _ = write!(out, "  {:>12}", r.name);
    }
    out.push('\n');
    for (label, f) in &rows {
        let _ = write!(out, "{label:label_width$}");
        for r in runs {
            let _ = write!(out, "  {:>12}", f(&r.metrics));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(visible: u64, age: f64, pods: u32) -> Observation {
        Observation {
            now: 0,
            visible,
            in_flight: 1,
            oldest_age: age,
            desired: pods,
            pods,
            ready: pods,
            billed: pods,
        }
    }

    #[test]
    fn the_recorder_counts_seconds_over_objective_replica_seconds_and_peak_backlog() {
        let mut r = Recorder::new(10.0, 3);
        r.second(5, &obs(3, 2.0, 2));
        r.second(0, &obs(40, 11.0, 3));
        r.scale_action();
        r.second(0, &obs(9, 10.0, 3));
        let run = r.finish("qscale", &WaitHistogram::default());
        let m = &run.metrics;
        assert_eq!(m.seconds_over_objective, 1);
        assert_eq!(m.replica_seconds, 8);
        assert_eq!(m.peak_backlog, 41);
        assert_eq!(m.scale_actions, 1);
        assert_eq!(m.age_max_seconds, 11.0);
        assert_eq!(run.series.backlog, vec![4.0, 41.0, 10.0]);
    }

    #[test]
    fn the_table_puts_runs_side_by_side_with_one_row_per_figure() {
        let r = Recorder::new(1.0, 0).finish("qscale", &WaitHistogram::default());
        let h = Run {
            name: "hpa".into(),
            ..r.clone()
        };
        let t = table(&[&r, &h], "1m");
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 8, "{t}");
        assert!(lines[0].contains("qscale") && lines[0].contains("hpa"));
        assert!(t.contains("seconds over objective (1m)"));
    }

    #[test]
    fn json_metrics_use_the_documented_field_names() {
        let r = Recorder::new(1.0, 0).finish("qscale", &WaitHistogram::default());
        let v = serde_json::to_value(&r.metrics).unwrap();
        for k in [
            "age_p50_seconds",
            "age_p95_seconds",
            "age_max_seconds",
            "seconds_over_objective",
            "replica_seconds",
            "scale_actions",
            "peak_backlog",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
    }
}
