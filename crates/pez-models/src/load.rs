//! A language model with its tokenizer, from a name, a Hugging Face directory or a GGUF file.

use crate::{gemma3, gpt2, llama, opt, t5, LanguageModel};
use anyhow::{bail, Result};
use candle_core::{DType, Device};
use pez_hub::checkpoint::{read_config, safetensors_dir};
use pez_hub::{gguf, tokenizer, ModelSpec};
use std::path::Path;
use tokenizers::Tokenizer;

/// A language model with its tokenizer.
pub struct LoadedLm {
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Tokenizer,
    pub source: String,
    /// A token the model expects in front of every input (Gemma's `<bos>`, OPT's `</s>`), if any.
    pub bos: Option<u32>,
}

/// The token a tokenizer's post-processor puts in front of every input, if any.
fn bos_of(t: &Tokenizer) -> Option<u32> {
    let plain = t.encode("a", false).ok()?.get_ids().to_vec();
    let with = t.encode("a", true).ok()?.get_ids().to_vec();
    (with.len() > plain.len() && with.ends_with(&plain) && with.len() - plain.len() == 1).then(|| with[0])
}

#[derive(serde::Deserialize)]
struct ModelType {
    model_type: String,
}

/// Loads a causal language model by name or path.
pub fn load_lm(name: &str, dtype: DType, device: &Device) -> Result<LoadedLm> {
    match ModelSpec::resolve(name)? {
        ModelSpec::Gguf(path) => load_gguf(&path, dtype, device),
        ModelSpec::HfDir(dir) => load_hf_dir(&dir, dtype, device),
    }
}

pub fn load_hf_dir(dir: &Path, dtype: DType, device: &Device) -> Result<LoadedLm> {
    let model = load_hf_model(dir, dtype, device)?;
    let tokenizer = tokenizer::from_dir(dir)?;
    Ok(LoadedLm {
        model,
        bos: bos_of(&tokenizer),
        tokenizer,
        source: dir.display().to_string(),
    })
}

/// The model of a Hugging Face directory, without its tokenizer.
pub fn load_hf_model(dir: &Path, dtype: DType, device: &Device) -> Result<Box<dyn LanguageModel>> {
    let mt: ModelType = read_config(dir)?;
    let w = safetensors_dir(dir, dtype, device)?;
    let model: Box<dyn LanguageModel> = match mt.model_type.as_str() {
        "gpt2" => Box::new(gpt2::Gpt2::load(&w, read_config(dir)?)?),
        "opt" => Box::new(opt::Opt::load(&w, read_config(dir)?)?),
        "llama" => Box::new(llama::Llama::load(&w, read_config(dir)?)?),
        "t5" => Box::new(t5::T5::load(&w, read_config(dir)?)?),
        "gemma3_text" => Box::new(gemma3::Gemma3::load(&w, read_config(dir)?, false)?),
        "gemma3" => {
            #[derive(serde::Deserialize)]
            struct Multimodal {
                text_config: gemma3::Gemma3Config,
            }
            let cfg: Multimodal = read_config(dir)?;
            Box::new(gemma3::Gemma3::load(&w, cfg.text_config, false)?)
        }
        other => bail!("{}: model_type `{other}` is not a supported causal LM", dir.display()),
    };
    Ok(model)
}

pub fn load_gguf(path: &Path, dtype: DType, device: &Device) -> Result<LoadedLm> {
    let (w, content) = gguf::read(path, dtype, device)?;
    let arch = gguf::gguf_str(&content, "general.architecture")?;
    let model: Box<dyn LanguageModel> = match arch.as_str() {
        "llama" => Box::new(llama::Llama::from_gguf(&w, &content)?),
        "gemma3" => Box::new(gemma3::Gemma3::from_gguf(&w, &content)?),
        other => bail!("{}: GGUF architecture `{other}` is not supported", path.display()),
    };
    Ok(LoadedLm {
        model,
        tokenizer: tokenizer::from_gguf(&content)?,
        bos: tokenizer::gguf_bos(&content),
        source: path.display().to_string(),
    })
}
