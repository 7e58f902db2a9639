//! The SVG chart: throughput versus chunk size per method (log scales), and fault-service latency
//! percentiles per handler (medians over the repetitions).
//!
//! The chart is meant to be read without the table: each method has one strong colour, the other
//! dimensions of a series are its line style and marker, every panel states that encoding in a
//! line under its caption, and the legends sit in a column beside the plots, never over the data.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::CoordTranslate;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{FaultMeasurement, FaultMethod, Method, Report};

/// Why the chart could not be written. Either way the run's figures stand; the chart is lost.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChartError {
    /// The directory for the chart could not be created.
    #[error("writing the chart {path}: creating its directory")]
    Directory {
        /// The file asked for.
        path: std::path::PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// plotters failed to draw or to write the SVG file. plotters' error type is generic over
    /// the backend, so its message is kept as text.
    #[error("writing the chart {path}: {message}")]
    Draw {
        /// The file asked for.
        path: std::path::PathBuf,
        /// What plotters said.
        message: String,
    },
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

/// Writes the chart of `report` to `path` as SVG.
///
/// At the top, GB/s against chunk size (log-log): one colour per method; a solid line with
/// filled circles for THP on, a dashed line with hollow circles for THP off, and a dotted line
/// with triangles when a second thread was spinning. Below, the p50, p99 and p99.9 fault
/// latencies in microseconds (log; the median over the repetitions of each), one small panel per mutator-thread count: one colour per
/// fault-service method, the line style telling the handler-thread count. Each panel has its
/// legend in a column to its right, with one entry per series labelled as [`series_label`] (bulk)
/// or `method Nh/Mm` (faults) says.
///
/// # Errors
///
/// [`ChartError`] when the file cannot be written or the drawing fails.
pub fn write_chart(report: &Report, path: &Path) -> Result<(), ChartError> {
    let err = |e: &dyn std::fmt::Display| ChartError::Draw {
        path: path.to_owned(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| ChartError::Directory {
            path: path.to_owned(),
            source,
        })?;
    }
    let root = SVGBackend::new(path, (WIDTH, BULK_HEIGHT + FAULT_HEIGHT + TITLE_HEIGHT))
        .into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let m = &report.config.machine;
    let title = format!(
        "remap bench: Linux {}, {} cores, THP {}, {} per run",
        m.kernel_release,
        m.cores,
        m.thp,
        crate::report::human_bytes(report.config.size_bytes)
    );
    let (head, rest) = root.split_vertically(TITLE_HEIGHT);
    head.draw_text(
        &title,
        &TextStyle::from(("sans-serif", 24).into_font().style(FontStyle::Bold))
            .pos(Pos::new(HPos::Center, VPos::Center)),
        (i32::try_from(WIDTH / 2).unwrap_or(0), 22),
    )
    .map_err(|e| err(&e))?;
    let (bulk, faults) = rest.split_vertically(BULK_HEIGHT);
    draw_bulk(report, &bulk).map_err(|e| err(&e))?;
    draw_faults(report, &faults).map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// Canvas width in pixels.
const WIDTH: u32 = 1600;
/// Height of the title line.
const TITLE_HEIGHT: u32 = 44;
/// Height of the bulk row (caption, encoding line, plot).
const BULK_HEIGHT: u32 = 760;
/// Height of the fault row.
const FAULT_HEIGHT: u32 = 600;
/// Width of the legend column right of each row's plots.
const LEGEND_WIDTH: u32 = 300;
/// Height of a row's caption and encoding lines.
const HEADER_HEIGHT: u32 = 62;

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// A colour that reads on white and is told apart from the others at a glance (the saturated
/// members of the Tableau/D3 "category10" palette, in the order the methods are listed).
const STRONG: [RGBColor; 7] = [
    RGBColor(31, 119, 180),  // blue
    RGBColor(255, 127, 14),  // orange
    RGBColor(44, 160, 44),   // green
    RGBColor(214, 39, 40),   // red
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
];

/// The colour of a bulk method: its position in [`Method::ALL`].
fn method_color(method: Method) -> RGBColor {
    let i = Method::ALL.iter().position(|&m| m == method).unwrap_or(0);
    STRONG[i % STRONG.len()]
}

/// The colour of a fault-service method: its position in [`FaultMethod::ALL`].
fn fault_color(method: FaultMethod) -> RGBColor {
    let i = FaultMethod::ALL
        .iter()
        .position(|&m| m == method)
        .unwrap_or(0);
    STRONG[i % STRONG.len()]
}

/// How a series' line is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// The marker at each measured point.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    Circle,
    Triangle,
}

/// Everything that tells one series from another.
#[derive(Clone, Copy)]
struct Look {
    color: RGBColor,
    dash: Dash,
    width: u32,
    marker: Marker,
    filled: bool,
}

/// Bulk series: colour per method; THP on solid with filled circles, THP off dashed with hollow
/// circles; a second thread spinning dotted with triangles (filled or hollow by THP again).
fn bulk_look(method: Method, thp: bool, spin: bool) -> Look {
    Look {
        color: method_color(method),
        dash: match (spin, thp) {
            (true, _) => Dash::Dotted,
            (false, true) => Dash::Solid,
            (false, false) => Dash::Dashed,
        },
        width: if thp && !spin { 3 } else { 2 },
        marker: if spin {
            Marker::Triangle
        } else {
            Marker::Circle
        },
        filled: thp,
    }
}

/// The styles handler-thread counts get, in increasing count order (SIGBUS mode's 0 handler
/// threads share the first).
const HANDLER_STYLES: [(Dash, Marker, bool); 3] = [
    (Dash::Solid, Marker::Circle, true),
    (Dash::Dashed, Marker::Circle, false),
    (Dash::Dotted, Marker::Triangle, true),
];

/// The style of handler count `h` given the distinct non-zero handler counts `counts`, sorted.
fn handler_style(h: u32, counts: &[u32]) -> (Dash, Marker, bool) {
    let i = counts.iter().position(|&c| c == h).unwrap_or(0);
    HANDLER_STYLES[i % HANDLER_STYLES.len()]
}

/// How a style is called in the encoding lines.
fn style_words(dash: Dash, marker: Marker, filled: bool) -> String {
    let line = match dash {
        Dash::Solid => "solid",
        Dash::Dashed => "dashed",
        Dash::Dotted => "dotted",
    };
    let fill = if filled { "filled" } else { "hollow" };
    let shape = match marker {
        Marker::Circle => "circles",
        Marker::Triangle => "triangles",
    };
    format!("{line} line, {fill} {shape}")
}

/// Draws the line through `points` and the markers on them in `look`.
fn draw_styled<CT: CoordTranslate>(
    area: &DrawingArea<SVGBackend<'_>, CT>,
    points: &[CT::From],
    look: &Look,
) -> DrawResult
where
    CT::From: Clone,
{
    let line = ShapeStyle::from(&look.color).stroke_width(look.width);
    match look.dash {
        Dash::Solid => area.draw(&PathElement::new(points.to_vec(), line))?,
        Dash::Dashed => area.draw(&DashedPathElement::new(points.iter().cloned(), 10, 6, line))?,
        Dash::Dotted => area.draw(&DashedPathElement::new(points.iter().cloned(), 3, 5, line))?,
    }
    for p in points {
        draw_marker(area, p.clone(), look)?;
    }
    Ok(())
}

/// One marker at `p`: filled in the series colour, or white with a coloured outline.
fn draw_marker<CT: CoordTranslate>(
    area: &DrawingArea<SVGBackend<'_>, CT>,
    p: CT::From,
    look: &Look,
) -> DrawResult
where
    CT::From: Clone,
{
    let fill = if look.filled {
        ShapeStyle::from(&look.color).filled()
    } else {
        ShapeStyle::from(&WHITE).filled()
    };
    let outline = ShapeStyle::from(&look.color).stroke_width(2);
    match look.marker {
        Marker::Circle => {
            area.draw(&Circle::new(p.clone(), 4, fill))?;
            if !look.filled {
                area.draw(&Circle::new(p, 4, outline))?;
            }
        }
        Marker::Triangle => {
            // plotters' triangles are always filled: a hollow one is a white one on a coloured.
            area.draw(&TriangleMarker::new(p.clone(), 7, look.color))?;
            if !look.filled {
                area.draw(&TriangleMarker::new(p, 3, WHITE))?;
            }
        }
    }
    Ok(())
}

/// Draws a row's caption (bold) and the line explaining its encoding above the plots, and
/// returns the area below them.
fn draw_header<'a>(
    area: &Area<'a>,
    caption: &str,
    encoding: &[String],
) -> Result<Area<'a>, Box<dyn std::error::Error>> {
    let (head, body) = area.split_vertically(HEADER_HEIGHT);
    head.draw_text(
        caption,
        &TextStyle::from(("sans-serif", 19).into_font().style(FontStyle::Bold)),
        (16, 8),
    )?;
    let small = TextStyle::from(("sans-serif", 15).into_font()).color(&RGBColor(40, 40, 40));
    for (i, line) in encoding.iter().enumerate() {
        let y = 32 + 18 * i32::try_from(i).unwrap_or(0);
        head.draw_text(line, &small, (16, y))?;
    }
    Ok(body)
}

/// Draws a legend in `area` (a column beside the plots): one group of entries per method, each
/// entry a sample of the series' line and marker and its label.
fn draw_legend(area: &Area<'_>, groups: &[Vec<(String, Look)>]) -> DrawResult {
    const ROW: i32 = 19;
    const GAP: i32 = 7;
    let entries: usize = groups.iter().map(Vec::len).sum();
    let n = i32::try_from(entries).unwrap_or(i32::MAX / 64);
    let gaps = i32::try_from(groups.len().saturating_sub(1)).unwrap_or(0);
    let (w, _) = area.dim_in_pixel();
    let w = i32::try_from(w).unwrap_or(300);
    let top = 14;
    let bottom = top + 30 + n * ROW + gaps * GAP;
    area.draw(&Rectangle::new(
        [(4, top), (w - 12, bottom)],
        ShapeStyle::from(&RGBColor(150, 150, 150)).stroke_width(1),
    ))?;
    area.draw_text(
        "Legend",
        &TextStyle::from(("sans-serif", 15).into_font().style(FontStyle::Bold)),
        (14, top + 8),
    )?;
    let label =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = top + 30 + ROW / 2;
    for group in groups {
        for (text, look) in group {
            draw_styled(area, &[(14, y), (60, y)], look)?;
            area.draw_text(text, &label, (70, y))?;
            y += ROW;
        }
        y += GAP;
    }
    Ok(())
}

fn draw_bulk(report: &Report, area: &Area<'_>) -> DrawResult {
    let ok: Vec<_> = report
        .measurements
        .iter()
        .filter(|m| m.verified && m.gb_per_s.is_finite() && m.gb_per_s > 0.0)
        .collect();
    let mut series: Vec<(Method, bool, bool)> = Vec::new();
    for m in &ok {
        let key = (m.method, m.thp, m.interference);
        if !series.contains(&key) {
            series.push(key);
        }
    }
    // Grouped by method (table order), then THP on, THP off, then the spinning ones.
    series.sort_by_key(|&(method, thp, spin)| (method, spin, !thp));
    let mut encoding = vec!["Colour = method.  Solid line, filled circles = THP on;  \
         dashed line, hollow circles = THP off."
        .to_owned()];
    if series.iter().any(|s| s.2) {
        encoding[0].push_str(
            "  Dotted line, triangles = a second thread spinning \
             (\"+ spin\"; filled/hollow as THP on/off).",
        );
    }
    let body = draw_header(
        area,
        "Bulk move throughput vs chunk size (higher is better)",
        &encoding,
    )?;
    let (w, _) = body.dim_in_pixel();
    let (plot, legend) = body.split_horizontally(w - LEGEND_WIDTH);

    let x_min = ok.iter().map(|m| m.chunk_bytes).min().unwrap_or(4096) as f64;
    let x_max = ok.iter().map(|m| m.chunk_bytes).max().unwrap_or(1 << 27) as f64;
    let y_min = ok.iter().map(|m| m.gb_per_s).fold(f64::INFINITY, f64::min);
    let y_max = ok.iter().map(|m| m.gb_per_s).fold(0.0, f64::max);
    let (y_min, y_max) = if y_min.is_finite() && y_max > 0.0 {
        (y_min / 1.6, y_max * 1.6)
    } else {
        (0.01, 100.0)
    };
    let (y_bold, y_light) = log_ticks(y_min, y_max);
    let mut chart = ChartBuilder::on(&plot)
        .margin_left(10)
        .margin_right(20)
        .margin_top(10)
        .margin_bottom(10)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(
            (x_min / 1.4..x_max * 1.4)
                .log_scale()
                .with_key_points(report.config.chunks.iter().map(|&c| c as f64).collect()),
            (y_min..y_max)
                .log_scale()
                .with_key_points(y_bold)
                .with_light_points(y_light),
        )?;
    chart
        .configure_mesh()
        .x_desc("bytes per operation (chunk size, log scale)")
        .y_desc("GB/s (log scale)")
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .x_label_formatter(&|x| label_bytes(*x))
        .y_label_formatter(&|y| label_number(*y))
        .draw()?;
    let mut groups: Vec<Vec<(String, Look)>> = Vec::new();
    for &(method, thp, spin) in &series {
        let look = bulk_look(method, thp, spin);
        let points: Vec<(f64, f64)> = ok
            .iter()
            .filter(|m| (m.method, m.thp, m.interference) == (method, thp, spin))
            .map(|m| (m.chunk_bytes as f64, m.gb_per_s))
            .collect();
        draw_styled(chart.plotting_area(), &points, &look)?;
        let entry = (series_label(method, thp, spin), look);
        match groups.last_mut() {
            Some(g) if g.first().is_some_and(|(_, l)| l.color == look.color) => g.push(entry),
            _ => groups.push(vec![entry]),
        }
    }
    draw_legend(&legend, &groups)
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

/// A log-axis value with as many decimals as its size needs and no trailing zeros.
fn label_number(y: f64) -> String {
    if y >= 1.0 {
        format!("{y:.0}")
    } else {
        let s = format!("{y:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// The grid of a log axis over `lo..hi`: labelled lines at 1, 2 and 5 times the powers of ten
/// (only the powers when the range spans more than six decades), faint lines at the other
/// integer multiples.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (mut bold, mut light) = (Vec::new(), Vec::new());
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return (bold, light);
    }
    let wide = hi / lo > 1e6;
    // Both logarithms are small (the values are finite positive f64), so they fit an i32.
    #[allow(clippy::cast_possible_truncation)]
    let (first, last) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    for k in first..=last {
        for m in 1..10 {
            // Dividing by the power for negative exponents keeps 0.3 at 0.3, not 0.300..04.
            let v = if k < 0 {
                f64::from(m) / 10f64.powi(-k)
            } else {
                f64::from(m) * 10f64.powi(k)
            };
            if v < lo || v > hi {
                continue;
            }
            if m == 1 || (!wide && (m == 2 || m == 5)) {
                bold.push(v);
            } else {
                light.push(v);
            }
        }
    }
    (bold, light)
}

/// The legend label of a fault series.
fn fault_label(f: &FaultMeasurement) -> String {
    format!("{} {}h/{}m", f.method.name(), f.handlers, f.mutators)
}

fn draw_faults(report: &Report, area: &Area<'_>) -> DrawResult {
    let mut ok: Vec<_> = report
        .faults
        .iter()
        .filter(|f| f.verified && f.p50_ns.median.is_finite() && f.p50_ns.median > 0.0)
        .collect();
    ok.sort_by_key(|f| (f.method, f.handlers, f.mutators));
    let mut handler_counts: Vec<u32> = ok.iter().map(|f| f.handlers).filter(|&h| h > 0).collect();
    handler_counts.sort_unstable();
    handler_counts.dedup();
    let mut mutator_counts: Vec<u32> = ok.iter().map(|f| f.mutators).collect();
    mutator_counts.sort_unstable();
    mutator_counts.dedup();
    if mutator_counts.is_empty() {
        mutator_counts.push(1);
    }

    let mut styles: Vec<String> = handler_counts
        .iter()
        .map(|&h| {
            let (d, m, f) = handler_style(h, &handler_counts);
            format!(
                "{} = {h} handler thread{}",
                style_words(d, m, f),
                if h == 1 { "" } else { "s" }
            )
        })
        .collect();
    if ok.iter().any(|f| f.handlers == 0) {
        styles.push(
            "server-sigbus has no handler thread (the faulting thread resolves its fault)"
                .to_owned(),
        );
    }
    let encoding = vec![
        "Colour = fault-service method; one panel per number of mutator (faulting) threads; \
         \"Nh/Mm\" = N handler threads, M mutator threads."
            .to_owned(),
        {
            let joined = styles.join(";  ");
            let mut chars = joined.chars();
            match chars.next() {
                Some(c) => format!("{}{}.", c.to_uppercase(), chars.as_str()),
                None => String::new(),
            }
        },
    ];
    let body = draw_header(
        area,
        "Fault service latency per fault: p50, p99, p99.9 (lower is better)",
        &encoding,
    )?;
    let (w, _) = body.dim_in_pixel();
    let (plots, legend) = body.split_horizontally(w - LEGEND_WIDTH);

    let all_us = ok
        .iter()
        .flat_map(|f| [f.p50_ns.median, f.p99_ns.median, f.p999_ns.median])
        .map(|ns| ns / 1e3);
    let (lo, hi) = all_us.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 1.6, hi * 1.6)
    } else {
        (1.0, 1000.0)
    };
    let (y_bold, y_light) = log_ticks(lo, hi);
    let panels = plots.split_evenly((1, mutator_counts.len()));
    for (panel, &mutators) in panels.iter().zip(&mutator_counts) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{mutators} mutator thread{}",
                    if mutators == 1 { "" } else { "s" }
                ),
                ("sans-serif", 16),
            )
            .margin_left(10)
            .margin_right(20)
            .margin_bottom(10)
            .x_label_area_size(50)
            .y_label_area_size(75)
            .build_cartesian_2d(
                -0.25f64..2.25f64,
                (lo..hi)
                    .log_scale()
                    .with_key_points(y_bold.clone())
                    .with_light_points(y_light.clone()),
            )?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency per fault, us (log scale)")
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(200, 200, 200))
            .x_labels(3)
            .x_max_light_lines(0)
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
            .y_label_formatter(&|y| label_number(*y))
            .draw()?;
        for f in ok.iter().filter(|f| f.mutators == mutators) {
            let points = [
                (0.0, f.p50_ns.median / 1e3),
                (1.0, f.p99_ns.median / 1e3),
                (2.0, f.p999_ns.median / 1e3),
            ];
            draw_styled(
                chart.plotting_area(),
                &points,
                &fault_look(f, &handler_counts),
            )?;
        }
    }
    let mut groups: Vec<Vec<(String, Look)>> = Vec::new();
    for f in &ok {
        let entry = (fault_label(f), fault_look(f, &handler_counts));
        match groups.last_mut() {
            Some(g) if g.first().is_some_and(|(_, l)| l.color == entry.1.color) => g.push(entry),
            _ => groups.push(vec![entry]),
        }
    }
    draw_legend(&legend, &groups)
}

/// Fault series: colour per method, line style and marker per handler-thread count.
fn fault_look(f: &FaultMeasurement, handler_counts: &[u32]) -> Look {
    let (dash, marker, filled) = handler_style(f.handlers, handler_counts);
    Look {
        color: fault_color(f.method),
        dash,
        width: if dash == Dash::Solid { 3 } else { 2 },
        marker,
        filled,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    use super::*;
    use crate::report::{ConfigRecord, Measurement, Summary};
    use crate::{Machine, Spread};

    /// WCAG relative luminance of a colour (0 black, 1 white).
    fn luminance(c: RGBColor) -> f64 {
        let lin = |v: u8| {
            let v = f64::from(v) / 255.0;
            if v <= 0.039_28 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
    }

    #[test]
    fn every_method_has_its_own_colour_that_reads_on_white() {
        let bulk: Vec<_> = Method::ALL.iter().map(|&m| method_color(m)).collect();
        let faults: Vec<_> = FaultMethod::ALL.iter().map(|&m| fault_color(m)).collect();
        for colours in [&bulk, &faults] {
            for (i, a) in colours.iter().enumerate() {
                // Contrast against white of at least 2:1 (the old palette's pale yellow, cyan
                // and pink were about 1.1 to 1.4).
                let contrast = 1.05 / (luminance(*a) + 0.05);
                assert!(contrast >= 2.0, "{a:?} is too light: {contrast:.2}:1");
                for b in &colours[i + 1..] {
                    assert_ne!(a, b, "two methods share a colour");
                }
            }
        }
    }

    #[test]
    fn thp_and_spin_variants_of_a_method_look_different() {
        for method in Method::ALL {
            let looks: Vec<_> = [(true, false), (false, false), (true, true), (false, true)]
                .iter()
                .map(|&(thp, spin)| {
                    let l = bulk_look(method, thp, spin);
                    assert_eq!(l.color, method_color(method));
                    (l.dash, l.marker, l.filled)
                })
                .collect();
            for (i, a) in looks.iter().enumerate() {
                assert!(!looks[i + 1..].contains(a), "{method}: two variants alike");
            }
        }
    }

    #[test]
    fn log_axes_label_one_two_five() {
        let (bold, light) = log_ticks(0.15, 30.0);
        assert_eq!(bold, [0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]);
        assert!(light.contains(&3.0) && light.contains(&0.3) && !light.contains(&2.0));
        let (bold, _) = log_ticks(1e-3, 1e5);
        assert_eq!(
            bold.len(),
            9,
            "only powers of ten over eight decades: {bold:?}"
        );
        assert_eq!(label_number(0.5), "0.5");
        assert_eq!(label_number(2.0), "2");
        assert_eq!(label_number(1000.0), "1000");
    }

    fn spread(v: f64) -> Spread {
        Spread {
            median: v,
            min: v,
            max: v,
            q1: v,
            q3: v,
        }
    }

    /// A report with every bulk method in every THP and spin variant at three chunk sizes, and
    /// every fault method at the default thread pairs.
    fn full_report() -> Report {
        let chunks = vec![4096, 1 << 21, 1 << 23];
        let mut measurements = Vec::new();
        for (i, method) in Method::ALL.into_iter().enumerate() {
            for (thp, spin) in [(true, false), (false, false), (true, true), (false, true)] {
                for (j, &chunk) in chunks.iter().enumerate() {
                    let gb = (1.0 + i as f64) * (1.0 + j as f64) * if thp { 2.0 } else { 1.0 };
                    measurements.push(Measurement {
                        method,
                        chunk_bytes: chunk,
                        whole_range: j == 2,
                        thp,
                        interference: spin,
                        bytes: 1 << 23,
                        reps: 1,
                        time_ns: spread(1e6 / gb),
                        gb_per_s: gb,
                        ns_per_page: spread(1.0),
                        source_thp_fraction: 0.0,
                        ioctls: None,
                        vs_raw: None,
                        vs_memcpy: None,
                        vs_copy: None,
                        verified: true,
                        error: None,
                    });
                }
            }
        }
        let mut faults = Vec::new();
        for (i, method) in FaultMethod::ALL.into_iter().enumerate() {
            let pairs: &[(u32, u32)] = if method == FaultMethod::ServerSigbus {
                &[(0, 1), (0, 2)]
            } else {
                &[(1, 1), (1, 2), (2, 1), (2, 2)]
            };
            for &(handlers, mutators) in pairs {
                let base = 2000.0 * (1.0 + i as f64) * f64::from(handlers + mutators);
                faults.push(FaultMeasurement {
                    method,
                    handlers,
                    mutators,
                    pages: 64,
                    faults: 64,
                    reps: 1,
                    p50_ns: spread(base),
                    p99_ns: spread(base * 3.0),
                    p999_ns: spread(base * 7.0),
                    faults_per_s: spread(1e5),
                    verified: true,
                    error: None,
                });
            }
        }
        Report {
            config: ConfigRecord {
                machine: Machine::read(),
                size_bytes: 1 << 23,
                reps: 1,
                fault_reps: 1,
                warmup: 0,
                chunks,
                methods: Method::ALL.to_vec(),
                fault_methods: FaultMethod::ALL.to_vec(),
                fault_size_bytes: 1 << 18,
                quick: true,
                peer_built: true,
                seed: 1,
            },
            summary: Summary {
                measurements: measurements.len(),
                faults: faults.len(),
                failures: 0,
                skipped: vec![],
                seed: 1,
                elapsed_total: 0.0,
            },
            measurements,
            faults,
        }
    }

    /// The SVG `write_chart` makes of `report`.
    fn render(report: &Report, name: &str) -> String {
        let path = std::env::temp_dir().join(format!(
            "remap-chart-unit-{name}-{}.svg",
            std::process::id()
        ));
        write_chart(report, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        svg
    }

    /// An SVG element's attributes.
    type Attrs = HashMap<String, String>;

    /// A numeric tick label: its value, its y coordinate and its text.
    type Tick = (f64, f64, String);

    /// The attributes of every `<tag ...>` element of `svg`.
    fn elements(svg: &str, tag: &str) -> Vec<Attrs> {
        let open = format!("<{tag} ");
        let mut out = Vec::new();
        let mut rest = svg;
        while let Some(at) = rest.find(&open) {
            rest = &rest[at + open.len()..];
            let mut attrs = rest[..rest.find('>').unwrap()].trim_end_matches('/');
            let mut map = HashMap::new();
            while let Some(eq) = attrs.find("=\"") {
                let name = attrs[..eq].trim().to_owned();
                let value_end = eq + 2 + attrs[eq + 2..].find('"').unwrap();
                map.insert(name, attrs[eq + 2..value_end].to_owned());
                attrs = &attrs[value_end + 1..];
            }
            out.push(map);
        }
        out
    }

    /// The points of an element: its centre for a circle, its `points` for a polygon/polyline.
    fn points_of(e: &Attrs) -> Vec<(f64, f64)> {
        if let (Some(x), Some(y)) = (e.get("cx"), e.get("cy")) {
            return vec![(x.parse().unwrap(), y.parse().unwrap())];
        }
        e.get("points")
            .map(|p| {
                p.split_whitespace()
                    .map(|xy| {
                        let (x, y) = xy.split_once(',').unwrap();
                        (x.parse().unwrap(), y.parse().unwrap())
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How a colour is written in the SVG.
    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// The marker kinds a reader tells apart.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    enum Kind {
        FilledCircle,
        HollowCircle,
        Triangle,
    }

    fn kind(look: &Look) -> Kind {
        match (look.marker, look.filled) {
            (Marker::Circle, true) => Kind::FilledCircle,
            (Marker::Circle, false) => Kind::HollowCircle,
            (Marker::Triangle, _) => Kind::Triangle,
        }
    }

    /// Which row an SVG point lies in: `Some(true)` the bulk plots, `Some(false)` the fault
    /// plots, `None` the legend column.
    fn row(p: (f64, f64)) -> Option<bool> {
        (p.0 < f64::from(WIDTH - LEGEND_WIDTH))
            .then_some(p.1 < f64::from(TITLE_HEIGHT + BULK_HEIGHT))
    }

    /// Every series is really drawn, not only named: in each row's plots (legend column
    /// excluded), each colour has exactly one marker of the series' kind per measured point
    /// (filled circle, hollow circle outline, triangle), and at least one line of the series'
    /// colour and width per series.
    #[test]
    fn every_series_draws_its_line_and_a_marker_per_point() {
        let report = full_report();
        let ok = |m: &&Measurement| m.verified;
        let mut expected_markers: BTreeMap<(bool, String, Kind), usize> = BTreeMap::new();
        let mut expected_lines: BTreeMap<(bool, String, String), usize> = BTreeMap::new();
        let mut series = BTreeSet::new();
        for m in report.measurements.iter().filter(ok) {
            let look = bulk_look(m.method, m.thp, m.interference);
            *expected_markers
                .entry((true, hex(look.color), kind(&look)))
                .or_default() += 1;
            if series.insert(series_label(m.method, m.thp, m.interference)) {
                *expected_lines
                    .entry((true, hex(look.color), look.width.to_string()))
                    .or_default() += 1;
            }
        }
        let handler_counts = [1, 2];
        for f in &report.faults {
            let look = fault_look(f, &handler_counts);
            *expected_markers
                .entry((false, hex(look.color), kind(&look)))
                .or_default() += 3;
            *expected_lines
                .entry((false, hex(look.color), look.width.to_string()))
                .or_default() += 1;
        }

        let svg = render(&report, "series");
        let mut markers: BTreeMap<(bool, String, Kind), usize> = BTreeMap::new();
        let mut tally = |tag: &str, classify: &dyn Fn(&Attrs) -> Option<(String, Kind)>| {
            for e in elements(&svg, tag) {
                let (Some((colour, k)), Some(bulk)) = (classify(&e), row(points_of(&e)[0])) else {
                    continue;
                };
                *markers.entry((bulk, colour, k)).or_default() += 1;
            }
        };
        let coloured = |c: Option<&String>| c.filter(|c| *c != "#FFFFFF" && *c != "none").cloned();
        tally("circle", &|e| {
            coloured(e.get("fill"))
                .map(|c| (c, Kind::FilledCircle))
                .or_else(|| coloured(e.get("stroke")).map(|c| (c, Kind::HollowCircle)))
        });
        tally("polygon", &|e| {
            coloured(e.get("fill")).map(|c| (c, Kind::Triangle))
        });
        assert_eq!(markers, expected_markers);

        let mut lines: BTreeMap<(bool, String, String), usize> = BTreeMap::new();
        for e in elements(&svg, "polyline") {
            let points = points_of(&e);
            let rows: BTreeSet<_> = points.iter().map(|&p| row(p)).collect();
            let (Some(colour), Some(width)) = (e.get("stroke"), e.get("stroke-width")) else {
                continue;
            };
            if let [Some(bulk)] = rows.into_iter().collect::<Vec<_>>()[..] {
                if colour != "#000000" {
                    *lines
                        .entry((bulk, colour.clone(), width.clone()))
                        .or_default() += 1;
                }
            }
        }
        for (key, &n) in &expected_lines {
            let drawn = lines.get(key).copied().unwrap_or(0);
            assert!(drawn >= n, "{key:?}: {n} series, {drawn} line pieces");
        }
    }

    /// The y axes are logarithmic: on each axis (bulk GB/s, and the fault latency of each
    /// panel), the numeric tick labels sit at heights linear in the logarithm of their values,
    /// rising as they grow, and the bulk axis labels the powers of ten 1 and 10.
    #[test]
    fn y_axes_are_logarithmic() {
        let report = full_report();
        let svg = render(&report, "axes");
        // Numeric labels in the plots, grouped by axis: the row and the label column's x.
        let mut axes: BTreeMap<(bool, i64), Vec<Tick>> = BTreeMap::new();
        let mut rest = svg.as_str();
        while let Some(at) = rest.find("<text ") {
            rest = &rest[at..];
            let attrs = &elements(rest, "text")[0];
            let body = rest[rest.find('>').unwrap() + 1..rest.find("</text>").unwrap()].trim();
            rest = &rest[1..];
            let (x, y): (f64, f64) = (attrs["x"].parse().unwrap(), attrs["y"].parse().unwrap());
            let (Ok(value), Some(bulk)) = (body.parse::<f64>(), row((x, y))) else {
                continue;
            };
            #[allow(clippy::cast_possible_truncation)]
            axes.entry((bulk, x as i64))
                .or_default()
                .push((value, y, body.to_owned()));
        }
        assert_eq!(
            axes.keys().filter(|(bulk, _)| *bulk).count(),
            1,
            "one bulk y axis: {axes:?}"
        );
        assert_eq!(
            axes.keys().filter(|(bulk, _)| !*bulk).count(),
            2,
            "one y axis per mutator count: {axes:?}"
        );
        for (key, ticks) in &mut axes {
            ticks.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(ticks.len() >= 3, "{key:?}: {ticks:?}");
            let (lo, hi) = (ticks[0].clone(), ticks[ticks.len() - 1].clone());
            assert!(
                lo.0 > 0.0 && hi.0 / lo.0 >= 10.0,
                "{key:?} spans a decade: {ticks:?}"
            );
            let per_decade = (hi.1 - lo.1) / (hi.0.log10() - lo.0.log10());
            assert!(
                per_decade < -20.0,
                "{key:?}: larger values higher up: {ticks:?}"
            );
            for (v, y, label) in ticks.iter() {
                let want = lo.1 + per_decade * (v.log10() - lo.0.log10());
                assert!(
                    (y - want).abs() <= 1.5,
                    "{key:?}: {label} at y = {y}, a log axis puts it at {want:.1}: {ticks:?}"
                );
            }
            if key.0 {
                let labels: Vec<&str> = ticks.iter().map(|t| t.2.as_str()).collect();
                assert!(
                    labels.contains(&"1") && labels.contains(&"10"),
                    "{labels:?}"
                );
            }
        }
    }

    /// The x coordinate of every `<text>` element whose content is `label`.
    fn text_x(svg: &str, label: &str) -> Vec<i64> {
        let mut xs = Vec::new();
        let mut rest = svg;
        while let Some(at) = rest.find("<text x=\"") {
            rest = &rest[at + 9..];
            let x: i64 = rest[..rest.find('"').unwrap()].parse().unwrap();
            let body = &rest[rest.find('>').unwrap() + 1..rest.find("</text>").unwrap()];
            if body.trim() == label {
                xs.push(x);
            }
        }
        xs
    }

    /// Every series has exactly one legend entry, and all of them lie in the legend column right
    /// of the plots, not over the data.
    #[test]
    fn every_series_is_named_once_in_a_legend_beside_the_plots() {
        let report = full_report();
        let svg = render(&report, "legend");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        let plots_end = i64::from(WIDTH - LEGEND_WIDTH);
        let mut labels: Vec<String> = report
            .measurements
            .iter()
            .map(|m| series_label(m.method, m.thp, m.interference))
            .collect();
        labels.extend(report.faults.iter().map(fault_label));
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), 7 * 4 + 5 * 4 + 2);
        for label in &labels {
            let xs = text_x(&svg, label);
            assert_eq!(xs.len(), 1, "{label}: {xs:?}");
            assert!(
                xs[0] > plots_end,
                "{label} at x = {} inside the plots",
                xs[0]
            );
        }
        assert!(svg.contains("dashed line, hollow circles = THP off"));
        assert!(svg.contains("Dotted line, triangles = a second thread spinning"));
    }
}
