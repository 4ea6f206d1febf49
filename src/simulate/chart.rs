//! The SVG chart of a simulation: four stacked panels sharing a time axis.
//!
//! Arrivals, backlog, oldest-message age and replicas have different units
//! and scales, so each gets its own panel with its own labelled y axis
//! rather than one chart with four unreadable overlays. With `--compare`,
//! every panel but arrivals (which both runs share) shows one line per
//! autoscaler, with a legend; the age panel also draws the objective.
//!
//! A 24 h run has 86 400 points per series; the chart keeps at most
//! [`MAX_POINTS`] per line (the mean for arrivals, the maximum for the
//! others, so a short spike of age or backlog is never smoothed away).

use plotters::prelude::*;

use super::report::Run;

/// Points per line at most.
pub const MAX_POINTS: usize = 1500;

/// Why the chart could not be drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct ChartError(String);

/// Line colours, one per run.
const COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
];

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

fn err(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

/// One panel's content: its series name, y-axis label and, per run, values.
struct Panel<'a> {
    name: &'static str,
    y_label: &'static str,
    lines: Vec<(String, &'a [f64])>,
    mean: bool,
    /// A horizontal reference line (the age objective).
    reference: Option<(String, f64)>,
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
    let x_max = seconds as f64 / unit;
    let per_run = |f: fn(&Run) -> &[f64]| -> Vec<(String, &[f64])> {
        runs.iter().map(|r| (r.name.clone(), f(r))).collect()
    };
    let panels = [
        Panel {
            name: "arrivals",
            y_label: "messages/s",
            lines: vec![("arrivals".to_string(), first.series.arrivals.as_slice())],
            mean: true,
            reference: None,
        },
        Panel {
            name: "backlog",
            y_label: "messages",
            lines: per_run(|r| &r.series.backlog),
            mean: false,
            reference: None,
        },
        Panel {
            name: "oldest age",
            y_label: "seconds",
            lines: per_run(|r| &r.series.oldest_age),
            mean: false,
            reference: Some(("objective".to_string(), objective)),
        },
        Panel {
            name: "replicas",
            y_label: "replicas",
            lines: per_run(|r| &r.series.replicas),
            mean: false,
            reference: None,
        },
    ];

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 1200)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
        let areas = root.split_evenly((panels.len(), 1));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            let lines: Vec<(String, Vec<(f64, f64)>)> = panel
                .lines
                .iter()
                .map(|(n, v)| (n.clone(), downsample(v, unit, panel.mean)))
                .collect();
            let y_top = lines
                .iter()
                .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
                .chain(panel.reference.as_ref().map(|r| r.1))
                .fold(0.0, f64::max);
            let y_max = if y_top > 0.0 { y_top * 1.1 } else { 1.0 };
            let mut chart = ChartBuilder::on(area)
                .caption(panel.name, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..x_max.max(1e-9), 0.0..y_max)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(panel.y_label)
                .light_line_style(WHITE)
                .draw()
                .map_err(err)?;
            for (i, (name, pts)) in lines.into_iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let label = if panel.lines.len() > 1 || panel.name != "arrivals" {
                    format!("{} ({name})", panel.name)
                } else {
                    name
                };
                chart
                    .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                    .map_err(err)?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
            }
            if let Some((name, y)) = &panel.reference {
                let grey = RGBColor(120, 120, 120);
                chart
                    .draw_series(LineSeries::new(
                        vec![(0.0, *y), (x_max, *y)],
                        grey.stroke_width(1),
                    ))
                    .map_err(err)?
                    .label(format!("{name} ({}s)", y.round()))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
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
