//! pez-serve --model smollm2-135m --classifiers runs/ [--host 127.0.0.1 --port 8080] [--max-concurrency N]
//! pez-serve --config serve.toml

use anyhow::{Context, Result};
use clap::Parser;
use mistralrs_core::{AutoDeviceMapParams, ModelDType, ModelSelected};
use mistralrs_server_core::mistralrs_for_server_builder::MistralRsForServerBuilder;
use pez_models::ModelSpec;
use pez_serve::api::{AppState, BaseInfo};
use pez_serve::config::{BaseModel, ServeConfig};
use pez_serve::metrics::Metrics;
use pez_serve::{http, router, ClassifierPool};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

#[global_allocator]
static GLOBAL: pez_models::alloc::Allocator = pez_models::alloc::Allocator;

#[derive(Parser)]
#[command(version, about = "OpenAI-compatible server where learned PEZ classifiers are model names (on mistral.rs)")]
struct Args {
    /// Base model(s): a short name (smollm2-135m, gemma3-270m, gpt2-large, ...), a GGUF file or a directory.
    #[arg(long)]
    model: Vec<String>,
    /// Classifiers: run directories with a prompt.json, or folders of them. They go on the first --model.
    #[arg(long)]
    classifiers: Vec<PathBuf>,
    /// A TOML file with [[models]] and [[classifiers]] (see plugins/pez-serve/README.md).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long)]
    port: Option<u16>,
    /// Requests in flight at once; more are answered 429 with Retry-After.
    #[arg(long)]
    max_concurrency: Option<usize>,
    /// Texts scored together at most, per base model.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Sequences mistral.rs schedules together for plain generation (default: --max-concurrency).
    #[arg(long)]
    engine_max_seqs: Option<usize>,
    /// Do not start the mistral.rs engine: classifiers only (fast start; plain generation is refused).
    #[arg(long)]
    no_generation: bool,
    /// Finished sequences whose KV caches mistral.rs keeps for reuse. 0 (the default) because mistral.rs 0.8.1
    /// evicts only caches that are not in CPU memory: on a CPU server every kept cache stays for good.
    #[arg(long, default_value_t = 0)]
    prefix_cache: usize,
    /// Give mistral.rs the GGUF as it is, even when its tensor types have no SIMD CPU kernel in candle (by default
    /// such tensors are requantized to Q8_0 once, into ~/.cache/pez/engine).
    #[arg(long)]
    engine_gguf_as_is: bool,
    /// Activation dtype of mistral.rs's generation: f32 (the default; fast on CPUs without bf16 arithmetic),
    /// bf16, f16 or auto (mistral.rs's choice: bf16 on a CPU).
    #[arg(long, default_value = "f32")]
    engine_dtype: String,
}

#[tokio::main]
async fn main() {
    if std::env::var_os("PEZ_KEEP_FREED").is_some() { pez_models::alloc::keep_freed_memory(); }
    if let Err(e) = run(Args::parse()).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<()> {
    let mut cfg = match &a.config {
        Some(p) => ServeConfig::from_toml(p)?,
        None => toml::from_str::<ServeConfig>("models = []")?,
    };
    cfg.models.extend(a.model.iter().map(|m| BaseModel { name: m.clone(), path: None, generate: None }));
    cfg.add_classifier_dirs(&a.classifiers)?;
    cfg.host = a.host.unwrap_or(cfg.host);
    cfg.port = a.port.unwrap_or(cfg.port);
    cfg.max_concurrency = a.max_concurrency.unwrap_or(cfg.max_concurrency);
    cfg.max_batch = a.max_batch.unwrap_or(cfg.max_batch);
    cfg.validate()?;

    let dtype = match a.engine_dtype.as_str() {
        "f32" => ModelDType::F32,
        "bf16" => ModelDType::BF16,
        "f16" => ModelDType::F16,
        "auto" => ModelDType::Auto,
        d => anyhow::bail!("--engine-dtype {d:?}: expected f32, bf16, f16 or auto"),
    };
    // Which base models mistral.rs runs for plain generation: GGUF files unless told otherwise.
    let mut bases = vec![];
    let mut engine_models = vec![];
    for m in &cfg.models {
        let spec = ModelSpec::resolve(m.path()).with_context(|| format!("base model `{}`", m.name))?;
        let generate = !a.no_generation && m.generate.unwrap_or(matches!(spec, ModelSpec::Gguf(_)));
        if generate {
            let ModelSpec::Gguf(file) = &spec else { anyhow::bail!("base model `{}`: generation through mistral.rs needs a GGUF file here", m.name) };
            let file = if a.engine_gguf_as_is {
                file.clone()
            } else {
                pez_serve::engine::fast_cpu_gguf(file).unwrap_or_else(|e| {
                    eprintln!("warning: {e:#}; mistral.rs gets {} as it is", file.display());
                    file.clone()
                })
            };
            engine_models.push((m.name.clone(), gguf_selection(&file, dtype)?));
        }
        bases.push(BaseInfo { name: m.name.clone(), generate });
    }

    // Listen at once: /health answers 503 ("loading") until everything below is ready.
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("pez-serve listening on http://{addr} (loading)");
    let slot: http::AppSlot = Arc::new(OnceLock::new());
    let server = tokio::spawn(http::serve(listener, slot.clone(), cfg.limits.clone(), shutdown_signal()));

    let metrics = Arc::new(Metrics::default());
    eprintln!("loading {} classifier(s) ...", cfg.classifiers.len());
    let pool = {
        let (cfg, metrics) = (cfg.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || ClassifierPool::start(&cfg, metrics)).await??
    };
    for c in pool.classifiers.values() {
        eprintln!("  classifier `{}` on `{}`: task {}, labels {:?}, prompt {:?}", c.name, c.base, c.task, c.labels, c.prompt);
    }
    let engine = if engine_models.is_empty() {
        None
    } else {
        eprintln!("starting mistral.rs for {:?} ...", engine_models.iter().map(|m| &m.0).collect::<Vec<_>>());
        let mut b = MistralRsForServerBuilder::new()
            .with_max_seqs(a.engine_max_seqs.unwrap_or(cfg.max_concurrency))
            .with_prefix_cache_n(a.prefix_cache);
        for (name, sel) in engine_models {
            b = b.add_model_with_alias(name.clone(), name, sel);
        }
        Some(b.build().await.context("starting the mistral.rs engine")?)
    };

    let state = AppState::new(pool, engine, bases, cfg.max_concurrency, cfg.limits.clone(), metrics);
    // A classifier worker that has died cannot come back: exit non-zero so a supervisor restarts the server
    // rather than leave a process that answers 500s.
    let pool = state.pool.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let dead = pool.dead_workers();
            if !dead.is_empty() {
                eprintln!("error: the classifier worker of {dead:?} has stopped; exiting");
                std::process::exit(70);
            }
        }
    });
    let _ = slot.set(router(state));
    eprintln!("pez-serve ready on http://{addr}");
    // Graceful shutdown: stop accepting, finish the requests in flight (within limits.shutdown_timeout_s).
    server.await?;
    eprintln!("pez-serve stopped");
    Ok(())
}

fn gguf_selection(file: &std::path::Path, dtype: ModelDType) -> Result<ModelSelected> {
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    eprintln!("shutting down: finishing requests in flight");
}
