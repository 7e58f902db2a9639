//! Drawing the panels: the bulk throughput plot, the fault-latency small multiples, their
//! captions and legends.

use plotters::coord::combinators::IntoLogRange;
use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::CoordTranslate;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes::{label_bytes, label_number, log_ticks};
use super::look::*;
use super::{series_label, Area, DrawResult, HEADER_HEIGHT, LEGEND_WIDTH};
use crate::report::{FaultMeasurement, Method, Report};

/// Draws the line through `points` and the markers on them in `look`.
pub(super) fn draw_styled<CT: CoordTranslate>(
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
pub(super) fn draw_marker<CT: CoordTranslate>(
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

/// Draws a row's caption (bold) and the lines explaining its encoding above the plots, and
/// returns the area below them split into the plots and the legend column beside them.
pub(super) fn draw_header<'a>(
    area: &Area<'a>,
    caption: &str,
    encoding: &[String],
) -> Result<(Area<'a>, Area<'a>), Box<dyn std::error::Error>> {
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
    let (w, _) = body.dim_in_pixel();
    Ok(body.split_horizontally(w - LEGEND_WIDTH))
}

/// The range of a log axis showing `values`: a factor 1.6 beyond the smallest and the largest,
/// or `fallback` when there is no positive finite value.
pub(super) fn log_range(values: impl IntoIterator<Item = f64>, fallback: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = values
        .into_iter()
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo.is_finite() && hi > 0.0 {
        (lo / 1.6, hi * 1.6)
    } else {
        fallback
    }
}

/// The coordinates of a [`categorical_panel`]: positions along x, a log scale with its grid
/// along y.
pub(super) type CategoricalCoord = Cartesian2d<RangedCoordf64, WithKeyPoints<LogCoord<f64>>>;

/// The axes of one panel of a row of small multiples ([`categorical_panel`]).
pub(super) struct CategoricalAxes<'l> {
    /// The panel's caption.
    pub(super) caption: String,
    /// How many categories: x positions 0, 1, ... labelled by `x_label`.
    pub(super) categories: usize,
    /// The right end of the x axis (the left end is -0.25).
    pub(super) x_max: f64,
    /// The label of an x position ("" between categories).
    pub(super) x_label: &'l dyn Fn(f64) -> String,
    pub(super) x_desc: &'l str,
    pub(super) y_desc: &'l str,
    /// The y range (log scale, gridded by [`log_ticks`]).
    pub(super) y: (f64, f64),
}

/// Draws one panel of a row of small multiples (categories along x, a log scale along y, the
/// same grid, fonts and margins in every row) and returns the chart to draw its series into.
pub(super) fn categorical_panel<'a, 'b>(
    panel: &'a Area<'b>,
    axes: &CategoricalAxes<'_>,
) -> Result<ChartContext<'a, SVGBackend<'b>, CategoricalCoord>, Box<dyn std::error::Error>> {
    let (lo, hi) = axes.y;
    let (y_bold, y_light) = log_ticks(lo, hi);
    let mut chart = ChartBuilder::on(panel)
        .caption(&axes.caption, ("sans-serif", 16))
        .margin_left(10)
        .margin_right(20)
        .margin_bottom(10)
        .x_label_area_size(50)
        .y_label_area_size(75)
        .build_cartesian_2d(
            -0.25f64..axes.x_max,
            (lo..hi)
                .log_scale()
                .with_key_points(y_bold)
                .with_light_points(y_light),
        )?;
    chart
        .configure_mesh()
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .axis_desc_style(("sans-serif", 15))
        .label_style(("sans-serif", 13))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .x_labels(axes.categories)
        .x_max_light_lines(0)
        .x_label_formatter(&|x| (axes.x_label)(*x))
        .y_label_formatter(&|y| label_number(*y))
        .draw()?;
    Ok(chart)
}

/// Draws a legend in `area` (a column beside the plots): one group of entries per method, each
/// entry a sample of the series' line and marker and its label.
pub(super) fn draw_legend(area: &Area<'_>, groups: &[Vec<(String, Look)>]) -> DrawResult {
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

pub(super) fn draw_bulk(report: &Report, area: &Area<'_>) -> DrawResult {
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
    let (plot, legend) = draw_header(
        area,
        "Bulk move throughput vs chunk size (higher is better)",
        &encoding,
    )?;

    let x_min = ok.iter().map(|m| m.chunk_bytes).min().unwrap_or(4096) as f64;
    let x_max = ok.iter().map(|m| m.chunk_bytes).max().unwrap_or(1 << 27) as f64;
    let (y_min, y_max) = log_range(ok.iter().map(|m| m.gb_per_s), (0.01, 100.0));
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

/// The legend label of a fault series.
/// The legend label of a fault series, with the CPU spent outside the mutators per fault (the
/// handler threads' cost) when it was measured.
pub(super) fn fault_label(f: &FaultMeasurement) -> String {
    let cpu = f.handler_cpu_ns_per_fault.median;
    if cpu.is_finite() {
        format!(
            "{} {}h/{}m, cpu {:.1} us",
            f.method.name(),
            f.handlers,
            f.mutators,
            cpu / 1e3
        )
    } else {
        format!("{} {}h/{}m", f.method.name(), f.handlers, f.mutators)
    }
}

pub(super) fn draw_faults(report: &Report, area: &Area<'_>) -> DrawResult {
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
    let (plots, legend) = draw_header(
        area,
        "Fault service latency per fault: p50, p99, p99.9 (lower is better)",
        &encoding,
    )?;
    let y = log_range(
        ok.iter()
            .flat_map(|f| [f.p50_ns.median, f.p99_ns.median, f.p999_ns.median])
            .map(|ns| ns / 1e3),
        (1.0, 1000.0),
    );
    let x_label = |x: f64| {
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
    };
    let panels = plots.split_evenly((1, mutator_counts.len()));
    for (panel, &mutators) in panels.iter().zip(&mutator_counts) {
        let chart = categorical_panel(
            panel,
            &CategoricalAxes {
                caption: format!(
                    "{mutators} mutator thread{}",
                    if mutators == 1 { "" } else { "s" }
                ),
                categories: 3,
                x_max: 2.25,
                x_label: &x_label,
                x_desc: "percentile",
                y_desc: "latency per fault, us (log scale)",
                y,
            },
        )?;
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
pub(super) fn fault_look(f: &FaultMeasurement, handler_counts: &[u32]) -> Look {
    let (dash, marker, filled) = handler_style(f.handlers, handler_counts);
    Look {
        color: fault_color(f.method),
        dash,
        width: if dash == Dash::Solid { 3 } else { 2 },
        marker,
        filled,
    }
}
