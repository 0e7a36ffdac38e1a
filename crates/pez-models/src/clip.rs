//! CLIP text and vision towers (OpenAI CLIP with quick-GELU; OpenCLIP with GELU), from a Hugging Face `CLIPModel`
//! directory or from open_clip's own layout (`open_clip_config.json` + `open_clip_model.safetensors` or
//! `open_clip_pytorch_model.bin`). Text: token + position embeddings, causal pre-LN transformer, final LayerNorm, the
//! hidden state at the end-of-text token, linear projection. Vision: patch embedding, class token, pre-LN,
//! transformer, LayerNorm of the class token, linear projection.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use pez_hub::checkpoint::{read_config, safetensors_dir};
use pez_nn::masks::causal_mask;
use pez_nn::matmul::Precision;
use pez_nn::ops::{attention_at, gather_rows, merge_heads, split_heads};
use pez_nn::{Activation, LayerNorm, Linear, Mlp, Weights};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct TowerConfig {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "act")]
    pub hidden_act: String,
    #[serde(default = "eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub image_size: usize,
    #[serde(default)]
    pub patch_size: usize,
}
fn act() -> String {
    "quick_gelu".into()
}
fn eps() -> f64 {
    1e-5
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClipConfig {
    pub text_config: TowerConfig,
    pub vision_config: TowerConfig,
    pub projection_dim: usize,
}

struct Block {
    ln1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    ln2: LayerNorm,
    mlp: Mlp,
}

impl Block {
    fn load(w: &Weights, eps: f64, act: Activation) -> Result<Self> {
        let l = |n: &str| Linear::load(&w.pp(n));
        Ok(Self {
            ln1: LayerNorm::load(&w.pp("layer_norm1"), eps)?,
            q: l("self_attn.q_proj")?,
            k: l("self_attn.k_proj")?,
            v: l("self_attn.v_proj")?,
            out: l("self_attn.out_proj")?,
            ln2: LayerNorm::load(&w.pp("layer_norm2"), eps)?,
            mlp: Mlp {
                gate: None,
                up: l("mlp.fc1")?,
                down: l("mlp.fc2")?,
                act,
            },
        })
    }
}

/// The transformer shared by both towers.
struct Encoder {
    cfg: TowerConfig,
    blocks: Vec<Block>,
    precision: Precision,
}

impl Encoder {
    /// The blocks under `w` (`encoder.layers.N`).
    fn load(w: &Weights, cfg: TowerConfig) -> Result<Self> {
        let act = Activation::from_hf(&cfg.hidden_act)?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(&w.pp("encoder.layers").pp(i), cfg.layer_norm_eps, act))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            blocks,
            cfg,
            precision: w.precision(),
        })
    }

    fn forward(&self, mut h: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let heads = self.cfg.num_attention_heads;
        let scale = 1.0 / ((self.cfg.hidden_size / heads) as f64).sqrt();
        for b in &self.blocks {
            let x = b.ln1.forward(&h)?;
            let (q, k, v) = (
                split_heads(&b.q.forward(&x)?, heads)?,
                split_heads(&b.k.forward(&x)?, heads)?,
                split_heads(&b.v.forward(&x)?, heads)?,
            );
            h = (h + b
                .out
                .forward(&merge_heads(&attention_at(&q, &k, &v, mask, scale, self.precision)?)?)?)?;
            h = (&h + b.mlp.forward(&b.ln2.forward(&h)?)?)?;
        }
        Ok(h)
    }
}

pub struct ClipText {
    token: Tensor,
    position: Tensor,
    encoder: Encoder,
    final_ln: LayerNorm,
    projection: Linear,
}

impl ClipText {
    pub fn load(w: &Weights, cfg: TowerConfig) -> Result<Self> {
        let t = w.pp("text_model");
        Ok(Self {
            token: t.get("embeddings.token_embedding.weight")?,
            position: t.get("embeddings.position_embedding.weight")?,
            final_ln: LayerNorm::load(&t.pp("final_layer_norm"), cfg.layer_norm_eps)?,
            projection: Linear::new(w.get("text_projection.weight")?, None, w.precision())?,
            encoder: Encoder::load(&t, cfg)?,
        })
    }

    pub fn token_embeddings(&self) -> &Tensor {
        &self.token
    }

    pub fn context_length(&self) -> usize {
        self.position.dim(0).unwrap_or(77)
    }

    /// Last hidden states `[b, s, d]` (causal attention, so padding after the end-of-text token is inert).
    pub fn hidden_states(&self, embeds: &Tensor) -> Result<Tensor> {
        let (_, s, _) = embeds.dims3()?;
        if s > self.context_length() {
            bail!("{s} tokens exceed CLIP's context of {}", self.context_length());
        }
        let h = embeds.broadcast_add(&self.position.narrow(0, 0, s)?)?;
        let mask = causal_mask(s, None, embeds.dtype(), embeds.device())?;
        Ok(self.final_ln.forward(&self.encoder.forward(h, Some(&mask))?)?)
    }

    /// Projected text features `[b, proj]` (widened to f32 from bf16), pooled at each row's end-of-text position.
    pub fn features(&self, embeds: &Tensor, eot: &[usize]) -> Result<Tensor> {
        let h = self.hidden_states(embeds)?;
        Ok(pez_nn::dtype::widened(
            &self.projection.forward(&gather_rows(&h, eot)?)?,
        )?)
    }
}

pub struct ClipVision {
    class: Tensor,
    /// The patch embedding as a linear map over flattened patches `(c, py, px)`.
    patch: Linear,
    position: Tensor,
    pre_ln: LayerNorm,
    encoder: Encoder,
    post_ln: LayerNorm,
    projection: Linear,
}

impl ClipVision {
    pub fn load(w: &Weights, cfg: TowerConfig) -> Result<Self> {
        let (v, eps) = (w.pp("vision_model"), cfg.layer_norm_eps);
        Ok(Self {
            class: v.get("embeddings.class_embedding")?,
            patch: {
                let p = v.get("embeddings.patch_embedding.weight")?;
                Linear::new(p.flatten_from(1)?, None, w.precision())?
            },
            position: v.get("embeddings.position_embedding.weight")?,
            pre_ln: LayerNorm::load(&v.pp("pre_layrnorm"), eps)?,
            post_ln: LayerNorm::load(&v.pp("post_layernorm"), eps)?,
            projection: Linear::new(w.get("visual_projection.weight")?, None, w.precision())?,
            encoder: Encoder::load(&v, cfg)?,
        })
    }

    pub fn image_size(&self) -> usize {
        self.encoder.cfg.image_size
    }

    /// Projected image features `[b, proj]` (widened to f32 from bf16) for normalised pixels `[b, 3, H, W]` (any dtype).
    pub fn features(&self, pixels: &Tensor) -> Result<Tensor> {
        let pixels = pixels.to_dtype(self.position.dtype())?;
        let (b, c, hgt, wid) = pixels.dims4()?;
        let p = self.encoder.cfg.patch_size;
        let d = self.encoder.cfg.hidden_size;
        let (gh, gw) = (hgt / p, wid / p);
        // A stride-p convolution is a matmul over non-overlapping patches laid out as (c, py, px).
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((b, gh * gw, c * p * p))?;
        let x = self.patch.forward(&patches)?;
        let cls = self.class.reshape((1, 1, d))?.broadcast_as((b, 1, d))?;
        let h = Tensor::cat(&[&cls.contiguous()?, &x], 1)?.broadcast_add(&self.position)?;
        let h = self.encoder.forward(self.pre_ln.forward(&h)?, None)?;
        let pooled = self.post_ln.forward(&h.narrow(1, 0, 1)?.squeeze(1)?)?;
        Ok(pez_nn::dtype::widened(&self.projection.forward(&pooled)?)?)
    }
}

/// Both towers of a CLIP model.
pub struct Clip {
    pub text: ClipText,
    pub vision: ClipVision,
}

impl Clip {
    /// A Hugging Face `CLIPModel` directory (`config.json`), or an open_clip one (`open_clip_config.json` only).
    pub fn from_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let (cfg, w) = if is_open_clip_dir(dir) {
            open_clip::load(dir, dtype, device)?
        } else {
            (read_config::<ClipConfig>(dir)?, safetensors_dir(dir, dtype, device)?)
        };
        Ok(Self {
            text: ClipText::load(&w, cfg.text_config)?,
            vision: ClipVision::load(&w, cfg.vision_config)?,
        })
    }
}

/// Whether `dir` holds a model only in open_clip's own layout (`open_clip_config.json` and no Hugging Face
/// `config.json`; repositories with both are read through the Hugging Face layout).
pub fn is_open_clip_dir(dir: &Path) -> bool {
    dir.join(open_clip::CONFIG).exists() && !dir.join("config.json").exists()
}

/// The image normalisation a CLIP directory declares (`preprocessor_config.json`'s image_mean/std, or
/// `open_clip_config.json`'s preprocess_cfg mean/std), if any.
pub fn image_mean_std(dir: &Path) -> Result<Option<([f32; 3], [f32; 3])>> {
    let three = |v: Option<&serde_json::Value>| -> Option<[f32; 3]> {
        let a = v?.as_array()?;
        Some([
            a.first()?.as_f64()? as f32,
            a.get(1)?.as_f64()? as f32,
            a.get(2)?.as_f64()? as f32,
        ])
    };
    for (file, section, mean, std) in [
        ("preprocessor_config.json", None, "image_mean", "image_std"),
        (open_clip::CONFIG, Some("preprocess_cfg"), "mean", "std"),
    ] {
        let p = dir.join(file);
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        let v = section.map_or(Some(&v), |s| v.get(s));
        if let (Some(m), Some(s)) = (three(v.and_then(|v| v.get(mean))), three(v.and_then(|v| v.get(std)))) {
            return Ok(Some((m, s)));
        }
    }
    Ok(None)
}

/// open_clip's checkpoint layout, read by renaming its tensors to the Hugging Face names above.
mod open_clip {
    use super::*;

    pub const CONFIG: &str = "open_clip_config.json";

    #[derive(Deserialize)]
    struct ModelCfg {
        embed_dim: usize,
        #[serde(default)]
        quick_gelu: bool,
        vision_cfg: serde_json::Value,
        text_cfg: serde_json::Value,
    }

    fn get<T: serde::de::DeserializeOwned>(v: &serde_json::Value, key: &str, default: T) -> Result<T> {
        match v.get(key) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(x) => serde_json::from_value(x.clone()).with_context(|| format!("open_clip config: bad `{key}`")),
        }
    }

    /// Refuses the tower variants this implementation does not compute (timm or Hugging Face towers, attention
    /// pooling, layer scale, custom attention blocks, other pooling), rather than computing something else.
    fn check_plain(tower: &str, v: &serde_json::Value, defaults: &[(&str, serde_json::Value)]) -> Result<()> {
        for (key, default) in defaults {
            let got = v.get(*key).cloned().unwrap_or(serde_json::Value::Null);
            if !got.is_null() && got != *default {
                bail!("open_clip {tower} tower with `{key}: {got}` is not supported (plain CLIP towers only)");
            }
        }
        Ok(())
    }

    fn tower(v: &serde_json::Value, text: bool, act: &str, eps: f64) -> Result<TowerConfig> {
        let width: usize = get(v, "width", if text { 512 } else { 768 })?;
        let heads = if text {
            get(v, "heads", 8)?
        } else {
            width / get::<usize>(v, "head_width", 64)?
        };
        let image_size = match get::<serde_json::Value>(v, "image_size", 224.into())? {
            serde_json::Value::Array(a) if a.len() == 2 && a[0] == a[1] => serde_json::from_value(a[0].clone())?,
            x => serde_json::from_value(x.clone())
                .with_context(|| format!("open_clip config: image_size {x} is not square"))?,
        };
        Ok(TowerConfig {
            hidden_size: width,
            num_hidden_layers: get(v, "layers", 12)?,
            num_attention_heads: heads,
            hidden_act: act.into(),
            layer_norm_eps: eps,
            max_position_embeddings: get(v, "context_length", 77)?,
            image_size,
            patch_size: get(v, "patch_size", 16)?,
        })
    }

    pub fn load(dir: &Path, dtype: DType, device: &Device) -> Result<(ClipConfig, Weights)> {
        let p = dir.join(CONFIG);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p)?).with_context(|| format!("parsing {}", p.display()))?;
        // Hub repositories wrap the model config in `model_cfg`; open_clip's model_configs/*.json are bare.
        let mc: ModelCfg = serde_json::from_value(v.get("model_cfg").unwrap_or(&v).clone())
            .with_context(|| format!("{}: not an open_clip model config", p.display()))?;
        use serde_json::Value::{Bool, Null, String as S};
        let common = [
            ("ls_init_value", Null),
            ("block_type", Null),
            ("qk_norm", Bool(false)),
            ("scaled_cosine_attn", Bool(false)),
            ("scale_heads", Bool(false)),
            ("scale_attn_inner", Bool(false)),
            ("scale_attn", Bool(false)),
            ("scale_fc", Bool(false)),
            ("final_ln_after_pool", Bool(false)),
        ];
        let mut vision_plain = common.to_vec();
        vision_plain.extend([
            ("timm_model_name", Null),
            ("attentional_pool", Bool(false)),
            ("no_ln_pre", Bool(false)),
            ("pool_type", S("tok".into())),
            ("pos_embed_type", S("learnable".into())),
        ]);
        let mut text_plain = common.to_vec();
        text_plain.extend([
            ("hf_model_name", Null),
            ("embed_cls", Bool(false)),
            ("no_causal_mask", Bool(false)),
            ("pool_type", S("argmax".into())),
            ("proj_bias", Bool(false)),
            ("proj_type", S("linear".into())),
        ]);
        check_plain("vision", &mc.vision_cfg, &vision_plain)?;
        check_plain("text", &mc.text_cfg, &text_plain)?;
        let act = if mc.quick_gelu { "quick_gelu" } else { "gelu" };
        let eps = |v: &serde_json::Value| {
            v.get("norm_kwargs")
                .and_then(|n| n.get("eps"))
                .and_then(|e| e.as_f64())
                .unwrap_or(1e-5)
        };
        let cfg = ClipConfig {
            text_config: tower(&mc.text_cfg, true, act, eps(&mc.text_cfg))?,
            vision_config: tower(&mc.vision_cfg, false, act, eps(&mc.vision_cfg))?,
            projection_dim: mc.embed_dim,
        };
        let (st, bin) = (
            dir.join("open_clip_model.safetensors"),
            dir.join("open_clip_pytorch_model.bin"),
        );
        let tensors: Vec<(String, Tensor)> = if st.exists() {
            candle_core::safetensors::load(&st, device)
                .with_context(|| format!("reading {}", st.display()))?
                .into_iter()
                .collect()
        } else if bin.exists() {
            candle_core::pickle::read_all(&bin).with_context(|| format!("reading {}", bin.display()))?
        } else {
            bail!(
                "{}: no open_clip_model.safetensors or open_clip_pytorch_model.bin",
                dir.display()
            )
        };
        let mut renamed = HashMap::new();
        for (name, t) in tensors {
            for (hf, t) in hf_names(&name, t).with_context(|| format!("{}", dir.display()))? {
                renamed.insert(
                    hf,
                    t.to_device(device)?
                        .to_dtype(pez_nn::weights::storage_dtype(dtype, device))?,
                );
            }
        }
        Ok((
            cfg,
            Weights::new(renamed, dir.display().to_string(), dtype, device.clone()),
        ))
    }

    /// One open_clip tensor as the Hugging Face tensors it becomes: the fused attention input projection splits
    /// into q, k, v; `x @ proj` matrices become `[out, in]` linear weights.
    fn hf_names(name: &str, t: Tensor) -> Result<Vec<(String, Tensor)>> {
        let one = |n: &str| Ok(vec![(n.to_string(), t.clone())]);
        let (tower, rest) = match name.strip_prefix("visual.") {
            Some(r) => ("vision_model", r),
            None => ("text_model", name),
        };
        if let Some(block) = rest.strip_prefix("transformer.resblocks.") {
            let (i, part) = block.split_once('.').context("bad block name")?;
            let p = format!("{tower}.encoder.layers.{i}");
            if let Some(kind) = part.strip_prefix("attn.in_proj_") {
                let d = t.dim(0)? / 3;
                return ["q_proj", "k_proj", "v_proj"]
                    .iter()
                    .enumerate()
                    .map(|(j, qkv)| {
                        Ok((
                            format!("{p}.self_attn.{qkv}.{kind}"),
                            t.narrow(0, j * d, d)?.contiguous()?,
                        ))
                    })
                    .collect();
            }
            let mapped = [
                ("ln_1.", "layer_norm1."),
                ("ln_2.", "layer_norm2."),
                ("mlp.c_fc.", "mlp.fc1."),
                ("mlp.c_proj.", "mlp.fc2."),
                ("attn.out_proj.", "self_attn.out_proj."),
            ]
            .iter()
            .find_map(|(from, to)| part.strip_prefix(from).map(|r| format!("{p}.{to}{r}")));
            return match mapped {
                Some(n) => one(&n),
                None => bail!("open_clip tensor `{name}` is not part of a plain CLIP block"),
            };
        }
        let e = "embeddings";
        match (tower, rest) {
            ("text_model", "token_embedding.weight") => one(&format!("text_model.{e}.token_embedding.weight")),
            ("text_model", "positional_embedding") => one(&format!("text_model.{e}.position_embedding.weight")),
            ("text_model", "ln_final.weight" | "ln_final.bias") => {
                one(&rest.replace("ln_final", "text_model.final_layer_norm"))
            }
            ("text_model", "text_projection") => Ok(vec![("text_projection.weight".into(), t.t()?.contiguous()?)]),
            ("text_model", "logit_scale" | "logit_bias" | "attn_mask") => Ok(vec![]),
            ("vision_model", "class_embedding") => one(&format!("vision_model.{e}.class_embedding")),
            ("vision_model", "conv1.weight") => one(&format!("vision_model.{e}.patch_embedding.weight")),
            ("vision_model", "positional_embedding") => one(&format!("vision_model.{e}.position_embedding.weight")),
            ("vision_model", "ln_pre.weight" | "ln_pre.bias") => {
                one(&rest.replace("ln_pre", "vision_model.pre_layrnorm"))
            }
            ("vision_model", "ln_post.weight" | "ln_post.bias") => {
                one(&rest.replace("ln_post", "vision_model.post_layernorm"))
            }
            ("vision_model", "proj") => Ok(vec![("visual_projection.weight".into(), t.t()?.contiguous()?)]),
            _ => bail!("open_clip tensor `{name}` is not part of a plain CLIP model"),
        }
    }
}
