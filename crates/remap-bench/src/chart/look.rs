//! The visual encoding of a series: one strong colour per method, line style and marker for
//! the other dimensions (THP, a live second thread, the handler count).

use plotters::prelude::*;

use crate::report::{FaultMethod, Method};

/// A colour that reads on white and is told apart from the others at a glance (the saturated
/// members of the Tableau/D3 "category10" palette, in the order the methods are listed).
pub(super) const STRONG: [RGBColor; 12] = [
    RGBColor(31, 119, 180),  // blue
    RGBColor(255, 127, 14),  // orange
    RGBColor(44, 160, 44),   // green
    RGBColor(214, 39, 40),   // red
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
    RGBColor(127, 127, 127), // grey
    RGBColor(128, 128, 0),   // olive
    RGBColor(0, 128, 128),   // teal
    RGBColor(0, 0, 128),     // navy
    RGBColor(170, 0, 85),    // raspberry
];

/// The colour of a bulk method: its position in [`Method::ALL`].
pub(super) fn method_color(method: Method) -> RGBColor {
    let i = Method::ALL.iter().position(|&m| m == method).unwrap_or(0);
    STRONG[i % STRONG.len()]
}

/// The colour of a fault-service method: its position in [`FaultMethod::ALL`].
pub(super) fn fault_color(method: FaultMethod) -> RGBColor {
    let i = FaultMethod::ALL
        .iter()
        .position(|&m| m == method)
        .unwrap_or(0);
    STRONG[i % STRONG.len()]
}

/// How a series' line is drawn.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Dash {
    Solid,
    Dashed,
    Dotted,
}

/// The marker at each measured point.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Marker {
    Circle,
    Triangle,
}

/// Everything that tells one series from another.
#[derive(Clone, Copy)]
pub(super) struct Look {
    pub(super) color: RGBColor,
    pub(super) dash: Dash,
    pub(super) width: u32,
    pub(super) marker: Marker,
    pub(super) filled: bool,
}

/// Bulk series: colour per method; THP on solid with filled circles, THP off dashed with hollow
/// circles; a second thread spinning dotted with triangles (filled or hollow by THP again).
pub(super) fn bulk_look(method: Method, thp: bool, spin: bool) -> Look {
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
pub(super) const HANDLER_STYLES: [(Dash, Marker, bool); 3] = [
    (Dash::Solid, Marker::Circle, true),
    (Dash::Dashed, Marker::Circle, false),
    (Dash::Dotted, Marker::Triangle, true),
];

/// The style of handler count `h` given the distinct non-zero handler counts `counts`, sorted.
pub(super) fn handler_style(h: u32, counts: &[u32]) -> (Dash, Marker, bool) {
    let i = counts.iter().position(|&c| c == h).unwrap_or(0);
    HANDLER_STYLES[i % HANDLER_STYLES.len()]
}

/// How a style is called in the encoding lines.
pub(super) fn style_words(dash: Dash, marker: Marker, filled: bool) -> String {
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
