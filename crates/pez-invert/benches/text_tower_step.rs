//! Seconds per PEZ inversion step (projection, CLIP text tower forward + backward to the prompt, AdamW) at prompt
//! length 16, for text towers of the ViT-B/32 and ViT-H-14 sizes (random weights of the real shapes: no CLIP
//! weights exist on this machine).    cargo bench -p pez-invert --bench text_tower_step -- [steps]

use candle_core::{DType, Device, Tensor};
use pez_core::{Method, Objective, Optimizer, OptimizerKind, Pez, Projector};
use pez_invert::encoder::ClipEncoder;
use pez_invert::TextEncoder;
use pez_models::clip::{ClipText, TowerConfig};
use pez_nn::Weights;
use std::collections::HashMap;
use std::time::Instant;

#[global_allocator]
static GLOBAL: pez_nn::alloc::Allocator = pez_nn::alloc::Allocator;

fn tower(width: usize, layers: usize, heads: usize, proj: usize) -> anyhow::Result<ClipText> {
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let mut add = |name: String, shape: &[usize]| {
        t.insert(name, Tensor::randn(0f32, 0.02, shape, &dev).unwrap());
    };
    add("text_model.embeddings.token_embedding.weight".into(), &[49408, width]);
    add("text_model.embeddings.position_embedding.weight".into(), &[77, width]);
    for i in 0..layers {
        let p = format!("text_model.encoder.layers.{i}");
        for (n, o, inp) in [
            ("self_attn.q_proj", width, width),
            ("self_attn.k_proj", width, width),
            ("self_attn.v_proj", width, width),
            ("self_attn.out_proj", width, width),
            ("mlp.fc1", 4 * width, width),
            ("mlp.fc2", width, 4 * width),
        ] {
            add(format!("{p}.{n}.weight"), &[o, inp]);
            add(format!("{p}.{n}.bias"), &[o]);
        }
        for n in ["layer_norm1", "layer_norm2"] {
            add(format!("{p}.{n}.weight"), &[width]);
            add(format!("{p}.{n}.bias"), &[width]);
        }
    }
    add("text_model.final_layer_norm.weight".into(), &[width]);
    add("text_model.final_layer_norm.bias".into(), &[width]);
    add("text_projection.weight".into(), &[proj, width]);
    let w = Weights::new(t, "random", DType::F32, dev);
    let cfg = TowerConfig {
        hidden_size: width,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        hidden_act: "gelu".into(),
        layer_norm_eps: 1e-5,
        max_position_embeddings: 77,
        image_size: 0,
        patch_size: 0,
    };
    ClipText::load(&w, cfg)
}

struct Obj<'a> {
    enc: &'a ClipEncoder,
    target: Tensor,
}
impl Objective for Obj<'_> {
    fn loss_and_grad(&mut self, p: &Tensor, _: &[u32]) -> anyhow::Result<(f32, Tensor)> {
        let v = candle_core::Var::from_tensor(p)?;
        let loss = (pez_invert::mean_cosine(&self.enc.features(v.as_tensor())?, &self.target)?.neg()? + 1.0)?;
        Ok((
            loss.to_scalar::<f32>()?,
            loss.backward()?.get(v.as_tensor()).unwrap().clone(),
        ))
    }
}

fn main() -> anyhow::Result<()> {
    pez_nn::alloc::keep_freed_memory();
    let steps: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10);
    for (name, width, layers, heads, proj) in [
        ("ViT-B/32 text tower", 512, 12, 8, 512),
        ("ViT-H-14 text tower", 1024, 24, 16, 1024),
    ] {
        let enc = ClipEncoder {
            text: tower(width, layers, heads, proj)?,
            sot: 49406,
            eot: 49407,
        };
        let target = Tensor::randn(0f32, 1.0, (1, proj), &Device::Cpu)?;
        let init = Tensor::randn(0f32, 0.02, (16, width), &Device::Cpu)?;
        let mut pez = Pez::new(
            Method::Pez,
            Projector::new(enc.token_embeddings(), &vec![true; 49408])?,
            &init,
            Optimizer::new(OptimizerKind::Adamw, 0.1),
            steps,
            0.1,
            0,
        )?;
        let mut obj = Obj { enc: &enc, target };
        pez.step(&mut obj)?; // warm-up
        let t = Instant::now();
        for _ in 0..steps {
            pez.step(&mut obj)?;
        }
        println!(
            "{name} (width {width}, {layers} layers), prompt 16 tokens: {:.3} s per PEZ step ({steps} steps)",
            t.elapsed().as_secs_f64() / steps as f64
        );
    }
    Ok(())
}
