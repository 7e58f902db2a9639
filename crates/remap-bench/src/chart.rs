//! The SVG chart: throughput versus chunk size per method (log scales), and fault-service latency
//! percentiles per handler.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use crate::report::{Method, Report};

/// Why the chart could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing the chart {path}: {message}")]
pub struct ChartError {
    /// The file asked for.
    pub path: String,
    /// What plotters or the file system said.
    pub message: String,
}

/// The legend label of a bulk series: the method name, then `THP on`/`THP off`, then `+ spin`
/// when a second thread was live.
///
/// ```
/// use remap_bench::{chart::series_label, Method};
/// assert_eq!(series_label(Method::MoveRaw, true, false), "move-raw THP on");
/// ```
pub fn series_label(method: Method, thp: bool, interference: bool) -> String {
    format!(
        "{} THP {}{}",
        method.name(),
        if thp { "on" } else { "off" },
        if interference { " + spin" } else { "" }
    )
}

/// Writes the chart of `report` to `path` as SVG: on the left, GB/s against chunk size per
/// method (log-log, one line per method and THP setting, dashed with a second thread live); on
/// the right, the p50, p99 and p99.9 fault latencies in microseconds per handler (log).
///
/// # Errors
///
/// [`ChartError`] when the file cannot be written or the drawing fails.
pub fn write_chart(report: &Report, path: &Path) -> Result<(), ChartError> {
    let err = |e: &dyn std::fmt::Display| ChartError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
    }
    let root = SVGBackend::new(path, (1400, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let m = &report.config.machine;
    let root = root
        .titled(
            &format!(
                "remap bench: Linux {}, {} cores, THP {}, {} per run",
                m.kernel,
                m.cores,
                m.thp_mode,
                crate::report::human_bytes(report.config.size_bytes)
            ),
            ("sans-serif", 22),
        )
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(860);
    draw_bulk(report, &left).map_err(|e| err(&e))?;
    draw_faults(report, &right).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_bulk(report: &Report, area: &Area<'_>) -> DrawResult {
    let ok: Vec<_> = report
        .measurements
        .iter()
        .filter(|m| m.verified && m.gb_per_s.is_finite() && m.gb_per_s > 0.0)
        .collect();
    let x_min = ok.iter().map(|m| m.chunk_bytes).min().unwrap_or(4096) as f64;
    let x_max = ok.iter().map(|m| m.chunk_bytes).max().unwrap_or(1 << 27) as f64;
    let y_min = ok.iter().map(|m| m.gb_per_s).fold(f64::INFINITY, f64::min);
    let y_max = ok.iter().map(|m| m.gb_per_s).fold(0.0, f64::max);
    let (y_min, y_max) = if y_min.is_finite() && y_max > 0.0 {
        (y_min / 2.0, y_max * 2.0)
    } else {
        (0.01, 100.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Bulk move throughput vs chunk size (higher is better)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (x_min / 1.5..x_max * 1.5)
                .log_scale()
                .with_key_points(report.config.chunks.iter().map(|&c| c as f64).collect()),
            (y_min..y_max).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("bytes per operation (chunk size, log scale)")
        .y_desc("GB/s (log scale)")
        .x_label_formatter(&|x| label_bytes(*x))
        .y_label_formatter(&|y| format!("{y:.2}"))
        .draw()?;
    let mut series: Vec<(Method, bool, bool)> = Vec::new();
    for m in &ok {
        let key = (m.method, m.thp, m.interference);
        if !series.contains(&key) {
            series.push(key);
        }
    }
    for (i, &(method, thp, spin)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = ok
            .iter()
            .filter(|m| (m.method, m.thp, m.interference) == (method, thp, spin))
            .map(|m| (m.chunk_bytes as f64, m.gb_per_s))
            .collect();
        let style = ShapeStyle::from(&color).stroke_width(if spin { 1 } else { 2 });
        chart
            .draw_series(LineSeries::new(points.clone(), style))?
            .label(series_label(method, thp, spin))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, 3, ShapeStyle::from(&color).filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}

/// The chunk size at axis position `x` (a key point: one of the measured chunk sizes).
fn label_bytes(x: f64) -> String {
    if !(1.0..1e18).contains(&x) {
        return String::new();
    }
    // In range and non-negative, so the conversion cannot truncate or lose a sign.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let b = x.round() as u64;
    crate::report::human_bytes(b)
}

fn draw_faults(report: &Report, area: &Area<'_>) -> DrawResult {
    let ok: Vec<_> = report
        .faults
        .iter()
        .filter(|f| f.verified && f.p50_ns.is_finite() && f.p50_ns > 0.0)
        .collect();
    let all_us = ok
        .iter()
        .flat_map(|f| [f.p50_ns, f.p99_ns, f.p999_ns])
        .map(|ns| ns / 1e3);
    let (lo, hi) = all_us.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 2.0, hi * 2.0)
    } else {
        (1.0, 1000.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Fault service latency (lower is better)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.3f64..2.3f64, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency per fault, us (log scale)")
        .x_labels(3)
        .x_label_formatter(&|x| {
            let x = x.round();
            if x == 0.0 {
                "p50"
            } else if x == 1.0 {
                "p99"
            } else if x == 2.0 {
                "p99.9"
            } else {
                ""
            }
            .to_owned()
        })
        .y_label_formatter(&|y| format!("{y:.1}"))
        .draw()?;
    for (i, f) in ok.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points = vec![
            (0.0, f.p50_ns / 1e3),
            (1.0, f.p99_ns / 1e3),
            (2.0, f.p999_ns / 1e3),
        ];
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!(
                "{} {}h/{}m",
                f.method.name(),
                f.handlers,
                f.mutators
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        chart.draw_series(
            points
                .iter()
                .map(|&p| Circle::new(p, 3, ShapeStyle::from(&color).filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()?;
    Ok(())
}
