//! pez-serve --model smollm2-135m --classifiers runs/ [--host 127.0.0.1 --port 8080] [--max-concurrency N]
//! pez-serve --config serve.toml
//!
//! Logs are JSON lines on stderr (`RUST_LOG` filters them, default `info`).

use anyhow::{Context, Result};
use clap::Parser;
use pez_serve::config::{self, Args, ServeConfig};
use pez_serve::metrics::Metrics;
use pez_serve::state::AppState;
use pez_serve::tuning::Tuning;
use pez_serve::{auth, engine, http, router, ClassifierPool};
use std::sync::{Arc, OnceLock};

#[global_allocator]
static GLOBAL: pez_nn::alloc::Allocator = pez_nn::alloc::Allocator;

#[tokio::main]
async fn main() {
    if std::env::var_os("PEZ_KEEP_FREED").is_some() {
        pez_nn::alloc::keep_freed_memory();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Args::parse()).await {
        tracing::error!("{e:#}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> Result<()> {
    let cfg = ServeConfig::from_args(&a)?;
    pez_hub::registry::set_fetch_missing(cfg.fetch_missing);
    if a.check_config {
        return check_config(&cfg);
    }
    let engine = engine::plan(&cfg, &a)?;

    // Listen at once: /health answers 503 ("loading") until everything below is ready.
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!("pez-serve listening on http://{addr} (loading)");
    let slot: http::AppSlot = Arc::new(OnceLock::new());
    let server = tokio::spawn(http::serve(
        listener,
        slot.clone(),
        cfg.limits.clone(),
        http::shutdown_signal(),
    ));

    let metrics = Arc::new(Metrics::default());
    tracing::info!("loading {} classifier(s)", cfg.classifiers.len());
    let pool = {
        let (cfg, metrics) = (cfg.clone(), metrics.clone());
        Arc::new(tokio::task::spawn_blocking(move || ClassifierPool::start(&cfg, metrics)).await??)
    };
    let tuning = open_tuning(&cfg, &engine.bases, pool.clone()).await?;
    for c in pool.all() {
        tracing::info!(classifier = %c.name, base = %c.base, task = %c.task, labels = ?c.labels, prompts = ?c.prompts, "classifier ready");
    }
    let bases = engine.bases.clone();
    let engine = engine.start().await?;
    let keys = auth::Keys::new(&cfg.auth.api_keys, cfg.auth.public_metrics);
    let state = AppState::new(pool, engine, bases, cfg.max_concurrency, cfg.limits.clone(), metrics)
        .with_keys(keys)
        .with_tuning(tuning.clone());
    tokio::spawn(http::exit_when_a_worker_dies(state.pool.clone()));
    tokio::spawn(tuning.schedule());
    let _ = slot.set(router(state));
    tracing::info!("pez-serve ready on http://{addr}");
    // Graceful shutdown: stop accepting, finish the requests in flight (within limits.shutdown_timeout_s).
    server.await?;
    tracing::info!("pez-serve stopped");
    Ok(())
}

/// The tuning service on the state directory: jobs interrupted by a stop queued again, finished jobs' classifiers
/// served again.
async fn open_tuning(
    cfg: &ServeConfig,
    bases: &[pez_serve::config::BaseInfo],
    pool: Arc<ClassifierPool>,
) -> Result<Arc<Tuning>> {
    let dir = cfg.state_dir();
    let tunable = bases.iter().cloned().zip(cfg.models.iter().cloned()).collect();
    let tuning = Tuning::open(dir.clone(), cfg.tuning.clone(), pool, tunable)?;
    tuning.serve_finished().await?;
    tracing::info!(state_dir = %dir.display(), runner = %cfg.tuning.runner, "tuning ready");
    Ok(tuning)
}

fn check_config(cfg: &ServeConfig) -> Result<()> {
    for c in &cfg.classifiers {
        let name = config::classifier_name(c);
        let prompts = config::classifier_prompts(&c.prompt).with_context(|| format!("classifier `{name}`"))?;
        println!(
            "classifier {name} on {}: {prompts:?}",
            c.base.as_deref().unwrap_or(&cfg.models[0].name),
        );
    }
    let models: Vec<&str> = cfg.models.iter().map(|m| m.name.as_str()).collect();
    let n = cfg.classifiers.len();
    println!(
        "config ok: base model(s) {models:?}, {n} classifier(s), http://{}:{}",
        cfg.host, cfg.port
    );
    Ok(())
}
