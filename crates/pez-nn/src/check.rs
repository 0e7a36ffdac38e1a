//! The fused ops against the composed maths on any device: what `pez check-kernels` prints, so that a GPU machine
//! without a Rust toolchain can check pez's CUDA kernels (`src/cuda`) with the shipped binary, and CI checks the
//! same code on the CPU kernels.
//!
//! The truth is the composed maths in f32 on the same (dtype-rounded) inputs. A fused op passes when its error,
//! relative to the truth's largest value, is at most twice the composed maths' own error in that dtype (zero in
//! f32) plus one rounding (1e-5 in f32, 2^-8 in bf16): the fused op may differ from the composed one, but must be no
//! further from the truth.

use crate::testing::random;
use crate::{composed, kernels};
use candle_core::{DType, Device, Result, Tensor, Var};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct OpCheck {
    pub op: &'static str,
    pub dtype: String,
    pub shape: Vec<usize>,
    /// Errors against the f32 truth, relative to its largest |value|: values and input gradient, fused and composed.
    pub fused_values: f32,
    pub fused_grads: f32,
    pub composed_values: f32,
    pub composed_grads: f32,
    pub ok: bool,
}

type Op = Box<dyn Fn(&Tensor, bool) -> Result<Tensor>>;

/// The fused ops with their frozen operands, at the widths of the models pez runs.
fn ops(device: &Device, d: usize) -> Result<Vec<(&'static str, Op)>> {
    let w = random(&[d], 2, DType::F32).to_device(device)?;
    let b = random(&[d], 3, DType::F32).to_device(device)?;
    let rms: Op = Box::new(move |x: &Tensor, fused: bool| {
        let w = w.to_dtype(x.dtype())?;
        match fused {
            true => kernels::rms_norm(x, &w, 1e-6),
            false => composed::rms_norm(x, &w, 1e-6),
        }
    });
    let (w2, b2) = (random(&[d], 4, DType::F32).to_device(device)?, b);
    let ln: Op = Box::new(move |x: &Tensor, fused: bool| {
        let (w, b) = (w2.to_dtype(x.dtype())?, b2.to_dtype(x.dtype())?);
        match fused {
            true => kernels::layer_norm(x, &w, &b, 1e-5),
            false => composed::layer_norm(x, &w, &b, 1e-5),
        }
    });
    Ok(vec![("rms_norm", rms), ("layer_norm", ln)])
}

/// Values and input gradient of `sum(op(x) * r)` for a fixed random `r`, both as f32 on the CPU.
fn run(op: &Op, x: &Tensor, fused: bool) -> Result<(Tensor, Tensor)> {
    let v = Var::from_tensor(x)?;
    let y = op(v.as_tensor(), fused)?;
    let r = random(y.dims(), 99, DType::F32)
        .to_device(x.device())?
        .to_dtype(y.dtype())?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let g = grads
        .get(v.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("no input gradient".into()))?;
    let f = |t: &Tensor| t.to_dtype(DType::F32)?.to_device(&Device::Cpu);
    Ok((f(&y)?, f(g)?))
}

/// max |a - b| / max |truth|.
fn rel(a: &Tensor, truth: &Tensor) -> Result<f32> {
    let scale = truth.abs()?.max_all()?.to_scalar::<f32>()?.max(f32::MIN_POSITIVE);
    Ok((a - truth)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
}

/// Every fused op against the composed maths on `device` in `dtype` (the CPU kernels take f32 and f64; the CUDA
/// kernels f32 and bf16), at rows of 576 (SmolLM2-135M) and 1280 (GPT-2 Large) values.
pub fn fused_against_composed(device: &Device, dtype: DType) -> Result<Vec<OpCheck>> {
    let mut out = vec![];
    for (shape, seed) in [(vec![16usize, 40, 576], 1u64), (vec![4, 7, 1280], 5)] {
        let d = *shape.last().unwrap();
        for (name, op) in ops(device, d)? {
            // The inputs rounded to `dtype` once; the truth reads the same rounded values in f32.
            let x = random(&shape, seed, DType::F32).to_device(device)?.to_dtype(dtype)?;
            let (tv, tg) = run(&op, &x.to_dtype(DType::F32)?, false)?;
            let (fv, fg) = run(&op, &x, true)?;
            let (cv, cg) = run(&op, &x, false)?;
            let (fused_values, fused_grads) = (rel(&fv, &tv)?, rel(&fg, &tg)?);
            let (composed_values, composed_grads) = (rel(&cv, &tv)?, rel(&cg, &tg)?);
            // Plus one rounding of the output type: 2^-8 in bf16 (8 bits of mantissa), 1e-5 in f32.
            let tol = if dtype == DType::BF16 { 2f32.powi(-8) } else { 1e-5 };
            let ok = fused_values <= 2.0 * composed_values + tol && fused_grads <= 2.0 * composed_grads + tol;
            out.push(OpCheck {
                op: name,
                dtype: format!("{dtype:?}").to_lowercase(),
                shape: shape.clone(),
                fused_values,
                fused_grads,
                composed_values,
                composed_grads,
                ok,
            });
        }
    }
    Ok(out)
}
