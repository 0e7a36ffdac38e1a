//! Summary statistics and the paired test of a method against the empty template.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_std(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let var = if x.len() > 1 {
        x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Two-sided paired t-test on per-example differences `a_i - b_i`: (mean difference, t, p-value).
/// `a` may be a method's correctness averaged over its prompts, `b` the empty template's 0/1 correctness.
pub fn paired_t(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let (m, s) = mean_std(&d);
    let n = d.len() as f64;
    if s == 0.0 {
        return (
            m,
            if m == 0.0 { 0.0 } else { f64::INFINITY * m.signum() },
            if m == 0.0 { 1.0 } else { 0.0 },
        );
    }
    let t = m / (s / n.sqrt());
    let dist = StudentsT::new(0.0, 1.0, n - 1.0).expect("valid degrees of freedom");
    (m, t, 2.0 * (1.0 - dist.cdf(t.abs())))
}
