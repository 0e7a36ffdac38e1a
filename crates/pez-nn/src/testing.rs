//! Helpers for the tests of the ops and of every model built on them: fixed random inputs, differences in f32,
//! and input gradients checked against central finite differences.

use candle_core::{DType, Device, Tensor};

/// Max |a - b| over all elements, compared in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let a = a
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let b = b
        .to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Checks d(loss)/d(x) from candle's backward against central finite differences at `n` random coordinates,
/// in f64. `loss` must be a scalar function of `x`. Panics if any relative error exceeds `tol` or if the
/// analytic gradient is missing.
pub fn check_grad(x: &Tensor, loss: impl Fn(&Tensor) -> Tensor, n: usize, tol: f64) {
    assert_eq!(x.dtype(), DType::F64);
    let var = candle_core::Var::from_tensor(x).unwrap();
    let l = loss(var.as_tensor());
    let grads = l.backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("no gradient reached the input embeddings");
    let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let base = x.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let gnorm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(gnorm > 0.0, "gradient is identically zero");
    let mut rng = 12345u64;
    let eps = 1e-5;
    let mut worst = 0f64;
    for _ in 0..n {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let i = (rng >> 33) as usize % base.len();
        let eval = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            let t = Tensor::from_vec(v, x.shape(), x.device()).unwrap();
            loss(&t).to_scalar::<f64>().unwrap()
        };
        let fd = (eval(eps) - eval(-eps)) / (2.0 * eps);
        // Relative to the gradient's scale, so near-zero coordinates do not blow the ratio up.
        let err = (fd - g[i]).abs() / (fd.abs().max(g[i].abs()).max(1e-3 * gnorm / (base.len() as f64).sqrt()));
        worst = worst.max(err);
        assert!(
            err < tol,
            "coordinate {i}: analytic {} vs finite difference {fd} (rel err {err:.2e})",
            g[i]
        );
    }
    eprintln!("gradient check: worst relative error {worst:.2e} over {n} coordinates");
}

/// A fixed random tensor (uniform in [-1, 1)) for test inputs.
pub fn random(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    let mut s = seed.wrapping_add(0x9E3779B97F4A7C15);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .unwrap()
        .to_dtype(dtype)
        .unwrap()
}
