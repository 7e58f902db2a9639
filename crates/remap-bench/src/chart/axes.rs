//! Log-axis grids and their labels.

/// The chunk size at axis position `x` (a key point: one of the measured chunk sizes).
pub(super) fn label_bytes(x: f64) -> String {
    if !(1.0..1e18).contains(&x) {
        return String::new();
    }
    // In range and non-negative, so the conversion cannot truncate or lose a sign.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let b = x.round() as u64;
    crate::report::human_bytes(b)
}

/// A log-axis value with as many decimals as its size needs and no trailing zeros.
pub(super) fn label_number(y: f64) -> String {
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
pub(super) fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
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
