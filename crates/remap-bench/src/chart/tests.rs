//! The chart's tests: colours, looks, ticks, legend placement, and the SVG itself.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use plotters::prelude::*;

use super::axes::*;
use super::look::*;
use super::panels::*;
use super::*;
use crate::report::{ConfigRecord, FaultMeasurement, FaultMethod, Measurement, Summary};
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
                handler_cpu_ns_per_fault: spread(base / 2.0),
                vs_sigbus_p50: None,
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
            fault_around: vec![],
            fault_around_windows: vec![],
            fault_around_size_bytes: 0,
            quick: true,
            peer_built: true,
            seed: 1,
        },
        summary: Summary {
            measurements: measurements.len(),
            faults: faults.len(),
            fault_around: 0,
            mover_overhead: 0,
            failures: 0,
            skipped: vec![],
            seed: 1,
            elapsed_total: 0.0,
        },
        measurements,
        mover_overhead: vec![],
        faults,
        compaction: vec![],
        fault_around: vec![],
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
    (p.0 < f64::from(WIDTH - LEGEND_WIDTH)).then_some(p.1 < f64::from(TITLE_HEIGHT + BULK_HEIGHT))
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
    // Bulk methods x THP x spin, handler methods x 4 cells, SIGBUS mode x 2 mutator counts.
    assert_eq!(labels.len(), 7 * 4 + 11 * 4 + 2);
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
