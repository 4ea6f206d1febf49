//! A scaler's timeline as an SVG chart (/chart/<scaler>.svg).
//!
//! Three stacked panels over the last hour or so: backlog, the oldest
//! message's age, and replicas (desired and ready), so "the backlog grew,
//! the age crossed the objective, qscale asked for more, the workers came
//! up" reads top to bottom. Downsampled minutes draw their maximum backlog
//! and age (a spike stays visible), the desired count's maximum and the
//! ready count's minimum (the worst of the minute), as a flat step over the
//! minute, so the coarse past never looks like a smooth trend. Time runs in
//! minutes before the newest poll.

use crate::chart::{Chart, ChartError, Line, Panel, render_svg as render_chart};

use super::History;

/// The panel titles and legends, which the browser test looks for.
pub const BACKLOG: &str = "backlog";
pub const OLDEST_AGE: &str = "oldest message age";
pub const DESIRED: &str = "desired replicas";
pub const READY: &str = "ready replicas";
/// Each line's legend and its [`crate::chart::PALETTE`] index.
pub const LINES: [(&str, usize); 4] = [(BACKLOG, 0), (OLDEST_AGE, 1), (DESIRED, 2), (READY, 3)];

fn y<T: Into<f64>>(v: Option<T>) -> f64 {
    v.map_or(f64::NAN, Into::into)
}

fn u(v: Option<u64>) -> f64 {
    v.map_or(f64::NAN, |x| x as f64)
}

/// Render `h` as an SVG document.
pub fn render_svg(h: &History) -> Result<String, ChartError> {
    let newest = h
        .points
        .last()
        .map(|p| p.at)
        .or_else(|| h.buckets.last().map(|b| b.start + h.bucket_seconds))
        .unwrap_or(0.0);
    let oldest = h
        .buckets
        .first()
        .map(|b| b.start)
        .or_else(|| h.points.first().map(|p| p.at))
        .unwrap_or(newest);
    let x = |at: f64| (at - newest) / 60.0;
    // Where each bucket ends: the next bucket's start, or the first poll
    // kept at full resolution (the newest bucket is partial).
    let ends: Vec<f64> = h
        .buckets
        .iter()
        .skip(1)
        .map(|b| b.start)
        .chain(h.points.first().map(|p| p.at))
        .chain(std::iter::once(newest))
        .zip(&h.buckets)
        .map(|(next, b)| next.min(b.start + h.bucket_seconds))
        .collect();
    // One series across buckets then points. A bucket is a flat step over
    // its minute, not a point a line interpolates from.
    let series = |from_bucket: &dyn Fn(&super::BucketView) -> f64,
                  from_point: &dyn Fn(&super::PointView) -> f64| {
        h.buckets
            .iter()
            .zip(&ends)
            .flat_map(|(b, end)| {
                let v = from_bucket(b);
                [(x(b.start), v), (x(*end), v)]
            })
            .chain(h.points.iter().map(|p| (x(p.at), from_point(p))))
            .collect::<Vec<_>>()
    };
    let line = |i: usize, points: Vec<(f64, f64)>| Line {
        label: LINES[i].0.to_string(),
        colour: LINES[i].1,
        points,
    };
    let panel = |title: &str, y_label: &str, lines: Vec<Line>| Panel {
        title: title.to_string(),
        y_label: y_label.to_string(),
        lines,
        reference: None,
    };
    let panels = vec![
        panel(
            BACKLOG,
            "messages",
            vec![line(0, series(&|b| u(b.backlog.max), &|p| u(p.backlog)))],
        ),
        panel(
            OLDEST_AGE,
            "seconds",
            vec![line(
                1,
                series(&|b| y(b.oldest_age_seconds.max), &|p| {
                    y(p.oldest_age_seconds)
                }),
            )],
        ),
        panel(
            "replicas",
            "replicas",
            vec![
                line(2, series(&|b| u(b.desired.max), &|p| y(p.desired))),
                line(3, series(&|b| u(b.ready.min), &|p| y(p.ready))),
            ],
        ),
    ];
    render_chart(&Chart {
        title: format!("qscale: {}", h.scaler),
        x_label: "minutes before the last poll".to_string(),
        // At least a second wide: plotters needs a range.
        x_range: x(oldest).min(-1.0 / 60.0)..0.0,
        size: (900, 720),
        panels,
        legend_left: true,
    })
}

#[cfg(test)]
mod tests {
    use super::super::{Poll, Timeline};
    use super::*;

    #[test]
    fn the_chart_draws_backlog_age_desired_and_ready_lines_and_escapes_the_title() {
        let mut t = Timeline::new();
        for i in 0..900u32 {
            t.push(&Poll {
                at: 1_700_000_000.0 + f64::from(i) * 5.0,
                backlog: Some(u64::from(i % 40)),
                oldest_age: Some(f64::from(i % 13)),
                desired: Some(1 + i % 4),
                current: Some(1 + i % 4),
                ready: Some(1 + i % 3),
                ..Poll::default()
            });
        }
        let svg = render_svg(&t.view("<a&b>")).expect("renders");
        for (label, colour) in LINES {
            assert!(svg.contains(label), "{label} missing");
            // The line and its legend mark.
            let stroke = format!(
                "stroke=\"{}\" stroke-width=\"2\"",
                crate::chart::hex(colour)
            );
            assert_eq!(svg.matches(&stroke).count(), 2, "{label}: {svg}");
        }
        assert!(!svg.contains("<a&b>"), "title must be escaped");
    }

    #[test]
    fn an_empty_history_still_draws_empty_panels() {
        let svg = render_svg(&Timeline::new().view("idle")).expect("renders");
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(BACKLOG));
    }
}
