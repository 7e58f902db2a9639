//! The SVG chart: throughput versus chunk size per method (log scales), and fault-service latency
//! percentiles per handler (medians over the repetitions).
//!
//! The chart is meant to be read without the table: each method has one strong colour, the other
//! dimensions of a series are its line style and marker, every panel states that encoding in a
//! line under its caption, and the legends sit in a column beside the plots, never over the data.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{Method, Report};

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
/// or `method Nh/Mm` (faults) says. Last, when the report has fault-around figures, pages served
/// per second against the fault-around window (log), one panel per touch order, one colour per
/// source, labelled with the source's name (`around-move`).
/// or `method Nh/Mm` (faults) says. When the report has a compaction section, a last row shows
/// each publication mode's compaction-thread CPU time over COPY's and over the memcpy floor.
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
    let compaction_height = if report.compaction.is_empty() {
        0
    } else {
        COMPACTION_HEIGHT
    };
    let around_height = if report.fault_around.is_empty() {
        0
    } else {
        AROUND_HEIGHT
    };
    let root = SVGBackend::new(
        path,
        (
            WIDTH,
            BULK_HEIGHT + FAULT_HEIGHT + around_height + compaction_height + TITLE_HEIGHT,
        ),
    )
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
    let (bulk, rest) = rest.split_vertically(BULK_HEIGHT);
    let (faults, rest) = rest.split_vertically(FAULT_HEIGHT);
    let (around, compaction) = rest.split_vertically(around_height);
    draw_bulk(report, &bulk).map_err(|e| err(&e))?;
    draw_faults(report, &faults).map_err(|e| err(&e))?;
    if around_height > 0 {
        around::draw_around(report, &around).map_err(|e| err(&e))?;
    }
    draw_compaction(&report.compaction, &compaction).map_err(|e| err(&e))?;
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
/// Height of the compaction row, when the report has one.
const COMPACTION_HEIGHT: u32 = 420;
/// Height of the fault-around row (drawn when the report has fault-around figures).
const AROUND_HEIGHT: u32 = 480;
/// Width of the legend column right of each row's plots.
const LEGEND_WIDTH: u32 = 300;
/// Height of a row's caption and encoding lines.
const HEADER_HEIGHT: u32 = 62;

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

mod around;
mod axes;
mod compaction;
mod look;
mod panels;
#[cfg(test)]
mod tests;

use compaction::draw_compaction;
use panels::{draw_bulk, draw_faults};
