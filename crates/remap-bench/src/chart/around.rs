//! The fault-around row: pages served per second against the window, one panel per touch
//! order, one line per source.

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use super::axes::{label_number, log_ticks};
use super::look::{Dash, Look, Marker, STRONG};
use super::panels::{draw_header, draw_legend, draw_styled};
use super::{Area, DrawResult, LEGEND_WIDTH};
use crate::around::{AroundSource, Touch};
use crate::report::Report;

/// The legend label of a fault-around series: the source's name.
pub(super) fn around_label(source: AroundSource) -> String {
    source.name().to_owned()
}

/// A source's look: its own colour (after the fault-service methods' first three, so it is not
/// mistaken for one of them), a solid line with filled circles.
fn around_look(source: AroundSource) -> Look {
    let i = AroundSource::ALL
        .iter()
        .position(|&s| s == source)
        .unwrap_or(0);
    Look {
        color: STRONG[(i + 4) % STRONG.len()],
        dash: Dash::Solid,
        width: 3,
        marker: Marker::Circle,
        filled: true,
    }
}

/// Draws the row: x = the windows measured (evenly spaced, labelled in pages), y = median pages
/// per second (log).
pub(super) fn draw_around(report: &Report, area: &Area<'_>) -> DrawResult {
    let ok: Vec<_> = report
        .fault_around
        .iter()
        .filter(|f| f.verified && f.pages_per_s.median.is_finite() && f.pages_per_s.median > 0.0)
        .collect();
    let mut windows: Vec<u32> = ok.iter().map(|f| f.window).collect();
    windows.sort_unstable();
    windows.dedup();
    let encoding = vec![
        "Colour = page source; one panel per order of the first touches; x = fault-around \
         window in pages (1 = one page per fault); one mutator, one handler thread."
            .to_owned(),
    ];
    let body = draw_header(
        area,
        "Fault-around: pages served per second vs window (higher is better)",
        &encoding,
    )?;
    let (w, _) = body.dim_in_pixel();
    let (plots, legend) = body.split_horizontally(w - LEGEND_WIDTH);
    let (lo, hi) = ok
        .iter()
        .map(|f| f.pages_per_s.median)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let (lo, hi) = if lo.is_finite() && hi > 0.0 {
        (lo / 1.6, hi * 1.6)
    } else {
        (1e3, 1e7)
    };
    let (y_bold, y_light) = log_ticks(lo, hi);
    let x_max = windows.len().max(1) as f64 - 0.75;
    let panels = plots.split_evenly((1, Touch::ALL.len()));
    for (panel, touch) in panels.iter().zip(Touch::ALL) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} touches", touch.name()), ("sans-serif", 16))
            .margin_left(10)
            .margin_right(20)
            .margin_bottom(10)
            .x_label_area_size(50)
            .y_label_area_size(75)
            .build_cartesian_2d(
                -0.25f64..x_max,
                (lo..hi)
                    .log_scale()
                    .with_key_points(y_bold.clone())
                    .with_light_points(y_light.clone()),
            )?;
        let labels = windows.clone();
        chart
            .configure_mesh()
            .x_desc("fault-around window, pages")
            .y_desc("pages served per second (log scale)")
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(200, 200, 200))
            .x_labels(windows.len().max(1))
            .x_max_light_lines(0)
            .x_label_formatter(&move |x| {
                labels
                    .iter()
                    .enumerate()
                    .find(|&(i, _)| (x - i as f64).abs() < 0.01)
                    .map_or_else(String::new, |(_, w)| w.to_string())
            })
            .y_label_formatter(&|y| label_number(*y))
            .draw()?;
        for source in AroundSource::ALL {
            let points: Vec<(f64, f64)> = windows
                .iter()
                .enumerate()
                .filter_map(|(i, &window)| {
                    ok.iter()
                        .find(|f| f.source == source && f.touch == touch && f.window == window)
                        .map(|f| (i as f64, f.pages_per_s.median))
                })
                .collect();
            if !points.is_empty() {
                draw_styled(chart.plotting_area(), &points, &around_look(source))?;
            }
        }
    }
    let groups: Vec<Vec<(String, Look)>> = AroundSource::ALL
        .iter()
        .filter(|&&s| ok.iter().any(|f| f.source == s))
        .map(|&s| vec![(around_label(s), around_look(s))])
        .collect();
    draw_legend(&legend, &groups)
}
