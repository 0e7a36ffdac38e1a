//! pez-serve --model smollm2-135m --classifiers runs/ [--host 127.0.0.1 --port 8080] [--max-concurrency N]
//! pez-serve --config serve.toml

use anyhow::{Context, Result};
use clap::Parser;
use mistralrs_core::{AutoDeviceMapParams, ModelDType, ModelSelected};
use mistralrs_server_core::mistralrs_for_server_builder::MistralRsForServerBuilder;
use pez_models::ModelSpec;
use pez_serve::api::{AppState, BaseInfo};
use pez_serve::config::{BaseModel, ServeConfig};
use pez_serve::{router, ClassifierPool};
use std::path::PathBuf;

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

    // Which base models mistral.rs runs for plain generation: GGUF files unless told otherwise.
    let mut bases = vec![];
    let mut engine_models = vec![];
    for m in &cfg.models {
        let spec = ModelSpec::resolve(m.path()).with_context(|| format!("base model `{}`", m.name))?;
        let generate = !a.no_generation && m.generate.unwrap_or(matches!(spec, ModelSpec::Gguf(_)));
        if generate {
            let ModelSpec::Gguf(file) = &spec else { anyhow::bail!("base model `{}`: generation through mistral.rs needs a GGUF file here", m.name) };
            engine_models.push((m.name.clone(), gguf_selection(file)?));
        }
        bases.push(BaseInfo { name: m.name.clone(), generate });
    }

    eprintln!("loading {} classifier(s) ...", cfg.classifiers.len());
    let pool = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || ClassifierPool::start(&cfg)).await??
    };
    for c in pool.classifiers.values() {
        eprintln!("  classifier `{}` on `{}`: task {}, labels {:?}, prompt {:?}", c.name, c.base, c.task, c.labels, c.prompt);
    }
    let engine = if engine_models.is_empty() {
        None
    } else {
        eprintln!("starting mistral.rs for {:?} ...", engine_models.iter().map(|m| &m.0).collect::<Vec<_>>());
        let mut b = MistralRsForServerBuilder::new().with_max_seqs(a.engine_max_seqs.unwrap_or(cfg.max_concurrency));
        for (name, sel) in engine_models {
            b = b.add_model_with_alias(name.clone(), name, sel);
        }
        Some(b.build().await.context("starting the mistral.rs engine")?)
    };

    let app = router(AppState::new(pool, engine, bases, cfg.max_concurrency));
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("binding {addr}"))?;
    eprintln!("pez-serve listening on http://{addr}");
    // Graceful shutdown: stop accepting, finish the requests in flight, then exit.
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    eprintln!("pez-serve stopped");
    Ok(())
}

fn gguf_selection(file: &std::path::Path) -> Result<ModelSelected> {
    let dir = file.parent().context("GGUF path has no directory")?;
    let name = file.file_name().context("GGUF path has no file name")?;
    Ok(ModelSelected::GGUF {
        tok_model_id: None,
        quantized_model_id: dir.to_string_lossy().into_owned(),
        quantized_filename: name.to_string_lossy().into_owned(),
        dtype: ModelDType::Auto,
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
