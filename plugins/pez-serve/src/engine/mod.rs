//! Plain generation on mistral.rs: which base models it runs and starting it (`plan`), and a checked request
//! run on it (`chat`, `completion`): parsed by mistral.rs's own request parser, sent to its engine, its typed
//! responses turned into OpenAI's objects (`compat`, where everything mistral.rs 0.8.1 does differently is made
//! right) and answered whole or as server-sent events.

pub mod compat;

use crate::config::BaseInfo;
use crate::config::{Args, EngineDtype, ServeConfig};
use crate::error::ApiError;
use crate::requests::{for_engine, ChatRequest, CompletionRequest};
use crate::routes::{event, sse};
use anyhow::Context;
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use mistralrs_core::{AutoDeviceMapParams, ModelDType, ModelSelected, Response};
use mistralrs_server_core::handler_core::{create_response_channel, send_request_with_model};
use mistralrs_server_core::mistralrs_for_server_builder::MistralRsForServerBuilder;
use mistralrs_server_core::types::SharedMistralRsState;
use mistralrs_server_core::{chat_completion, completions};
use pez_hub::ModelSpec;

/// The base models as the API lists them, and the engine to start for those that generate.
pub struct Plan {
    pub bases: Vec<BaseInfo>,
    models: Vec<(String, ModelSelected)>,
    max_seqs: usize,
    prefix_cache: usize,
}

/// Which base models mistral.rs runs for plain generation: GGUF files unless told otherwise (a GGUF whose tensor
/// types have no SIMD CPU kernel goes as its Q8_0 copy, see `fast_cpu_gguf`).
pub fn plan(cfg: &ServeConfig, a: &Args) -> anyhow::Result<Plan> {
    let dtype = match a.engine_dtype {
        EngineDtype::F32 => ModelDType::F32,
        EngineDtype::Bf16 => ModelDType::BF16,
        EngineDtype::F16 => ModelDType::F16,
        EngineDtype::Auto => ModelDType::Auto,
    };
    let (mut bases, mut models) = (vec![], vec![]);
    for m in &cfg.models {
        let spec = ModelSpec::resolve(m.path()).with_context(|| format!("base model `{}`", m.name))?;
        let generate = !a.no_generation && m.generate.unwrap_or(matches!(spec, ModelSpec::Gguf(_)));
        if generate {
            let ModelSpec::Gguf(file) = &spec else {
                anyhow::bail!(
                    "base model `{}`: generation through mistral.rs needs a GGUF file here",
                    m.name
                )
            };
            let file = if a.engine_gguf_as_is {
                file.clone()
            } else {
                fast_cpu_gguf(file).unwrap_or_else(|e| {
                    tracing::warn!("{e:#}; mistral.rs gets {} as it is", file.display());
                    file.clone()
                })
            };
            models.push((m.name.clone(), gguf_selection(&file, dtype)?));
        }
        bases.push(BaseInfo {
            name: m.name.clone(),
            generate,
        });
    }
    Ok(Plan {
        bases,
        models,
        max_seqs: a.engine_max_seqs.unwrap_or(cfg.max_concurrency),
        prefix_cache: a.prefix_cache,
    })
}

impl Plan {
    /// Starts mistral.rs for the generating models (none: no engine).
    pub async fn start(self) -> anyhow::Result<Option<SharedMistralRsState>> {
        if self.models.is_empty() {
            return Ok(None);
        }
        tracing::info!(
            "starting mistral.rs for {:?}",
            self.models.iter().map(|m| &m.0).collect::<Vec<_>>()
        );
        let mut b = MistralRsForServerBuilder::new()
            .with_max_seqs(self.max_seqs)
            .with_prefix_cache_n(self.prefix_cache);
        for (name, sel) in self.models {
            b = b.add_model_with_alias(name.clone(), name, sel);
        }
        Ok(Some(b.build().await.context("starting the mistral.rs engine")?))
    }
}

fn gguf_selection(file: &std::path::Path, dtype: ModelDType) -> anyhow::Result<ModelSelected> {
    let dir = file.parent().context("GGUF path has no directory")?;
    let name = file.file_name().context("GGUF path has no file name")?;
    Ok(ModelSelected::GGUF {
        tok_model_id: None,
        quantized_model_id: dir.to_string_lossy().into_owned(),
        quantized_filename: name.to_string_lossy().into_owned(),
        dtype,
        topology: None,
        max_seq_len: AutoDeviceMapParams::DEFAULT_MAX_SEQ_LEN,
        max_batch_size: AutoDeviceMapParams::DEFAULT_MAX_BATCH_SIZE,
    })
}

/// A chat request (checked by `validate`) run on mistral.rs: the whole answer, or its chunks as events.
pub async fn chat(engine: SharedMistralRsState, r: ChatRequest) -> Result<HttpResponse, ApiError> {
    let model = r.model.clone();
    let (tx, rx) = create_response_channel(None);
    let (request, streaming) = chat_completion::parse_request(for_engine(&r)?, engine.clone(), tx)
        .await
        .map_err(|e| ApiError::bad_request(format!("mistral.rs cannot run this request: {e}")))?;
    send(&engine, request, &model).await?;
    let mut responses = compat::drain(rx);
    if !streaming {
        return match responses.recv().await {
            Some(Response::Done(done)) => Ok(Json(compat::chat(done, &model)).into_response()),
            Some(other) => Err(compat::error(other)),
            None => Err(ApiError::internal("mistral.rs ended the request without an answer")),
        };
    }
    let events = futures_util::stream::unfold((responses, false), move |(mut rx, ended)| {
        let model = model.clone();
        async move {
            if ended {
                return None;
            }
            Some(match rx.recv().await? {
                Response::Chunk(c) => {
                    let last = c.choices.iter().all(|ch| ch.finish_reason.is_some());
                    (event(&compat::chat_chunk(c, &model)), (rx, last))
                }
                other => (event(&compat::error(other).body()), (rx, true)),
            })
        }
    });
    Ok(sse(events))
}

/// A (legacy) completion request (checked by `validate`) run on mistral.rs.
pub async fn completion(engine: SharedMistralRsState, r: CompletionRequest) -> Result<HttpResponse, ApiError> {
    let model = r.model.clone();
    let (tx, rx) = create_response_channel(None);
    let (request, streaming) = completions::parse_request(for_engine(&r)?, engine.clone(), tx)
        .map_err(|e| ApiError::bad_request(format!("mistral.rs cannot run this request: {e}")))?;
    send(&engine, request, &model).await?;
    let mut responses = compat::drain(rx);
    if !streaming {
        return match responses.recv().await {
            Some(Response::CompletionDone(done)) => Ok(Json(compat::completion(done, &model)).into_response()),
            Some(other) => Err(compat::error(other)),
            None => Err(ApiError::internal("mistral.rs ended the request without an answer")),
        };
    }
    // Per choice, the characters streamed so far (the next token's `text_offset`).
    let events = futures_util::stream::unfold((responses, Vec::new(), false), move |(mut rx, mut offsets, ended)| {
        let model = model.clone();
        async move {
            if ended {
                return None;
            }
            Some(match rx.recv().await? {
                Response::CompletionChunk(c) => {
                    let last = c.choices.iter().all(|ch| ch.finish_reason.is_some());
                    (
                        event(&compat::completion_chunk(c, &model, &mut offsets)),
                        (rx, offsets, last),
                    )
                }
                other => (event(&compat::error(other).body()), (rx, offsets, true)),
            })
        }
    });
    Ok(sse(events))
}

async fn send(engine: &SharedMistralRsState, request: mistralrs_core::Request, model: &str) -> Result<(), ApiError> {
    send_request_with_model(engine, request, Some(model))
        .await
        .map_err(|e| ApiError::internal(format!("mistral.rs did not take the request: {e:#}")))
}

/// The GGUF file mistral.rs should run for `file`: the file itself, or a copy whose tensors of types without a
/// SIMD CPU kernel in candle (Q4_1, Q5_0, Q5_1: scalar dot products, ~9 tokens/s for SmolLM2-135M here) are
/// requantized to Q8_0 (AVX2 kernel). The copy is written once, next to nothing the user owns:
/// `$XDG_CACHE_HOME/pez/engine/<name>.q8_0.gguf` (default `~/.cache/pez/...`), and reused while newer than `file`.
pub fn fast_cpu_gguf(file: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let slow = |t: GgmlDType| matches!(t, GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1);
    let mut reader = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let content = gguf_file::Content::read(&mut reader).with_context(|| format!("reading {}", file.display()))?;
    if !content.tensor_infos.values().any(|t| slow(t.ggml_dtype)) {
        return Ok(file.to_path_buf());
    }
    let dir = pez_hub::cache_dir().join("engine");
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let out = dir.join(format!("{stem}.q8_0.gguf"));
    let fresh = |p: &std::path::Path| -> Option<bool> {
        Some(std::fs::metadata(p).ok()?.modified().ok()? >= std::fs::metadata(file).ok()?.modified().ok()?)
    };
    if fresh(&out) == Some(true) {
        return Ok(out);
    }
    tracing::info!(
        "requantizing {} to Q8_0 for mistral.rs (candle has no SIMD kernel for its type) -> {}",
        file.display(),
        out.display()
    );
    let dev = candle_core::Device::Cpu;
    let mut tensors: Vec<(String, QTensor)> = vec![];
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let q = content.tensor(&mut reader, name, &dev)?;
        let cols = q.shape().dims().last().copied().unwrap_or(0);
        let q = if slow(q.dtype()) && cols % GgmlDType::Q8_0.block_size() == 0 {
            QTensor::quantize(&q.dequantize(&dev)?, GgmlDType::Q8_0)?
        } else {
            q
        };
        tensors.push((name.clone(), q));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = out.with_extension("gguf.tmp");
    let mut w =
        std::io::BufWriter::new(std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?);
    let metadata: Vec<(&str, &gguf_file::Value)> = content.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    gguf_file::write(&mut w, &metadata, &refs)?;
    std::io::Write::flush(&mut w)?;
    drop(w);
    std::fs::rename(&tmp, &out)?;
    Ok(out)
}
