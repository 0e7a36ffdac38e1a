//! Every architecture on its other compute paths, against the f32 CPU kernels on the tiny checkpoints:
//! - bf16 products (`DType::BF16`: packed bf16 weights, f32 accumulation): outputs and input gradients within bf16
//!   tolerance of f32, and the AVX512-BF16 kernels equal to the same bf16 maths emulated in f32 (where the CPU has
//!   them; skipped with a line saying so where not);
//! - the device-generic path (every op composed from candle primitives, as on a GPU; `backend::Impl::Composed`):
//!   equal to the kernels within f32 rounding.

mod common;
use candle_core::{DType, Device, Tensor, Var};
use common::*;
use pez_models::bert::Bert;
use pez_models::clip::Clip;
use pez_models::load::load_hf_model;
use pez_nn::backend::{with, Impl};
use pez_nn::matmul::isa::{self, Isa};

/// Max |a - b| relative to max |b|.
fn rel(a: &Tensor, b: &Tensor) -> f32 {
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    max_abs_diff(a, b) / scale.max(1e-12)
}

/// A model as a function of its input embeddings: the output and d(sum(output * w))/d(input).
fn output_and_grad(x: &Tensor, f: &dyn Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
    let v = Var::from_tensor(x).unwrap();
    let y = f(v.as_tensor());
    let w = random(y.dims(), 5, DType::F32);
    let g = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
    (
        y.detach(),
        g.get(v.as_tensor()).expect("a gradient reaches the input").clone(),
    )
}

/// bf16 against f32 (tolerance `bf16_tol`, relative), the bf16 kernels against bf16 emulated (1e-4) and composed
/// against kernels (1e-4) for one model.
/// A model's forward pass, as a function of its input.
type Forward = Box<dyn Fn(&Tensor) -> Tensor>;

fn compare(name: &str, load: &dyn Fn(DType) -> Forward, x: &Tensor, bf16_tol: f32) {
    let f32_model = load(DType::F32);
    let (y, g) = output_and_grad(x, f32_model.as_ref());
    let bf16_model = load(DType::BF16);
    let (yb, gb) = output_and_grad(x, bf16_model.as_ref());
    if isa::detected() >= Isa::Avx512Bf16 {
        let (ye, ge) = isa::with(Isa::Avx512.min(isa::detected()), || {
            output_and_grad(x, bf16_model.as_ref())
        });
        let (e, eg) = (rel(&yb, &ye), rel(&gb, &ge));
        eprintln!("{name}: AVX512-BF16 kernels vs bf16 emulated: output {e:.1e}, input gradient {eg:.1e}");
        assert!(
            e < 1e-4 && eg < 1e-4,
            "{name}: the bf16 kernels differ from the same maths emulated by {e} (output), {eg} (gradient)"
        );
    } else {
        eprintln!(
            "SKIPPED {name}: AVX512-BF16 kernels vs emulated (this CPU lacks {}; bf16 ran emulated)",
            isa::flag(Isa::Avx512Bf16)
        );
    }
    let (yc, gc) = with(Impl::Composed, || output_and_grad(x, f32_model.as_ref()));
    let (eb, egb, ec, egc) = (rel(&yb, &y), rel(&gb, &g), rel(&yc, &y), rel(&gc, &g));
    eprintln!("{name}: bf16 vs f32 output {eb:.1e}, input gradient {egb:.1e}; composed vs kernels output {ec:.1e}, gradient {egc:.1e}");
    assert!(
        eb < 3e-2 && egb < bf16_tol,
        "{name}: bf16 differs from f32 by {eb} (output), {egb} (gradient)"
    );
    assert!(
        eb > 0.0,
        "{name}: the bf16 model computed exactly f32's numbers: its products did not run in bf16"
    );
    assert!(
        ec < 1e-4 && egc < 1e-4,
        "{name}: composed differs from the kernels by {ec} (output), {egc} (gradient)"
    );
}

/// Next-token log-probabilities of two right-padded rows (the quantity tuning reads), for every causal LM and T5.
/// OPT's ReLU makes its input gradient jump where bf16 rounding moves a pre-activation across zero: its gradient
/// tolerance is wider (the emulated-vs-kernel check shows the difference is bf16's, not the kernels').
#[test]
fn language_models_on_every_path() {
    for (name, grad_tol) in [
        ("gpt2", 3e-2),
        ("opt", 0.2),
        ("opt350", 0.1),
        ("llama", 3e-2),
        ("gemma3", 3e-2),
        ("t5", 3e-2),
    ] {
        let d = load_hf_model(&fixture(name), DType::F32, &Device::Cpu)
            .unwrap()
            .info()
            .hidden_size;
        let x = random(&[2, 6, d], 1, DType::F32);
        let load = |dtype: DType| -> Box<dyn Fn(&Tensor) -> Tensor> {
            let m = load_hf_model(&fixture(name), dtype, &Device::Cpu).unwrap();
            Box::new(move |x: &Tensor| {
                pez_nn::ops::log_softmax_last(&m.next_token_logits(x, &[6, 4]).unwrap()).unwrap()
            })
        };
        compare(name, &load, &x, grad_tol);
    }
}

#[test]
fn encoders_on_every_path() {
    let bert = |dtype: DType| -> Box<dyn Fn(&Tensor) -> Tensor> {
        let m = Bert::from_dir(&fixture("bert"), dtype, &Device::Cpu).unwrap();
        Box::new(move |x: &Tensor| m.encode(x, &[6, 4]).unwrap())
    };
    let d = Bert::from_dir(&fixture("bert"), DType::F32, &Device::Cpu)
        .unwrap()
        .cfg
        .hidden_size;
    compare("bert", &bert, &random(&[2, 6, d], 2, DType::F32), 3e-2);
    for name in ["clip", "openclip"] {
        let text = |dtype: DType| -> Box<dyn Fn(&Tensor) -> Tensor> {
            let m = Clip::from_dir(&fixture(name), dtype, &Device::Cpu).unwrap();
            Box::new(move |x: &Tensor| m.text.features(x, &[5, 3]).unwrap())
        };
        let d = Clip::from_dir(&fixture(name), DType::F32, &Device::Cpu)
            .unwrap()
            .text
            .token_embeddings()
            .dim(1)
            .unwrap();
        compare(&format!("{name} text"), &text, &random(&[2, 6, d], 3, DType::F32), 3e-2);
        let vision = |dtype: DType| -> Box<dyn Fn(&Tensor) -> Tensor> {
            let m = Clip::from_dir(&fixture(name), dtype, &Device::Cpu).unwrap();
            Box::new(move |px: &Tensor| m.vision.features(px).unwrap())
        };
        let size = Clip::from_dir(&fixture(name), DType::F32, &Device::Cpu)
            .unwrap()
            .vision
            .image_size();
        compare(
            &format!("{name} vision"),
            &vision,
            &random(&[2, 3, size, size], 4, DType::F32),
            3e-2,
        );
    }
}
