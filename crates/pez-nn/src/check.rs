//! The fused ops against the composed maths on any device: what `pez check-kernels` prints, so that a GPU machine
//! without a Rust toolchain can check pez's CUDA kernels (`src/cuda`) with the shipped binary, and CI checks the
//! same code on the CPU kernels.
//!
//! The truth is the composed maths in f32 on the same (dtype-rounded) inputs. A fused op passes when its error,
//! relative to the truth's largest value, is at most twice the composed maths' own error in that dtype (zero in
//! f32) plus one rounding (1e-5 in f32, 2^-8 in bf16): the fused op may differ from the composed one, but must be no
//! further from the truth.

use crate::kernels::Gate;
use crate::ops::Activation;
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

type Op = Box<dyn Fn(&[Tensor], bool) -> Result<Tensor>>;
/// An op's name, the shapes of its inputs, and the op (fused or composed by its flag).
type Case = (&'static str, Vec<Vec<usize>>, Op);

/// The fused ops with their frozen operands, at rows of `d` values: each with the shapes of its inputs.
fn ops(device: &Device, rows: &[usize], d: usize) -> Result<Vec<Case>> {
    let frozen = |seed| random(&[d], seed, DType::F32).to_device(device);
    let (w, b, w2) = (frozen(2)?, frozen(3)?, frozen(4)?);
    let x: Vec<usize> = rows.iter().copied().chain([d]).collect();
    let rms: Op = Box::new(move |t: &[Tensor], fused: bool| {
        let w = w.to_dtype(t[0].dtype())?;
        match fused {
            true => kernels::rms_norm(&t[0], &w, 1e-6),
            false => composed::rms_norm(&t[0], &w, 1e-6),
        }
    });
    let ln: Op = Box::new(move |t: &[Tensor], fused: bool| {
        let (w, b) = (w2.to_dtype(t[0].dtype())?, b.to_dtype(t[0].dtype())?);
        match fused {
            true => kernels::layer_norm(&t[0], &w, &b, 1e-5),
            false => composed::layer_norm(&t[0], &w, &b, 1e-5),
        }
    });
    // Rope over the last two dimensions (positions, head width 64) with tables of those positions.
    let positions = rows[rows.len() - 1];
    let cos = random(&[positions, 64], 5, DType::F32).to_device(device)?;
    let sin = random(&[positions, 64], 6, DType::F32).to_device(device)?;
    let rope: Op = Box::new(move |t: &[Tensor], fused: bool| {
        let (c, s) = (cos.to_dtype(t[0].dtype())?, sin.to_dtype(t[0].dtype())?);
        match fused {
            true => kernels::rope(&t[0], &c, &s),
            false => composed::rope(&t[0], &c, &s),
        }
    });
    // The composed side as the models compose it where no kernel runs (`Activation::gated`).
    let gated = |gate: Gate, act: Activation| -> Op {
        Box::new(move |t: &[Tensor], fused: bool| match fused {
            true => kernels::gated(gate, &t[0], &t[1]),
            false => act.apply(&t[0])?.mul(&t[1]),
        })
    };
    let heads: Vec<usize> = rows.iter().copied().chain([64]).collect();
    // Attention scores [b, h, s, s] (one batch row when only two leading dimensions are given) under a causal mask.
    let scores = match *rows {
        [b, h, s] => vec![b, h, s, s],
        [h, s] => vec![1, h, s, s],
        _ => candle_core::bail!("check: rows {rows:?}"),
    };
    let causal = crate::masks::causal_mask_after(positions, 0, None, DType::F32, device)?;
    let softmax: Op = Box::new(move |t: &[Tensor], fused: bool| match fused {
        true => kernels::masked_softmax(&t[0], Some(&causal), 0.125),
        false => composed::masked_softmax(&t[0], Some(&causal), 0.125),
    });
    Ok(vec![
        ("rms_norm", vec![x.clone()], rms),
        ("layer_norm", vec![x.clone()], ln),
        ("rope", vec![heads], rope),
        (
            "gated_silu",
            vec![x.clone(), x.clone()],
            gated(Gate::Silu, Activation::Silu),
        ),
        (
            "gated_gelu_tanh",
            vec![x.clone(), x],
            gated(Gate::GeluTanh, Activation::GeluTanh),
        ),
        ("masked_softmax", vec![scores], softmax),
    ])
}

/// Values and input gradients of `sum(op(xs) * r)` for a fixed random `r`, all as f32 on the CPU (the gradients
/// of every input concatenated).
fn run(op: &Op, xs: &[Tensor], fused: bool) -> Result<(Tensor, Tensor)> {
    let vars = xs.iter().map(Var::from_tensor).collect::<Result<Vec<_>>>()?;
    let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = op(&ts, fused)?;
    let r = random(y.dims(), 99, DType::F32)
        .to_device(y.device())?
        .to_dtype(y.dtype())?;
    let grads = (&y * &r)?.sum_all()?.backward()?;
    let f = |t: &Tensor| t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.flatten_all();
    let gs = ts
        .iter()
        .map(|t| {
            let g = grads
                .get(t)
                .ok_or_else(|| candle_core::Error::Msg("no input gradient".into()))?;
            f(g)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((f(&y)?, Tensor::cat(&gs, 0)?))
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
    for (rows, d, seed) in [(vec![2usize, 8, 40], 576usize, 1u64), (vec![4, 7], 1280, 5)] {
        for (name, shapes, op) in ops(device, &rows, d)? {
            // The inputs rounded to `dtype` once; the truth reads the same rounded values in f32.
            let xs = shapes
                .iter()
                .zip(seed..)
                .map(|(s, k)| {
                    random(s, k, DType::F32)
                        .affine(2.0, 0.0)?
                        .to_device(device)?
                        .to_dtype(dtype)
                })
                .collect::<Result<Vec<_>>>()?;
            let wide = xs.iter().map(|x| x.to_dtype(DType::F32)).collect::<Result<Vec<_>>>()?;
            let (tv, tg) = run(&op, &wide, false)?;
            let (fv, fg) = run(&op, &xs, true)?;
            let (cv, cg) = run(&op, &xs, false)?;
            let (fused_values, fused_grads) = (rel(&fv, &tv)?, rel(&fg, &tg)?);
            let (composed_values, composed_grads) = (rel(&cv, &tv)?, rel(&cg, &tg)?);
            // Plus one rounding of the output type: 2^-8 in bf16 (8 bits of mantissa), 1e-5 in f32.
            let tol = if dtype == DType::BF16 { 2f32.powi(-8) } else { 1e-5 };
            let ok = fused_values <= 2.0 * composed_values + tol && fused_grads <= 2.0 * composed_grads + tol;
            out.push(OpCheck {
                op: name,
                dtype: format!("{dtype:?}").to_lowercase(),
                shape: shapes[0].clone(),
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
