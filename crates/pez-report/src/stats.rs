//! Summary statistics and the paired t-test, through statrs.

use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::statistics::Statistics;

/// (mean, sample standard deviation) of `xs`, the deviation 0 for a single value; `None` when empty.
pub fn mean_std(xs: &[f64]) -> Option<(f64, f64)> {
    match xs.len() {
        0 => None,
        1 => Some((xs[0], 0.0)),
        _ => Some((xs.mean(), xs.std_dev())),
    }
}

/// Two-sided paired t-test on the differences `a_i - b_i`: (mean difference, t, p-value). A constant difference
/// has no variance: t is 0 and p 1 when it is 0, else t is infinite and p 0.
pub fn paired_t(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let Some((m, s)) = mean_std(&d) else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    if s == 0.0 {
        return if m == 0.0 {
            (m, 0.0, 1.0)
        } else {
            (m, f64::INFINITY * m.signum(), 0.0)
        };
    }
    let n = d.len() as f64;
    let t = m / (s / n.sqrt());
    let dist = StudentsT::new(0.0, 1.0, n - 1.0).expect("valid degrees of freedom");
    (m, t, 2.0 * (1.0 - dist.cdf(t.abs())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_deviation() {
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[0.7]), Some((0.7, 0.0)));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert!(
            (m - 2.5).abs() < 1e-12 && (s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12,
            "{m} {s}"
        );
    }

    /// scipy.stats.ttest_rel([0.9, 0.8, 0.75, 0.6, 0.85], [0.7, 0.8, 0.6, 0.65, 0.7]): t = 1.85656, p = 0.136945.
    #[test]
    fn paired_t_matches_scipy() {
        let (d, t, p) = paired_t(&[0.9, 0.8, 0.75, 0.6, 0.85], &[0.7, 0.8, 0.6, 0.65, 0.7]);
        assert!((d - 0.09).abs() < 1e-12, "{d}");
        assert!((t - 1.85656).abs() < 1e-4 && (p - 0.136945).abs() < 1e-5, "t {t} p {p}");
        assert_eq!(paired_t(&[1.0, 1.0], &[1.0, 1.0]), (0.0, 0.0, 1.0));
    }
}
