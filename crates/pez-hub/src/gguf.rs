//! llama.cpp's GGUF files: tensors (dequantized for the differentiable path), metadata, and their tensor names
//! mapped to Hugging Face's, so one loader per architecture reads both kinds of checkpoint.

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use pez_nn::weights::storage_dtype;
use pez_nn::Weights;
use std::collections::HashMap;
use std::path::Path;

/// Every tensor of a GGUF file, dequantized to `dtype`, and the file's metadata (config and tokenizer live there).
pub fn read(path: &Path, dtype: DType, device: &Device) -> Result<(Weights, gguf_file::Content)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening GGUF file {}", path.display()))?;
    let content =
        gguf_file::Content::read(&mut file).with_context(|| format!("{} is not a valid GGUF file", path.display()))?;
    let mut tensors = HashMap::new();
    for name in content.tensor_infos.keys() {
        let q = content
            .tensor(&mut file, name, device)
            .with_context(|| format!("reading tensor {name} from {}", path.display()))?;
        tensors.insert(
            name.clone(),
            q.dequantize(device)?.to_dtype(storage_dtype(dtype, device))?,
        );
    }
    Ok((
        Weights::new(tensors, path.display().to_string(), dtype, device.clone()),
        content,
    ))
}

pub fn gguf_u32(c: &gguf_file::Content, key: &str) -> Result<usize> {
    let v = c
        .metadata
        .get(key)
        .with_context(|| format!("GGUF metadata `{key}` missing"))?;
    Ok(v.to_u32()
        .map(|x| x as usize)
        .or_else(|_| v.to_u64().map(|x| x as usize))?)
}

pub fn gguf_f32(c: &gguf_file::Content, key: &str) -> Result<f64> {
    let v = c
        .metadata
        .get(key)
        .with_context(|| format!("GGUF metadata `{key}` missing"))?;
    Ok(v.to_f32().map(|x| x as f64).or_else(|_| v.to_f64())?)
}

pub fn gguf_str(c: &gguf_file::Content, key: &str) -> Result<String> {
    let v = c
        .metadata
        .get(key)
        .with_context(|| format!("GGUF metadata `{key}` missing"))?;
    Ok(v.to_string()?.clone())
}

/// Block tensor names, llama.cpp -> Hugging Face, that mean the same in every architecture here.
const BLOCK: &[(&str, &str)] = &[
    ("attn_norm.weight", "input_layernorm.weight"),
    ("attn_q.weight", "self_attn.q_proj.weight"),
    ("attn_k.weight", "self_attn.k_proj.weight"),
    ("attn_v.weight", "self_attn.v_proj.weight"),
    ("attn_output.weight", "self_attn.o_proj.weight"),
    ("ffn_gate.weight", "mlp.gate_proj.weight"),
    ("ffn_up.weight", "mlp.up_proj.weight"),
    ("ffn_down.weight", "mlp.down_proj.weight"),
];

/// Names that differ by architecture: `ffn_norm` is Llama's post-attention norm but Gemma 3's pre-feed-forward
/// norm (Gemma 3 has four norms per block).
fn arch_names(arch: &str) -> Result<&'static [(&'static str, &'static str)]> {
    Ok(match arch {
        "llama" => &[
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("output.weight", "lm_head.weight"),
            ("ffn_norm.weight", "post_attention_layernorm.weight"),
        ],
        "gemma3" => &[
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("attn_q_norm.weight", "self_attn.q_norm.weight"),
            ("attn_k_norm.weight", "self_attn.k_norm.weight"),
            ("post_attention_norm.weight", "post_attention_layernorm.weight"),
            ("ffn_norm.weight", "pre_feedforward_layernorm.weight"),
            ("post_ffw_norm.weight", "post_feedforward_layernorm.weight"),
        ],
        other => bail!("GGUF architecture `{other}` is not supported (llama, gemma3)"),
    })
}

/// A llama.cpp tensor name as Hugging Face names it (`blk.N.x` -> `model.layers.N.y`).
pub fn hf_name(arch: &str, name: &str) -> Result<String> {
    let table = arch_names(arch)?;
    let find = |n: &str| table.iter().chain(BLOCK).find(|(g, _)| *g == n).map(|(_, h)| *h);
    Ok(match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((i, t)) => format!("model.layers.{i}.{}", find(t).unwrap_or(t)),
        None => find(name).map_or_else(|| name.to_string(), String::from),
    })
}

/// The checkpoint in Hugging Face's names and layout. llama.cpp reorders Llama's Q/K rows for its rope (adjacent
/// pairs; Hugging Face pairs the halves): `heads` and `kv_heads` put them back.
pub fn to_hf(w: &Weights, arch: &str, heads: usize, kv_heads: usize) -> Result<Weights> {
    let mut renamed = HashMap::new();
    for name in w.names() {
        let mut t = w.get(name)?;
        if arch == "llama" && name.ends_with("attn_q.weight") {
            t = unpermute_qk(&t, heads)?;
        } else if arch == "llama" && name.ends_with("attn_k.weight") {
            t = unpermute_qk(&t, kv_heads)?;
        }
        renamed.insert(hf_name(arch, name)?, t);
    }
    Ok(w.renamed(renamed))
}

fn unpermute_qk(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / heads;
    Ok(w.reshape((heads, hd / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

#[cfg(test)]
mod tests {
    use super::hf_name;

    #[test]
    fn names_map_per_architecture() {
        assert_eq!(
            hf_name("llama", "blk.3.ffn_norm.weight").unwrap(),
            "model.layers.3.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("gemma3", "blk.3.ffn_norm.weight").unwrap(),
            "model.layers.3.pre_feedforward_layernorm.weight"
        );
        assert_eq!(
            hf_name("gemma3", "blk.0.attn_q.weight").unwrap(),
            "model.layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(hf_name("llama", "output.weight").unwrap(), "lm_head.weight");
        assert!(hf_name("mamba", "output.weight").is_err());
    }
}
