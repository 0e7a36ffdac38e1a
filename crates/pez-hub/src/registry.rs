//! Model names -> files: the short names, the folders local models live in, the Hugging Face hub cache and
//! downloads from the hub.

use crate::cache::{cache_dir, hub_api, hub_cache_dir};
use crate::fetch::{self, BUILTIN};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

static FETCH_MISSING: AtomicBool = AtomicBool::new(false);

/// Lets a missing built-in model be fetched when a command needs it (`--fetch-missing`), as `PEZ_FETCH_MISSING=1`
/// does; otherwise its absence is an error naming `pez models --fetch`.
pub fn set_fetch_missing(on: bool) {
    FETCH_MISSING.store(on, Ordering::Relaxed);
}

fn fetch_missing() -> bool {
    FETCH_MISSING.load(Ordering::Relaxed) || std::env::var("PEZ_FETCH_MISSING").is_ok_and(|v| v == "1")
}

/// Hub models with a short name (the built-in models, which `pez models` fetches, are in `fetch::BUILTIN`).
pub const KNOWN: &[(&str, &str)] = &[
    ("gpt2", "hub:openai-community/gpt2"),
    ("gpt2-medium", "hub:openai-community/gpt2-medium"),
    ("gpt2-large", "hub:openai-community/gpt2-large"),
    ("gpt2-xl", "hub:openai-community/gpt2-xl"),
    ("opt-125m", "hub:facebook/opt-125m"),
    ("opt-350m", "hub:facebook/opt-350m"),
    ("opt-1.3b", "hub:facebook/opt-1.3b"),
    ("opt-2.7b", "hub:facebook/opt-2.7b"),
    ("opt-6.7b", "hub:facebook/opt-6.7b"),
    ("t5-lm-large", "hub:google/t5-large-lm-adapt"),
    ("t5-lm-xl", "hub:google/t5-xl-lm-adapt"),
    ("clip-vit-b-32", "hub:openai/clip-vit-base-patch32"),
    ("clip-vit-l-14", "hub:openai/clip-vit-large-patch14"),
    ("openclip-vit-h-14", "hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K"),
];

/// Where the built-in models live (`pez models --fetch` puts them there), found at run time: `$PEZ_MODELS`; else
/// a `models/` folder holding one of them in the current directory or a parent (a checkout where
/// `scripts/setup.sh` ran); else the user's cache (`$XDG_CACHE_HOME/pez/models`, default `~/.cache/pez/models`).
pub fn models_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("PEZ_MODELS") {
        return PathBuf::from(p);
    }
    let has_models = |d: &Path| {
        BUILTIN
            .iter()
            .any(|b| d.join(b.path.split('/').next().unwrap_or(b.path)).exists())
    };
    if let Some(d) = std::env::current_dir()
        .ok()
        .and_then(|c| c.ancestors().map(|a| a.join("models")).find(|d| has_models(d)))
    {
        return d;
    }
    cache_dir().join("models")
}

/// A model named by the user, resolved to files.
#[derive(Debug, Clone)]
pub enum ModelSpec {
    Gguf(PathBuf),
    HfDir(PathBuf),
}

impl ModelSpec {
    /// A path to a GGUF file or a Hugging Face directory, a built-in model's name (`fetch::BUILTIN`), a short name
    /// from `KNOWN`, or a hub repository id
    /// present in the local hub cache.
    pub fn resolve(name: &str) -> Result<Self> {
        let p = Path::new(name);
        if p.is_file() {
            return Ok(Self::Gguf(p.to_path_buf()));
        }
        if p.is_dir() {
            return Ok(Self::HfDir(p.to_path_buf()));
        }
        if let Some(b) = fetch::builtin(name) {
            let models = models_dir();
            let path = match fetch::present(b, &models) {
                Some((path, _)) => path,
                None if fetch_missing() => fetch::fetch(b, &models, &mut |m| eprintln!("[models] {m}"))?,
                None => bail!(
                    "model `{name}` is not in {}: run `pez models --fetch {name}` (or set PEZ_MODELS to the folder that has it; \
                     --fetch-missing or PEZ_FETCH_MISSING=1 fetch it when needed)",
                    models.display()
                ),
            };
            return Ok(if path.is_dir() {
                Self::HfDir(path)
            } else {
                Self::Gguf(path)
            });
        }
        let target = KNOWN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        match target {
            Some(t) => {
                let repo = &t["hub:".len()..];
                match hub_snapshot(repo) {
                    Some(d) => Ok(Self::HfDir(d)),
                    None => download(repo).map(Self::HfDir).with_context(|| {
                        format!(
                            "model `{name}` ({repo}) is not in the Hugging Face hub cache and could not be downloaded; \
                             download it with `huggingface-cli download {repo}` or pass a directory with config.json and *.safetensors"
                        )
                    }),
                }
            }
            None => {
                match hub_snapshot(name) {
                    Some(d) => Ok(Self::HfDir(d)),
                    None => {
                        let names: Vec<&str> = BUILTIN
                            .iter()
                            .map(|b| b.name)
                            .chain(KNOWN.iter().map(|(n, _)| *n))
                            .collect();
                        bail!("unknown model `{name}`: not a file, a directory, a hub-cache repository, or one of {names:?}")
                    }
                }
            }
        }
    }
}

/// Downloads what a model directory needs (config, tokenizer, safetensors weights, sharded or not) from the
/// Hugging Face hub into its cache, unless `HF_HUB_OFFLINE=1`. Returns the snapshot directory.
pub fn download(repo: &str) -> Result<PathBuf> {
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1") {
        bail!("HF_HUB_OFFLINE=1: not downloading {repo}");
    }
    let api = hub_api()?;
    let r = api.model(repo.to_string());
    if r.get("config.json").is_err() {
        // An open_clip-only repository: its config, weights (safetensors, else the PyTorch pickle) and tokenizer.
        let config = r
            .get("open_clip_config.json")
            .with_context(|| format!("downloading {repo}/config.json or open_clip_config.json"))?;
        if r.get("open_clip_model.safetensors").is_err() {
            r.get("open_clip_pytorch_model.bin")
                .with_context(|| format!("downloading {repo}'s open_clip weights"))?;
        }
        let _ = r.get("tokenizer.json");
        return Ok(config.parent().context("snapshot directory")?.to_path_buf());
    }
    let config = r
        .get("config.json")
        .with_context(|| format!("downloading {repo}/config.json"))?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
    ] {
        let _ = r.get(f); // whichever the repository has
    }
    match r.get("model.safetensors.index.json") {
        Ok(index) => {
            let idx: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&index)?)?;
            let mut shards: Vec<String> = idx["weight_map"]
                .as_object()
                .context("bad safetensors index")?
                .values()
                .filter_map(|v| v.as_str().map(String::from))
                .collect();
            shards.sort();
            shards.dedup();
            for s in shards {
                r.get(&s).with_context(|| format!("downloading {repo}/{s}"))?;
            }
        }
        Err(_) => {
            r.get("model.safetensors")
                .with_context(|| format!("downloading {repo}/model.safetensors (only safetensors weights are read)"))?;
        }
    }
    Ok(config.parent().context("snapshot directory")?.to_path_buf())
}

/// The snapshot directory of `repo` (e.g. `gpt2-large`, `facebook/opt-125m`) in the Hugging Face hub cache
/// (`$HF_HUB_CACHE`, `$HF_HOME/hub`, or `~/.cache/huggingface/hub`), if it has been downloaded.
pub fn hub_snapshot(repo: &str) -> Option<PathBuf> {
    let cache = hub_cache_dir()?;
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
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| has_config(p))
}
