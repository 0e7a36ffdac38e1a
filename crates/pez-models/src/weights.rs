//! Weight loading: Hugging Face safetensors directories (single or sharded), the hub cache layout, and GGUF
//! (dequantized to the requested float type for the differentiable path).

use anyhow::{bail, Context, Result};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Named tensors from one checkpoint, converted to one dtype, with errors that name the checkpoint.
pub struct Weights {
    tensors: HashMap<String, Tensor>,
    source: String,
    prefix: String,
    pub dtype: DType,
    pub device: Device,
}

impl Weights {
    pub fn new(tensors: HashMap<String, Tensor>, source: String, dtype: DType, device: Device) -> Self {
        Self { tensors, source, prefix: String::new(), dtype, device }
    }

    /// Loads every `*.safetensors` file of a Hugging Face model directory (sharded checkpoints included).
    pub fn from_safetensors_dir(dir: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("reading model directory {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("no *.safetensors files in {}", dir.display());
        }
        let mut tensors = HashMap::new();
        for f in &files {
            let loaded = candle_core::safetensors::load(f, device)
                .with_context(|| format!("reading safetensors file {}", f.display()))?;
            for (name, t) in loaded {
                tensors.insert(name, t.to_dtype(dtype)?);
            }
        }
        Ok(Self::new(tensors, dir.display().to_string(), dtype, device.clone()))
    }

    /// Loads a GGUF file, dequantizing every tensor. Returns the metadata too (config and tokenizer live there).
    pub fn from_gguf(path: &Path, dtype: DType, device: &Device) -> Result<(Self, gguf_file::Content)> {
        let mut file =
            std::fs::File::open(path).with_context(|| format!("opening GGUF file {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{} is not a valid GGUF file", path.display()))?;
        let mut tensors = HashMap::new();
        for name in content.tensor_infos.keys() {
            let q = content
                .tensor(&mut file, name, device)
                .with_context(|| format!("reading tensor {name} from {}", path.display()))?;
            tensors.insert(name.clone(), q.dequantize(device)?.to_dtype(dtype)?);
        }
        Ok((Self::new(tensors, path.display().to_string(), dtype, device.clone()), content))
    }

    /// The same checkpoint's tensors under other names (e.g. llama.cpp's renamed to Hugging Face's).
    pub fn renamed(&self, tensors: HashMap<String, Tensor>) -> Self {
        Self::new(tensors, self.source.clone(), self.dtype, self.device.clone())
    }

    /// Every tensor name in the checkpoint.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.tensors.keys()
    }

    /// Uses the first prefix (e.g. `"transformer."`) under which `probe` exists; checkpoints saved from a
    /// task head carry one, bare models do not.
    pub fn detect_prefix(mut self, candidates: &[&str], probe: &str) -> Self {
        for p in candidates.iter().chain(&[""]) {
            if self.tensors.contains_key(&format!("{p}{probe}")) {
                self.prefix = p.to_string();
                break;
            }
        }
        self
    }

    /// A view of the same tensors under the first matching prefix (see `detect_prefix`).
    pub fn clone_with_prefix(&self, candidates: &[&str], probe: &str) -> Self {
        Self {
            tensors: self.tensors.clone(),
            source: self.source.clone(),
            prefix: String::new(),
            dtype: self.dtype,
            device: self.device.clone(),
        }
        .detect_prefix(candidates, probe)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(&format!("{}{name}", self.prefix))
    }

    pub fn get(&self, name: &str) -> Result<Tensor> {
        let full = format!("{}{name}", self.prefix);
        self.tensors
            .get(&full)
            .cloned()
            .with_context(|| format!("tensor `{full}` not found in {}", self.source))
    }

    /// Like `get`, with the shape checked.
    pub fn get_shaped(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.get(name)?;
        if t.dims() != shape {
            bail!("tensor `{name}` in {} has shape {:?}, expected {:?}", self.source, t.dims(), shape);
        }
        Ok(t)
    }

    pub fn get_opt(&self, name: &str) -> Option<Tensor> {
        self.get(name).ok()
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

/// Reads `config.json` of a model directory.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T> {
    let p = dir.join("config.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// The snapshot directory of `repo` (e.g. `gpt2-large`, `facebook/opt-125m`) in the Hugging Face hub cache
/// (`$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`), if it has been downloaded.
pub fn hub_snapshot(repo: &str) -> Option<PathBuf> {
    let cache = std::env::var_os("HF_HUB_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("hub")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/huggingface/hub")))?;
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let refs = std::fs::read_to_string(repo_dir.join("refs/main")).ok();
    let snapshots = repo_dir.join("snapshots");
    // open_clip-only repositories have `open_clip_config.json` instead of `config.json`.
    let has_config = |p: &Path| p.join("config.json").exists() || p.join("open_clip_config.json").exists();
    if let Some(r) = refs {
        let p = snapshots.join(r.trim());
        if has_config(&p) {
            return Some(p);
        }
    }
    std::fs::read_dir(&snapshots).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| has_config(p))
}

/// Metadata helpers for GGUF files.
pub fn gguf_u32(c: &gguf_file::Content, key: &str) -> Result<usize> {
    let v = c.metadata.get(key).with_context(|| format!("GGUF metadata `{key}` missing"))?;
    Ok(v.to_u32().map(|x| x as usize).or_else(|_| v.to_u64().map(|x| x as usize))?)
}

pub fn gguf_f32(c: &gguf_file::Content, key: &str) -> Result<f64> {
    let v = c.metadata.get(key).with_context(|| format!("GGUF metadata `{key}` missing"))?;
    Ok(v.to_f32().map(|x| x as f64).or_else(|_| v.to_f64())?)
}

pub fn gguf_str(c: &gguf_file::Content, key: &str) -> Result<String> {
    let v = c.metadata.get(key).with_context(|| format!("GGUF metadata `{key}` missing"))?;
    Ok(v.to_string()?.clone())
}
