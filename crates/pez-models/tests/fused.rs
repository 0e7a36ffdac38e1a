//! The fused kernels against the same maths composed from candle primitives (candle's autograd gives the
//! reference gradient), in f64: values and input gradients of `sum(f(x) * w)` for a random `w`.

mod common;
use candle_core::{DType, Device, Tensor, Var, D};
use common::{max_abs_diff, random};
use pez_models::fused;

/// Max |difference| of values and of every input gradient between `fast` and `reference`.
fn compare(inputs: &[Tensor], fast: impl Fn(&[Tensor]) -> Tensor, reference: impl Fn(&[Tensor]) -> Tensor) -> (f32, f32) {
    let vars: Vec<Var> = inputs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (a, b) = (fast(&xs), reference(&xs));
    let w = random(a.dims(), 99, DType::F64);
    let (ga, gb) = ((&a * &w).unwrap().sum_all().unwrap().backward().unwrap(), (&b * &w).unwrap().sum_all().unwrap().backward().unwrap());
    let grad_err = xs.iter().map(|x| max_abs_diff(ga.get(x).expect("fused gradient"), gb.get(x).expect("reference gradient"))).fold(0.0, f32::max);
    (max_abs_diff(&a, &b), grad_err)
}

/// Differences are measured in f32 (`max_abs_diff`), so equal maths reads 0 or a few f32 ulps.
fn assert_close(name: &str, (v, g): (f32, f32)) {
    eprintln!("{name}: values {v:.1e}, input gradients {g:.1e}");
    assert!(v < 1e-6 && g < 1e-6, "{name}: values {v}, gradients {g}");
}

#[test]
fn rms_norm_and_layer_norm() {
    let x = random(&[3, 5, 8], 1, DType::F64);
    let (w, b) = (random(&[8], 2, DType::F64), random(&[8], 3, DType::F64));
    assert_close("rms_norm", compare(&[x.clone()], |t| fused::rms_norm(&t[0], &w, 1e-6).unwrap(), |t| {
        let ms = t[0].sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        t[0].broadcast_div(&(ms + 1e-6).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap()
    }));
    assert_close("layer_norm", compare(&[x], |t| fused::layer_norm(&t[0], &w, &b, 1e-5).unwrap(), |t| {
        let xc = t[0].broadcast_sub(&t[0].mean_keepdim(D::Minus1).unwrap()).unwrap();
        let var = xc.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
        xc.broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap()).unwrap().broadcast_mul(&w).unwrap().broadcast_add(&b).unwrap()
    }));
}

/// `softmax(scale * q k^T + mask) v` composed from candle ops, key/value heads repeated for grouped queries.
fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
    let (b, h, _, d) = q.dims4().unwrap();
    let (_, kvh, sk, _) = k.dims4().unwrap();
    let expand = |t: &Tensor| t.unsqueeze(2).unwrap().broadcast_as((b, kvh, h / kvh, sk, d)).unwrap().reshape((b, h, sk, d)).unwrap();
    let (k, v) = (expand(k), expand(v));
    let z = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap().broadcast_add(mask).unwrap();
    let e = z.broadcast_sub(&z.max_keepdim(D::Minus1).unwrap().detach()).unwrap().exp().unwrap();
    e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap().matmul(&v).unwrap()
}

#[test]
fn attention_with_grouped_heads_and_both_mask_kinds() {
    // 6 query heads on 2 key/value heads; 4 new queries after 2 cached positions.
    let (q, k, v) = (random(&[2, 6, 4, 8], 4, DType::F64), random(&[2, 2, 6, 8], 5, DType::F64), random(&[2, 2, 6, 8], 6, DType::F64));
    // A causal mask `[sq, sk]` shared by batch and heads, and a key-padding mask `[b, 1, 1, sk]`.
    let causal = pez_models::ops::causal_mask_after(4, 2, None, DType::F64, &Device::Cpu).unwrap();
    let pad = pez_models::ops::key_padding_mask(&[6, 3], 6, DType::F64, &Device::Cpu).unwrap();
    for (name, mask, scale) in [("attention, causal mask", &causal, 0.35), ("attention, key-padding mask", &pad, 1.3)] {
        assert_close(name, compare(&[q.clone(), k.clone(), v.clone()], |t| fused::attention(&t[0], &t[1], &t[2], Some(mask), scale).unwrap(),
            |t| attention_reference(&t[0], &t[1], &t[2], mask, scale)));
    }
}

#[test]
fn inference_attention_in_tiles_equals_the_reference() {
    // Inputs that track no gradient take the tiled path. 300 queries (tiles of 256: one whole, one partial) after 7
    // cached positions, 6 query heads on 2 key/value heads, under every mask kind the models build.
    let (sq, past) = (300, 7);
    let (q, k, v) = (random(&[2, 6, sq, 8], 14, DType::F64), random(&[2, 2, past + sq, 8], 15, DType::F64), random(&[2, 2, past + sq, 8], 16, DType::F64));
    let dev = &Device::Cpu;
    let packed = pez_models::Packed::new(&[140, 1, 120, 39]);
    let masks = [
        ("causal", pez_models::ops::causal_mask_after(sq, past, None, DType::F64, dev).unwrap()),
        ("sliding window 20", pez_models::ops::causal_mask_after(sq, past, Some(20), DType::F64, dev).unwrap()),
        ("packed rows", pez_models::ops::packed_mask(&packed, past, None, DType::F64, dev).unwrap()),
        ("packed rows, window 16", pez_models::ops::packed_mask(&packed, past, Some(16), DType::F64, dev).unwrap()),
        ("key padding", pez_models::ops::key_padding_mask(&[past + sq, 90], past + sq, DType::F64, dev).unwrap()),
    ];
    for (name, mask) in &masks {
        let err = max_abs_diff(&fused::attention(&q, &k, &v, Some(mask), 0.4).unwrap(), &attention_reference(&q, &k, &v, mask, 0.4));
        eprintln!("tiled attention, {name}: values {err:.1e}");
        assert!(err < 1e-6, "tiled attention, {name}: {err}");
    }
    let unmasked = fused::attention(&q, &k, &v, None, 0.4).unwrap();
    let zeros = Tensor::zeros((sq, past + sq), DType::F64, dev).unwrap();
    assert!(max_abs_diff(&unmasked, &attention_reference(&q, &k, &v, &zeros, 0.4)) < 1e-6, "tiled attention without a mask");
}

#[test]
fn rope_gated_and_head_swaps() {
    let x = random(&[2, 3, 5, 8], 5, DType::F64);
    let pos: Vec<f64> = [0.0, 1.0, 2.0, 7.0, 3.5].to_vec();
    let (cos, sin) = pez_models::ops::rope_tables_at(&pos, 8, 1e4, DType::F64, &Device::Cpu).unwrap();
    assert_close("rope", compare(&[x.clone()], |t| fused::rope(&t[0], &cos, &sin).unwrap(), |t| {
        let (x1, x2) = (t[0].narrow(D::Minus1, 0, 4).unwrap(), t[0].narrow(D::Minus1, 4, 4).unwrap());
        let rotated = Tensor::cat(&[&x2.neg().unwrap(), &x1], D::Minus1).unwrap();
        (t[0].broadcast_mul(&cos).unwrap() + rotated.broadcast_mul(&sin).unwrap()).unwrap()
    }));
    let (a, b) = (random(&[4, 6], 6, DType::F64), random(&[4, 6], 7, DType::F64));
    assert_close("gated silu", compare(&[a.clone(), b.clone()], |t| fused::gated(fused::Gate::Silu, &t[0], &t[1]).unwrap(),
        |t| (t[0].silu().unwrap() * &t[1]).unwrap()));
    assert_close("gated gelu (tanh)", compare(&[a.clone(), b.clone()], |t| fused::gated(fused::Gate::GeluTanh, &t[0], &t[1]).unwrap(),
        |t| (t[0].gelu().unwrap() * &t[1]).unwrap()));
    // candle's own tanh-GELU backward differs from the exact derivative by ~2e-7; finite differences decide.
    let w = random(&[4, 6], 9, DType::F64);
    common::check_grad(&a, |a| (fused::gated(fused::Gate::GeluTanh, a, &b).unwrap() * &w).unwrap().sum_all().unwrap(), 24, 1e-6);
    let h = random(&[2, 5, 12], 8, DType::F64);
    assert_close("split_heads", compare(&[h.clone()], |t| pez_models::ops::split_heads(&t[0], 3).unwrap(),
        |t| t[0].reshape((2, 5, 3, 4)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()));
    assert_close("merge_heads", compare(&[x], |t| pez_models::ops::merge_heads(&t[0]).unwrap(),
        |t| t[0].transpose(1, 2).unwrap().reshape((2, 5, 24)).unwrap()));
}

#[test]
fn frozen_linear_in_both_weight_layouts() {
    let x = random(&[2, 3, 8], 10, DType::F64);
    let (w, b) = (random(&[5, 8], 11, DType::F64), random(&[5], 12, DType::F64));
    assert_close("linear [out, in] + bias", compare(&[x.clone()], |t| pez_models::ops::linear(&t[0], &w, Some(&b)).unwrap(),
        |t| t[0].broadcast_matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap()));
    let w_io = random(&[8, 5], 13, DType::F64);
    assert_close("conv1d linear [in, out] + bias", compare(&[x], |t| pez_models::ops::conv1d_linear(&t[0], &w_io, &b).unwrap(),
        |t| t[0].broadcast_matmul(&w_io).unwrap().broadcast_add(&b).unwrap()));
}
