//! The SVG chart of a simulation: four stacked panels sharing a time axis.
//!
//! Arrivals, backlog, oldest-message age and replicas have different units
//! and scales, so each gets its own panel with its own labelled y axis
//! rather than one chart with four unreadable overlays. With `--compare`,
//! every panel but arrivals (which both runs share) shows one line per
//! autoscaler, with a legend; the age panel also draws the objective.
//!
//! The drawing itself is [`crate::chart`], which the daemon's timeline
//! chart shares. A 24 h run has 86 400 points per series; the chart keeps at most
//! [`MAX_POINTS`] per line (the mean for arrivals, the maximum for the
//! others, so a short spike of age or backlog is never smoothed away).

use super::report::Run;
use crate::chart::{Chart, Line, Panel, render_svg as render_chart};

pub use crate::chart::ChartError;

/// Points per line at most.
pub const MAX_POINTS: usize = 1500;

/// Reduce `values` to at most `MAX_POINTS` (x in `unit` seconds, y).
fn downsample(values: &[f64], unit: f64, mean: bool) -> Vec<(f64, f64)> {
    let bucket = values.len().div_ceil(MAX_POINTS).max(1);
    values
        .chunks(bucket)
        .enumerate()
        .map(|(i, c)| {
            let y = if mean {
                c.iter().sum::<f64>() / c.len() as f64
            } else {
                c.iter().copied().fold(0.0, f64::max)
            };
            ((i * bucket) as f64 / unit, y)
        })
        .collect()
}

/// Render the runs (one or more over the same trace) as an SVG document.
pub fn render_svg(runs: &[&Run], title: &str, objective: f64) -> Result<String, ChartError> {
    let Some(first) = runs.first() else {
        return Err(ChartError("no run to draw".into()));
    };
    let seconds = first.series.arrivals.len().max(1);
    let (unit, x_label) = if seconds > 3 * 3600 {
        (3600.0, "time (hours)")
    } else {
        (60.0, "time (minutes)")
    };
    // One line per run, coloured by run, labelled "<panel> (<run>)".
    let per_run = |panel: &str, f: fn(&Run) -> &[f64]| -> Vec<Line> {
        runs.iter()
            .enumerate()
            .map(|(i, r)| Line {
                label: format!("{panel} ({})", r.name),
                colour: i,
                points: downsample(f(r), unit, false),
            })
            .collect()
    };
    let panel = |title: &str, y_label: &str, lines: Vec<Line>| Panel {
        title: title.to_string(),
        y_label: y_label.to_string(),
        lines,
        reference: None,
    };
    let panels = vec![
        panel(
            "arrivals",
            "messages/s",
            vec![Line {
                label: "arrivals".to_string(),
                colour: 0,
                points: downsample(&first.series.arrivals, unit, true),
            }],
        ),
        panel(
            "backlog",
            "messages",
            per_run("backlog", |r| &r.series.backlog),
        ),
        Panel {
            reference: Some((format!("objective ({}s)", objective.round()), objective)),
            ..panel(
                "oldest age",
                "seconds",
                per_run("oldest age", |r| &r.series.oldest_age),
            )
        },
        panel(
            "replicas",
            "replicas",
            per_run("replicas", |r| &r.series.replicas),
        ),
    ];
    render_chart(&Chart {
        title: title.to_string(),
        x_label: x_label.to_string(),
        x_range: 0.0..seconds as f64 / unit,
        size: (1100, 1200),
        panels,
        legend_left: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_keeps_spikes_and_the_mean_of_arrivals() {
        let mut v = vec![1.0; 10 * MAX_POINTS];
        v[12_345] = 99.0;
        let maxed = downsample(&v, 1.0, false);
        assert!(maxed.len() <= MAX_POINTS);
        assert!(maxed.iter().any(|p| p.1 == 99.0));
        let meaned = downsample(&v, 1.0, true);
        assert!(meaned.iter().all(|p| p.1 < 99.0));
        assert!(downsample(&[], 1.0, true).is_empty());
    }
}
