//! The fused kernels against the same maths composed from candle primitives (`pez_nn::composed`; candle's autograd
//! gives the reference gradient), in f64: values and input gradients of `sum(f(x) * w)` for a random `w`.

use candle_core::{DType, Device, Tensor, Var};
use pez_nn::masks::{causal_mask_after, key_padding_mask, packed_mask};
use pez_nn::matmul::Precision;
use pez_nn::ops::{self, Activation};
use pez_nn::testing::{check_grad, max_abs_diff, random};
use pez_nn::{composed, kernels, Packed};

/// Max |difference| of values and of every input gradient between `fast` and `reference`.
fn compare(
    inputs: &[Tensor],
    fast: impl Fn(&[Tensor]) -> Tensor,
    reference: impl Fn(&[Tensor]) -> Tensor,
) -> (f32, f32) {
    let vars: Vec<Var> = inputs.iter().map(|x| Var::from_tensor(x).unwrap()).collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let (a, b) = (fast(&xs), reference(&xs));
    let w = random(a.dims(), 99, DType::F64);
    let (ga, gb) = (
        (&a * &w).unwrap().sum_all().unwrap().backward().unwrap(),
        (&b * &w).unwrap().sum_all().unwrap().backward().unwrap(),
    );
    let grad_err = xs
        .iter()
        .map(|x| {
            max_abs_diff(
                ga.get(x).expect("fused gradient"),
                gb.get(x).expect("reference gradient"),
            )
        })
        .fold(0.0, f32::max);
    (max_abs_diff(&a, &b), grad_err)
}

/// Differences are measured in f32 (`max_abs_diff`), so equal maths reads 0 or a few f32 ulps.
fn assert_close(name: &str, (v, g): (f32, f32)) {
    eprintln!("{name}: values {v:.1e}, input gradients {g:.1e}");
    assert!(v < 1e-6 && g < 1e-6, "{name}: values {v}, gradients {g}");
}

#[test]
fn the_ops_run_kernels_on_cpu_floats_and_composed_maths_otherwise() {
    use pez_nn::backend::{kernels_for, with, Impl};
    let x = random(&[2, 3], 1, DType::F64);
    assert!(kernels_for(&x) && kernels_for(&x.to_dtype(DType::F32).unwrap()));
    assert!(!kernels_for(&x.to_dtype(DType::BF16).unwrap()));
    assert!(!with(Impl::Composed, || kernels_for(&x)));
    assert!(kernels_for(&x), "the forced choice ends with `with`");
}

#[test]
fn rms_norm_and_layer_norm() {
    let x = random(&[3, 5, 8], 1, DType::F64);
    let (w, b) = (random(&[8], 2, DType::F64), random(&[8], 3, DType::F64));
    assert_close(
        "rms_norm",
        compare(
            std::slice::from_ref(&x),
            |t| kernels::rms_norm(&t[0], &w, 1e-6).unwrap(),
            |t| composed::rms_norm(&t[0], &w, 1e-6).unwrap(),
        ),
    );
    assert_close(
        "layer_norm",
        compare(
            &[x],
            |t| kernels::layer_norm(&t[0], &w, &b, 1e-5).unwrap(),
            |t| composed::layer_norm(&t[0], &w, &b, 1e-5).unwrap(),
        ),
    );
}

fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor, mask: &Tensor, scale: f64) -> Tensor {
    composed::attention(q, k, v, Some(mask), scale).unwrap()
}

#[test]
fn attention_with_grouped_heads_and_both_mask_kinds() {
    // 6 query heads on 2 key/value heads; 4 new queries after 2 cached positions.
    let (q, k, v) = (
        random(&[2, 6, 4, 8], 4, DType::F64),
        random(&[2, 2, 6, 8], 5, DType::F64),
        random(&[2, 2, 6, 8], 6, DType::F64),
    );
    // A causal mask `[sq, sk]` shared by batch and heads, and a key-padding mask `[b, 1, 1, sk]`.
    let causal = causal_mask_after(4, 2, None, DType::F64, &Device::Cpu).unwrap();
    let pad = key_padding_mask(&[6, 3], 6, DType::F64, &Device::Cpu).unwrap();
    for (name, mask, scale) in [
        ("attention, causal mask", &causal, 0.35),
        ("attention, key-padding mask", &pad, 1.3),
    ] {
        assert_close(
            name,
            compare(
                &[q.clone(), k.clone(), v.clone()],
                |t| kernels::attention(&t[0], &t[1], &t[2], Some(mask), scale, Precision::F32).unwrap(),
                |t| attention_reference(&t[0], &t[1], &t[2], mask, scale),
            ),
        );
        // The GPU's attention with pez's kernels: the products composed, the fused masked softmax between them.
        assert_close(
            &format!("{name}, fused softmax between composed products"),
            compare(
                &[q.clone(), k.clone(), v.clone()],
                |t| {
                    composed::attention_with(&t[0], &t[1], &t[2], |z| kernels::masked_softmax(z, Some(mask), scale))
                        .unwrap()
                },
                |t| attention_reference(&t[0], &t[1], &t[2], mask, scale),
            ),
        );
    }
}

#[test]
fn inference_attention_in_tiles_equals_the_reference() {
    // Inputs that track no gradient take the tiled path. 300 queries (tiles of 256: one whole, one partial) after 7
    // cached positions, 6 query heads on 2 key/value heads, under every mask kind the models build.
    let (sq, past) = (300, 7);
    let (q, k, v) = (
        random(&[2, 6, sq, 8], 14, DType::F64),
        random(&[2, 2, past + sq, 8], 15, DType::F64),
        random(&[2, 2, past + sq, 8], 16, DType::F64),
    );
    let dev = &Device::Cpu;
    let packed = Packed::new(&[140, 1, 120, 39]);
    let masks = [
        ("causal", causal_mask_after(sq, past, None, DType::F64, dev).unwrap()),
        (
            "sliding window 20",
            causal_mask_after(sq, past, Some(20), DType::F64, dev).unwrap(),
        ),
        (
            "packed rows",
            packed_mask(&packed, past, None, DType::F64, dev).unwrap(),
        ),
        (
            "packed rows, window 16",
            packed_mask(&packed, past, Some(16), DType::F64, dev).unwrap(),
        ),
        (
            "key padding",
            key_padding_mask(&[past + sq, 90], past + sq, DType::F64, dev).unwrap(),
        ),
    ];
    for (name, mask) in &masks {
        let err = max_abs_diff(
            &kernels::attention(&q, &k, &v, Some(mask), 0.4, Precision::F32).unwrap(),
            &attention_reference(&q, &k, &v, mask, 0.4),
        );
        eprintln!("tiled attention, {name}: values {err:.1e}");
        assert!(err < 1e-6, "tiled attention, {name}: {err}");
    }
    let unmasked = kernels::attention(&q, &k, &v, None, 0.4, Precision::F32).unwrap();
    let zeros = Tensor::zeros((sq, past + sq), DType::F64, dev).unwrap();
    assert!(
        max_abs_diff(&unmasked, &attention_reference(&q, &k, &v, &zeros, 0.4)) < 1e-6,
        "tiled attention without a mask"
    );
}

#[test]
fn rope_gated_and_head_swaps() {
    let x = random(&[2, 3, 5, 8], 5, DType::F64);
    let pos: Vec<f64> = [0.0, 1.0, 2.0, 7.0, 3.5].to_vec();
    let (cos, sin) = ops::rope_tables_at(&pos, 8, 1e4, DType::F64, &Device::Cpu).unwrap();
    assert_close(
        "rope",
        compare(
            std::slice::from_ref(&x),
            |t| kernels::rope(&t[0], &cos, &sin).unwrap(),
            |t| composed::rope(&t[0], &cos, &sin).unwrap(),
        ),
    );
    let (a, b) = (random(&[4, 6], 6, DType::F64), random(&[4, 6], 7, DType::F64));
    for (name, gate, act) in [
        ("gated silu", kernels::Gate::Silu, Activation::Silu),
        ("gated gelu (tanh)", kernels::Gate::GeluTanh, Activation::GeluTanh),
    ] {
        assert_close(
            name,
            compare(
                &[a.clone(), b.clone()],
                |t| kernels::gated(gate, &t[0], &t[1]).unwrap(),
                |t| (act.apply(&t[0]).unwrap() * &t[1]).unwrap(),
            ),
        );
    }
    // candle's own tanh-GELU backward differs from the exact derivative by ~2e-7; finite differences decide.
    let w = random(&[4, 6], 9, DType::F64);
    check_grad(
        &a,
        |a| {
            (kernels::gated(kernels::Gate::GeluTanh, a, &b).unwrap() * &w)
                .unwrap()
                .sum_all()
                .unwrap()
        },
        24,
        1e-6,
    );
    let h = random(&[2, 5, 12], 8, DType::F64);
    let swap = |t: &Tensor, dims, out: &[usize]| {
        (
            kernels::swap_middle(t, dims, out.into()).unwrap(),
            composed::swap_middle(t, dims, out.into()).unwrap(),
        )
    };
    assert_close(
        "split_heads",
        compare(
            &[h],
            |t| swap(&t[0], (2, 5, 3, 4), &[2, 3, 5, 4]).0,
            |t| swap(&t[0], (2, 5, 3, 4), &[2, 3, 5, 4]).1,
        ),
    );
    assert_close(
        "merge_heads",
        compare(
            &[x],
            |t| swap(&t[0], (2, 3, 5, 8), &[2, 5, 24]).0,
            |t| swap(&t[0], (2, 3, 5, 8), &[2, 5, 24]).1,
        ),
    );
}

#[test]
fn frozen_linear_in_both_weight_layouts() {
    let x = random(&[2, 3, 8], 10, DType::F64);
    let (w, b) = (random(&[5, 8], 11, DType::F64), random(&[5], 12, DType::F64));
    let wt = w.t().unwrap();
    assert_close(
        "linear [out, in] + bias",
        compare(
            std::slice::from_ref(&x),
            |t| kernels::linear(&t[0], &wt, &w, Some(&b), None).unwrap(),
            |t| composed::linear(&t[0], &wt, Some(&b)).unwrap(),
        ),
    );
    let w_io = random(&[8, 5], 13, DType::F64);
    let wt = w_io.t().unwrap();
    assert_close(
        "linear [in, out] + bias",
        compare(
            std::slice::from_ref(&x),
            |t| kernels::linear(&t[0], &w_io, &wt, Some(&b), None).unwrap(),
            |t| composed::linear(&t[0], &w_io, Some(&b)).unwrap(),
        ),
    );
    // A column block of a wider stored matrix (GPT-2's query/key/value map, split at load).
    let wide = random(&[8, 15], 14, DType::F64);
    let (part, bias) = (wide.narrow(1, 5, 5).unwrap(), random(&[5], 15, DType::F64));
    let pt = part.t().unwrap();
    assert_close(
        "linear, a column block of [in, 3 out]",
        compare(
            &[x],
            |t| kernels::linear(&t[0], &part, &pt, Some(&bias), None).unwrap(),
            |t| composed::linear(&t[0], &part, Some(&bias)).unwrap(),
        ),
    );
}
