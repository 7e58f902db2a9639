//! The compaction row: each publication mode's compaction-thread CPU time as a ratio to COPY's
//! (same repetition) and to the memcpy floor (same cycle), one bar per ratio, with the range of
//! the repetitions as a whisker.

use plotters::prelude::*;

use super::look::STRONG;
use super::{Area, DrawResult};
use crate::compaction::CompactionMeasurement;

/// A ratio of one figure as `[median, min, max]`, if it has one.
type RatioOf = fn(&CompactionMeasurement) -> Option<[f64; 3]>;

/// Draws the row for `figures` (nothing when empty).
pub(super) fn draw_compaction(figures: &[CompactionMeasurement], area: &Area<'_>) -> DrawResult {
    let Some(first) = figures.first() else {
        return Ok(());
    };
    let (left, right) = area.split_horizontally(area.dim_in_pixel().0 / 2);
    let caption = format!(
        "compaction: {} MiB key-value heap, {} mutator(s) live, {} reps",
        first.heap_bytes >> 20,
        first.mutators,
        first.reps
    );
    let panels: [(&Area<'_>, String, RatioOf); 2] = [
        (&left, format!("{caption}: CPU / COPY"), |c| {
            c.vs_copy_cpu.map(|s| [s.median, s.min, s.max])
        }),
        (&right, "CPU / memcpy of the live bytes".to_owned(), |c| {
            let s = c.vs_floor_cpu;
            Some([s.median, s.min, s.max])
        }),
    ];
    for (panel, title, value) in panels {
        let top = figures
            .iter()
            .filter_map(value)
            .map(|v| v[2])
            .filter(|v| v.is_finite())
            .fold(1.0f64, f64::max)
            * 1.15;
        let n = figures.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(16)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0.0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                // The bars stand at 0, 1, 2: label those ticks only.
                (0..figures.len())
                    .find(|&i| (x - i as f64).abs() < 1e-6)
                    .map_or_else(String::new, |i| figures[i].mode.to_owned())
            })
            .y_desc("ratio (1 = as fast)")
            .draw()?;
        for (i, c) in figures.iter().enumerate() {
            let Some([median, min, max]) = value(c).filter(|v| v[0].is_finite()) else {
                continue;
            };
            let x = i as f64;
            let colour = STRONG[i % STRONG.len()];
            chart.draw_series([Rectangle::new(
                [(x - 0.3, 0.0), (x + 0.3, median)],
                colour.filled(),
            )])?;
            chart.draw_series([PathElement::new(
                vec![(x, min), (x, max)],
                BLACK.stroke_width(2),
            )])?;
            chart.draw_series([Text::new(
                format!("{median:.2}"),
                (x - 0.12, median),
                ("sans-serif", 14),
            )])?;
        }
        chart.draw_series([PathElement::new(
            vec![(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
            BLACK.mix(0.5).stroke_width(1),
        )])?;
    }
    Ok(())
}
