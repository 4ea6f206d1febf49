//! Stacked-panel SVG line charts: the one SVG writer of the crate.
//!
//! The simulator's report (`qscale simulate --chart`) and the daemon's own
//! timeline (`/chart/<scaler>.svg`) both show queue series with different
//! units (messages, seconds, replicas) over one time axis. Each series group
//! gets its own panel with its own labelled y axis rather than one chart of
//! unreadable overlays, and both callers describe their panels as plain data
//! here, so the drawing (axes, legends, gaps) is written once.
//!
//! An unknown value (NaN, or an infinite one) breaks its line: a gap, never a
//! drop to zero, since a missing measurement is not a zero one.

use std::ops::Range;

use plotters::prelude::*;

/// Line colours; a caller picks them by index (wrapping).
pub const PALETTE: [(u8, u8, u8); 4] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
];

/// The colour of a reference line (an objective).
const REFERENCE_GREY: RGBColor = RGBColor(120, 120, 120);

/// Why a chart could not be drawn.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot draw the chart: {0}")]
pub struct ChartError(pub String);

impl ChartError {
    /// A bounded label for logs and metrics.
    pub fn metric_label(&self) -> &'static str {
        "chart"
    }
}

/// One line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The legend entry.
    pub label: String,
    /// Index into [`PALETTE`].
    pub colour: usize,
    /// (x, y) in the chart's x unit; a non-finite y is a gap.
    pub points: Vec<(f64, f64)>,
}

/// One panel: its own y axis, lines and an optional horizontal reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    /// A horizontal reference line (e.g. the age objective) and its legend.
    pub reference: Option<(String, f64)>,
}

/// A chart: panels stacked top to bottom over one x range.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub x_range: Range<f64>,
    /// Width and height in pixels.
    pub size: (u32, u32),
    pub panels: Vec<Panel>,
    /// Legends in the upper left corner instead of the upper right, where
    /// a chart whose newest data is on the right keeps it uncovered.
    pub legend_left: bool,
}

fn err(e: impl std::fmt::Display) -> ChartError {
    ChartError(e.to_string())
}

/// The runs of finite points of a line: its drawable segments.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            current.push((x, y));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// The colour of palette entry `i` as the SVG writes it (`#1F77B4`), for
/// tests that find a line in a rendered chart.
pub fn hex(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02X}{g:02X}{b:02X}")
}

/// Render `chart` as an SVG document.
pub fn render_svg(chart: &Chart) -> Result<String, ChartError> {
    if chart.panels.is_empty() {
        return Err(ChartError("no panel to draw".into()));
    }
    let x = &chart.x_range;
    // plotters rejects an empty range; a chart of one instant gets a sliver.
    let x_range = if x.end > x.start && x.start.is_finite() && x.end.is_finite() {
        x.clone()
    } else {
        let start = if x.start.is_finite() { x.start } else { 0.0 };
        start..start + 1e-9
    };
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, chart.size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&chart.title, ("sans-serif", 22)).map_err(err)?;
        let areas = root.split_evenly((chart.panels.len(), 1));
        for (panel, area) in chart.panels.iter().zip(areas.iter()) {
            let y_top = panel
                .lines
                .iter()
                .flat_map(|l| l.points.iter().map(|p| p.1))
                .chain(panel.reference.as_ref().map(|r| r.1))
                .filter(|y| y.is_finite())
                .fold(0.0, f64::max);
            let y_max = if y_top > 0.0 { y_top * 1.1 } else { 1.0 };
            let mut plot = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(x_range.clone(), 0.0..y_max)
                .map_err(err)?;
            plot.configure_mesh()
                .x_desc(chart.x_label.as_str())
                .y_desc(panel.y_label.as_str())
                .light_line_style(WHITE)
                .draw()
                .map_err(err)?;
            let mut legend = false;
            for line in &panel.lines {
                let c = colour(line.colour);
                for (i, seg) in segments(&line.points).into_iter().enumerate() {
                    let drawn = plot
                        .draw_series(LineSeries::new(seg, c.stroke_width(2)))
                        .map_err(err)?;
                    // One legend entry per line, not per segment.
                    if i == 0 {
                        legend = true;
                        drawn.label(line.label.as_str()).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                        });
                    }
                }
            }
            if let Some((name, y)) = &panel.reference {
                legend = true;
                plot.draw_series(LineSeries::new(
                    vec![(x_range.start, *y), (x_range.end, *y)],
                    REFERENCE_GREY.stroke_width(1),
                ))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], REFERENCE_GREY));
            }
            if legend {
                plot.configure_series_labels()
                    .position(if chart.legend_left {
                        SeriesLabelPosition::UpperLeft
                    } else {
                        SeriesLabelPosition::UpperRight
                    })
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .draw()
                    .map_err(err)?;
            }
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, f64)>) -> Chart {
        Chart {
            title: "t".into(),
            x_label: "x".into(),
            x_range: 0.0..10.0,
            size: (400, 300),
            legend_left: false,
            panels: vec![Panel {
                title: "backlog".into(),
                y_label: "messages".into(),
                lines: vec![Line {
                    label: "backlog".into(),
                    colour: 0,
                    points,
                }],
                reference: None,
            }],
        }
    }

    #[test]
    fn an_unknown_value_breaks_the_line_instead_of_dropping_to_zero() {
        let pts = vec![
            (0.0, 1.0),
            (1.0, 2.0),
            (2.0, f64::NAN),
            (3.0, 4.0),
            (4.0, 5.0),
        ];
        assert_eq!(
            segments(&pts),
            vec![vec![(0.0, 1.0), (1.0, 2.0)], vec![(3.0, 4.0), (4.0, 5.0)]]
        );
        let svg = render_svg(&chart(pts)).expect("renders");
        // Axis ticks are thin polylines too; data lines are 2 px wide.
        assert_eq!(
            svg.matches(&format!("stroke=\"{}\" stroke-width=\"2\"", hex(0)))
                .count(),
            2 + 1,
            "two segments and the legend mark: {svg}"
        );
    }

    #[test]
    fn a_chart_without_panels_or_with_an_empty_range_is_an_error_or_a_sliver_not_a_panic() {
        let mut c = chart(vec![]);
        c.x_range = 5.0..5.0;
        assert!(render_svg(&c).is_ok());
        c.panels.clear();
        assert!(render_svg(&c).is_err());
    }
}
