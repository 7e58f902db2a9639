//! Medians and spreads of repeated measurements.

use serde::Serialize;

/// The distribution of one figure over the measured repetitions (warm-up excluded).
///
/// Quartiles use linear interpolation between order statistics.
///
/// ```
/// let s = remap_bench::Spread::of(&[5.0, 1.0, 3.0]).unwrap();
/// assert_eq!((s.median, s.min, s.max), (3.0, 1.0, 5.0));
/// assert!(remap_bench::Spread::of(&[]).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The first quartile.
    pub q1: f64,
    /// The third quartile.
    pub q3: f64,
}

impl Spread {
    /// The spread of `values`, or `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            median: quantile(&v, 1, 2),
            min: v[0],
            max: v[v.len() - 1],
            q1: quantile(&v, 1, 4),
            q3: quantile(&v, 3, 4),
        })
    }

    /// The spread of `values`, or every figure NaN when there are none (a figure whose
    /// repetitions all failed; NaN is `null` in JSON).
    ///
    /// ```
    /// assert!(remap_bench::Spread::of_or_nan(&[]).median.is_nan());
    /// ```
    pub fn of_or_nan(values: &[f64]) -> Spread {
        Spread::of(values).unwrap_or(Spread {
            median: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
            q1: f64::NAN,
            q3: f64::NAN,
        })
    }

    /// Applies `f` to every figure (for example to turn a time into a rate; a decreasing `f`
    /// swaps min and max, and q1 and q3, so that `min <= max` holds again).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Spread {
        let (a, b, c, d) = (f(self.min), f(self.max), f(self.q1), f(self.q3));
        Spread {
            median: f(self.median),
            min: a.min(b),
            max: a.max(b),
            q1: c.min(d),
            q3: c.max(d),
        }
    }
}

/// The `num / den` quantile of sorted, non-empty `v` (interpolated).
fn quantile(v: &[f64], num: usize, den: usize) -> f64 {
    let scaled = num * (v.len() - 1);
    let (i, rem) = (scaled / den, scaled % den);
    if rem == 0 {
        v[i]
    } else {
        v[i] + (v[i + 1] - v[i]) * (rem as f64 / den as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn quartiles_interpolate() {
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(s.q1, 1.75);
        assert_eq!(s.q3, 3.25);
        let r = s.map(|x| 10.0 / x);
        assert!(r.min <= r.median && r.median <= r.max);
        assert_eq!(r.max, 10.0);
    }
}
