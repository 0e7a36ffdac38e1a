//! Tuning as a service: files and fine-tuning jobs in OpenAI's shape, run by pez's own tuning loop.
//!
//! A job is checked whole when it is created (its files, labels, verbalizers, settings), written to its own
//! directory under the state directory (`jobs/<id>/`: `task.toml`, `train.csv`, `dev.csv`, `settings.toml`,
//! and the run directory `run/`), and queued. The scheduler starts queued jobs in order, at most
//! `max_running_jobs` at once, on a runner: `local` (a thread of this process, at low priority, in its own thread
//! pool, so that classification keeps the CPU it needs) or `slurm` (`pez tune --settings` as a batch job, followed
//! with `sacct`). A finished job's prompt is served at once as the classifier `fine_tuned_model`.
//!
//! Nothing is lost to a crash: rows are committed to SQLite (`store`) before a request is answered, a run
//! checkpoints at every holdout evaluation, and on start a job that was running in this process is queued again
//! and resumes from its checkpoint (exactly: the same batches and the same prompt as without the crash).
//!
//! Files: `store.rs` (the database), `dataset.rs` (training files), `jobs.rs` (a job's request, checks, directory
//! and object), `runner.rs` (running one job), here the service that holds them and the scheduler.

pub mod dataset;
pub mod jobs;
pub mod runner;
pub mod store;

use crate::config::{BaseInfo, BaseModel, RunnerKind, TuningConfig};
use crate::pool::ClassifierPool;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use store::{Status, Store};
use tokio::sync::Notify;

/// The service: the store, the state directory, the queue and the jobs running here.
pub struct Tuning {
    pub store: Store,
    pub dir: PathBuf,
    pub cfg: TuningConfig,
    pub(crate) pool: Arc<ClassifierPool>,
    /// Base models jobs may tune, with the path their classifiers load from.
    pub(crate) bases: Vec<(BaseInfo, BaseModel)>,
    /// Jobs running in this process, and the flag that stops each.
    running: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// The threads local jobs compute on.
    threads: rayon::ThreadPool,
    wake: Notify,
}

impl Tuning {
    /// Opens the state in `dir`. Jobs that were running in this process when it stopped are queued again (they
    /// resume from their checkpoints); those on Slurm keep running there and are followed again.
    pub fn open(
        dir: PathBuf,
        cfg: TuningConfig,
        pool: Arc<ClassifierPool>,
        bases: Vec<(BaseInfo, BaseModel)>,
    ) -> Result<Arc<Self>> {
        let store = Store::open(&dir)?;
        for job in store.jobs_in(Status::Running)? {
            if job.runner_id.is_none() {
                store.set_status(&job.id, Some(Status::Running), Status::Queued)?;
                store.add_event(
                    &job.id,
                    "info",
                    "The server restarted: the job resumes from its last checkpoint.",
                    None,
                )?;
            }
        }
        let nice = cfg.nice;
        let threads = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("tune-{i}"))
            .start_handler(move |_| runner::lower_priority(nice))
            .build()
            .context("starting the tuning threads")?;
        Ok(Arc::new(Self {
            store,
            dir,
            cfg,
            pool,
            bases,
            running: Mutex::default(),
            threads,
            wake: Notify::new(),
        }))
    }

    /// The fine-tuned classifiers of succeeded jobs, served again after a restart.
    pub async fn serve_finished(&self) -> Result<()> {
        for job in self.store.jobs_in(Status::Succeeded)? {
            let (Some(name), Ok(spec)) = (&job.fine_tuned_model, jobs::Spec::read(&job)) else {
                continue;
            };
            let prompt = spec.run_dir().join("prompt.json");
            if let Err(e) = self.pool.add(name, prompt, &job.model).await {
                tracing::error!(job = %job.id, "the classifier `{name}` could not be served again: {e}");
            }
        }
        Ok(())
    }

    /// Runs the scheduler until the process ends: queued jobs start in order while fewer than
    /// `max_running_jobs` run; Slurm jobs are followed every `poll_s` seconds.
    pub async fn schedule(self: Arc<Self>) {
        loop {
            if let Err(e) = self.start_queued() {
                tracing::error!("tuning scheduler: {e:#}");
            }
            if self.cfg.runner == RunnerKind::Slurm {
                runner::follow_slurm(&self).await;
            }
            let poll = std::time::Duration::from_secs(self.cfg.slurm.poll_s.max(1));
            let _ = tokio::time::timeout(poll, self.wake.notified()).await;
        }
    }

    fn start_queued(self: &Arc<Self>) -> Result<()> {
        let running = self.store.jobs_in(Status::Running)?.len();
        for job in self
            .store
            .jobs_in(Status::Queued)?
            .into_iter()
            .take(self.cfg.max_running_jobs.saturating_sub(running))
        {
            if !self.store.set_status(&job.id, Some(Status::Queued), Status::Running)? {
                continue; // cancelled meanwhile
            }
            self.store
                .add_event(&job.id, "info", "Fine-tuning job started.", None)?;
            match self.cfg.runner {
                RunnerKind::Local => runner::start_local(self.clone(), job),
                RunnerKind::Slurm => runner::submit_slurm(self, &job),
            }
        }
        Ok(())
    }

    /// Wakes the scheduler (a job was queued or has ended).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops a job that runs here (its thread ends after the step it is in).
    pub(crate) fn stop_local(&self, id: &str) {
        if let Some(flag) = self.running.lock().expect("never poisoned").get(id) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn register(&self, id: &str) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.running
            .lock()
            .expect("never poisoned")
            .insert(id.to_string(), flag.clone());
        flag
    }

    pub(crate) fn unregister(&self, id: &str) {
        self.running.lock().expect("never poisoned").remove(id);
        self.wake();
    }

    /// The base model a job names, if jobs may tune it.
    pub(crate) fn base(&self, name: &str) -> Option<&(BaseInfo, BaseModel)> {
        self.bases.iter().find(|(b, _)| b.name == name)
    }
}
