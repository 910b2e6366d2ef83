//! `--plot out.svg`: three panels over the seconds of the measured window, one colour per target:
//! delivered/s, acked sends/s, and send→deliver p50/p90/p99/max on a log scale (line styles tell
//! the percentiles apart). plotters with only its SVG backend: text is laid out with its
//! built-in estimate and drawn by the viewer's sans-serif, so no font library is built.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::series::Second;

/// What one plot shows: a title and, per target, its (median) seconds.
pub struct Plot {
    pub title: String,
    pub series: Vec<(String, Vec<Second>)>,
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// tsunagi first, then the peer, then any other target.
const COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const FONT: &str = "sans-serif";

pub fn draw(p: &Plot, path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&p.title, (FONT, 18))?;
    let (top, bottom) = root.split_vertically(520);
    let rates = top.split_evenly((2, 1));
    let x_max = p
        .series
        .iter()
        .flat_map(|(_, s)| s.last())
        // the window's end: the last bucket's middle is halfway from its whole second
        .map(|s| s.t_s * 2.0 - s.t_s.floor())
        .fold(1.0, f64::max);
    rate_panel(&rates[0], p, x_max, "delivered messages/s", |s| {
        s.delivered_per_s
    })?;
    rate_panel(&rates[1], p, x_max, "acked sends/s", |s| {
        s.acked_sends_per_s
    })?;
    latency_panel(&bottom, p, x_max)?;
    root.present()?;
    Ok(())
}

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn points(s: &[Second], f: impl Fn(&Second) -> f64) -> Vec<(f64, f64)> {
    s.iter()
        .map(|x| (x.t_s, f(x)))
        .filter(|(_, y)| y.is_finite())
        .collect()
}

fn rate_panel(
    area: &Area,
    p: &Plot,
    x_max: f64,
    what: &str,
    f: impl Fn(&Second) -> f64 + Copy,
) -> anyhow::Result<()> {
    let y_max = p
        .series
        .iter()
        .flat_map(|(_, s)| points(s, f))
        .map(|(_, y)| y)
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(what, (FONT, 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the window")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (name, s)) in p.series.iter().enumerate() {
        let style = color(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points(s, f), style))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// The percentiles drawn, with how each is told apart: (name, figure, stroke, dash length).
type Percentile = (&'static str, fn(&Second) -> f64, u32, Option<u32>);
const PERCENTILES: [Percentile; 4] = [
    ("p50", |s| s.p50_ms, 3, None),
    ("p90", |s| s.p90_ms, 1, None),
    ("p99", |s| s.p99_ms, 2, Some(8)),
    ("max", |s| s.max_ms, 1, Some(2)),
];

fn latency_panel(area: &Area, p: &Plot, x_max: f64) -> anyhow::Result<()> {
    let ys: Vec<f64> = p
        .series
        .iter()
        .flat_map(|(_, s)| PERCENTILES.iter().flat_map(|(_, f, ..)| points(s, f)))
        .map(|(_, y)| y)
        .filter(|y| *y > 0.0)
        .collect();
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().copied().fold(0.0, f64::max);
    let (lo, hi) = if ys.is_empty() {
        (0.1, 10.0)
    } else {
        (lo * 0.7, hi * 1.5)
    };
    let mut chart = ChartBuilder::on(area)
        .caption("send→deliver latency, ms (log scale)", (FONT, 15))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("seconds into the window")
        // more than the powers of ten: a window's latencies often span less than a decade
        .y_labels(15)
        .y_label_formatter(&|v| match *v {
            v if v >= 10.0 => format!("{v:.0}"),
            v if v >= 1.0 => format!("{v:.1}"),
            v => format!("{v:.2}"),
        })
        .draw()?;
    for (i, (name, s)) in p.series.iter().enumerate() {
        for (pct, f, width, dash) in PERCENTILES {
            let style = color(i).stroke_width(width);
            let pts = points(s, f);
            let label = format!("{name} {pct}");
            let drawn = match dash {
                None => chart.draw_series(LineSeries::new(pts, style))?,
                Some(d) => chart.draw_series(DashedLineSeries::new(pts, d, d, style))?,
            };
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
