//! Plain generation on mistral.rs: which base models it runs and starting it (`plan`), and a checked request
//! sent to mistral.rs's own handler, in a task of its own (`generate`).
//!
//! Why a task: mistral.rs 0.8.1's engine unwraps its send of a finished sequence to the request's channel
//! (`handle_pipeline_forward_error`), so a client that hangs up mid-generation would panic the engine thread.
//! The task keeps the channel open until the sequence ends (bounded by `max_tokens`), reading a stream to its
//! end whether or not the client still listens. Answers come back with the requested model name and errors in
//! OpenAI's shape.

use crate::config::{Args, EngineDtype, ServeConfig};
use crate::error::ApiError;
use crate::state::BaseInfo;
use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, response::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::BodyExt;
use mistralrs_core::{AutoDeviceMapParams, ModelDType, ModelSelected};
use mistralrs_server_core::mistralrs_for_server_builder::MistralRsForServerBuilder;
use mistralrs_server_core::types::SharedMistralRsState;
use pez_hub::ModelSpec;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Completion,
}

enum Out {
    Full(Parts, Bytes),
    Stream(Parts, mpsc::UnboundedReceiver<Bytes>),
}

/// Runs a checked request (see `validate`) on mistral.rs.
pub async fn generate(engine: SharedMistralRsState, v: Value, kind: Kind, model: String) -> Result<Response, ApiError> {
    let resp = match kind {
        Kind::Chat => {
            let req = serde_json::from_value(v)
                .map_err(|e| ApiError::bad_request(format!("invalid chat completion request: {e}")))?;
            tokio::spawn(async move {
                mistralrs_server_core::chat_completion::chatcompletions(State(engine), Json(req))
                    .await
                    .into_response()
            })
        }
        Kind::Completion => {
            let req = serde_json::from_value(v)
                .map_err(|e| ApiError::bad_request(format!("invalid completion request: {e}")))?;
            tokio::spawn(async move {
                mistralrs_server_core::completions::completions(State(engine), Json(req))
                    .await
                    .into_response()
            })
        }
    };
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let Ok(resp) = resp.await else { return };
        let (parts, mut body) = resp.into_parts();
        let sse = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        if !sse {
            let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let _ = tx.send(Out::Full(parts, bytes));
            return;
        }
        let (chunks, stream) = mpsc::unbounded_channel();
        let _ = tx.send(Out::Stream(parts, stream));
        // To the end, even when nobody reads `stream` any more.
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                let _ = chunks.send(data);
            }
        }
    });
    match rx.await.map_err(|_| ApiError::internal("the generation task failed"))? {
        Out::Full(parts, bytes) => full_response(parts, &bytes, &model, kind),
        Out::Stream(parts, stream) => {
            // Per choice, the characters streamed so far (the next token's `text_offset`).
            let events = futures_util::stream::unfold(
                (stream, model, Vec::new()),
                move |(mut rx, model, mut offsets)| async move {
                    let b = rx.recv().await?;
                    let out = rename_in_events(&b, &model, kind, &mut offsets);
                    Some((Ok::<_, std::convert::Infallible>(out), (rx, model, offsets)))
                },
            );
            Ok(Response::from_parts(parts, Body::from_stream(events)))
        }
    }
}

/// A whole answer: the model named as requested, or an error in OpenAI's shape (mistral.rs answers
/// `{"message": ...}` with 422 for what it cannot run, e.g. a prompt longer than the context).
fn full_response(parts: Parts, bytes: &[u8], model: &str, kind: Kind) -> Result<Response, ApiError> {
    let parsed: Option<Value> = serde_json::from_slice(bytes).ok();
    if parts.status.is_success() {
        let mut v = parsed.ok_or_else(|| ApiError::internal("mistral.rs answered with a body that is not JSON"))?;
        in_openai_shape(&mut v, model, kind, &mut Vec::new());
        return Ok((parts.status, Json(v)).into_response());
    }
    let message = parsed
        .as_ref()
        .and_then(|v| {
            v.get("message")
                .or_else(|| v.pointer("/error/message"))
                .and_then(Value::as_str)
                .map(String::from)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(bytes).chars().take(500).collect());
    Err(match parts.status {
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => {
            ApiError::bad_request(format!("mistral.rs cannot run this request: {message}"))
        }
        s if s.is_client_error() => ApiError::new(s, message, "invalid_request_error"),
        _ => ApiError::internal(format!("mistral.rs failed: {message}")),
    })
}

/// One answer of mistral.rs (whole, or a stream's chunk) in OpenAI's shape: the model (where named) as requested,
/// `top_logprobs` entries and, for completions, the logprobs layout.
fn in_openai_shape(v: &mut Value, model: &str, kind: Kind, offsets: &mut Vec<usize>) {
    if v.get("model").is_some() {
        v["model"] = Value::String(model.to_string());
    }
    fix_top_logprobs(v);
    if kind == Kind::Completion {
        completion_logprobs(v, offsets);
    }
}

/// mistral.rs 0.8.1 writes each `top_logprobs` entry as `{"token": <id>, "bytes": "<text>"}`; OpenAI's shape is
/// `{"token": "<text>", "bytes": [<utf-8 bytes>]}` (what the official client parses).
pub fn fix_top_logprobs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(top)) = o.get_mut("top_logprobs") {
                for e in top.iter_mut() {
                    if let (Some(Value::Number(_)), Some(Value::String(text))) = (e.get("token"), e.get("bytes")) {
                        let text = text.clone();
                        e["bytes"] = Value::from(text.as_bytes().to_vec());
                        e["token"] = Value::String(text);
                    }
                }
            }
            o.values_mut().for_each(fix_top_logprobs);
        }
        Value::Array(a) => a.iter_mut().for_each(fix_top_logprobs),
        _ => {}
    }
}

/// mistral.rs answers `/v1/completions` in chat's logprobs layout (`content: [{token, logprob, top_logprobs}]`);
/// OpenAI's completions layout is `{tokens, token_logprobs, top_logprobs: [{text: logprob}], text_offset}`, with
/// offsets counted in characters from the start of the completion (`offsets[i]`: choice `i`'s characters so far,
/// carried across the chunks of a stream, whose chunks carry one entry as `logprobs` itself). Entries already in
/// that layout are left alone.
pub fn completion_logprobs(v: &mut Value, offsets: &mut Vec<usize>) {
    let Some(choices) = v.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for (n, c) in choices.iter_mut().enumerate() {
        // A whole answer lists its tokens under `content`; a stream's chunk carries one entry as `logprobs` itself.
        let content = match c.get("logprobs") {
            Some(lp) if lp.get("token").is_some() => vec![lp.clone()],
            Some(lp) => match lp.get("content").and_then(Value::as_array) {
                Some(content) => content.clone(),
                None => continue,
            },
            None => continue,
        };
        let i = c.get("index").and_then(Value::as_u64).map_or(n, |i| i as usize);
        if offsets.len() <= i {
            offsets.resize(i + 1, 0);
        }
        let (mut tokens, mut token_logprobs, mut top_logprobs, mut text_offset) = (vec![], vec![], vec![], vec![]);
        for e in &content {
            let token = e.get("token").and_then(Value::as_str).unwrap_or_default();
            text_offset.push(offsets[i]);
            offsets[i] += token.chars().count();
            tokens.push(Value::from(token));
            token_logprobs.push(e.get("logprob").cloned().unwrap_or(Value::Null));
            let top = e.get("top_logprobs").and_then(Value::as_array).into_iter().flatten();
            top_logprobs.push(Value::Object(
                top.filter_map(|t| Some((t.get("token")?.as_str()?.to_string(), t.get("logprob")?.clone())))
                    .collect(),
            ));
        }
        c["logprobs"] = serde_json::json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": text_offset});
    }
}

/// `data: {...}` events with the model named as requested (and, for completions, OpenAI's logprobs layout).
fn rename_in_events(chunk: &[u8], model: &str, kind: Kind, offsets: &mut Vec<usize>) -> Bytes {
    let Ok(text) = std::str::from_utf8(chunk) else {
        return Bytes::copy_from_slice(chunk);
    };
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let renamed = line.strip_prefix("data: ").and_then(|rest| {
            let mut v: Value = serde_json::from_str(rest.trim_end()).ok()?;
            v.get("model")?;
            in_openai_shape(&mut v, model, kind, offsets);
            Some(format!("data: {v}{}", &rest[rest.trim_end().len()..]))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
    }
    Bytes::from(out)
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
