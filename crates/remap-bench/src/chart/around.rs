//! The fault-around row: pages served per second against the window, one panel per touch
//! order, one line per source.

use super::look::{Dash, Look, Marker, STRONG};
use super::panels::{
    categorical_panel, draw_header, draw_legend, draw_styled, log_range, CategoricalAxes,
};
use super::{Area, DrawResult};
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
    let (plots, legend) = draw_header(
        area,
        "Fault-around: pages served per second vs window (higher is better)",
        &encoding,
    )?;
    let y = log_range(ok.iter().map(|f| f.pages_per_s.median), (1e3, 1e7));
    let x_label = |x: f64| {
        windows
            .iter()
            .enumerate()
            .find(|&(i, _)| (x - i as f64).abs() < 0.01)
            .map_or_else(String::new, |(_, w)| w.to_string())
    };
    let panels = plots.split_evenly((1, Touch::ALL.len()));
    for (panel, touch) in panels.iter().zip(Touch::ALL) {
        let chart = categorical_panel(
            panel,
            &CategoricalAxes {
                caption: format!("{} touches", touch.name()),
                categories: windows.len().max(1),
                x_max: windows.len().max(1) as f64 - 0.75,
                x_label: &x_label,
                x_desc: "fault-around window, pages",
                y_desc: "pages served per second (log scale)",
                y,
            },
        )?;
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
