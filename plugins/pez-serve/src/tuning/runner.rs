//! Running one job: `local` (pez's tuning loop on a thread of this process, in the tuning thread pool, reporting
//! to the store as it goes) or `slurm` (`pez tune` as a batch job, followed with `sacct`; its holdout evaluations
//! read from the run's `metrics.jsonl`). Either way a finished job's prompt is served at once.

use super::jobs::{self, Spec};
use super::store::{JobError, JobRow, Metrics, Status};
use super::Tuning;
use anyhow::{bail, Context, Result};
use pez_tune::{EvalRecord, Report, RunDir};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// A step event at most this often (and one at every holdout evaluation).
const STEP_EVENT_SECS: f64 = 5.0;

/// Makes the calling thread yield the CPU to everything else (Linux: a thread's own nice value).
pub fn lower_priority(nice: i32) {
    // SAFETY: gettid takes nothing and only returns this thread's id.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::id_t;
    // SAFETY: setpriority reads its three integers; PRIO_PROCESS with a thread id sets that thread's nice value.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } != 0 {
        tracing::warn!(
            "could not lower the tuning thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Starts `job` on a thread of its own, its work in the tuning thread pool.
pub fn start_local(t: Arc<Tuning>, job: JobRow) {
    let stop = t.register(&job.id);
    let runtime = tokio::runtime::Handle::current();
    let (here, id) = (t.clone(), job.id.clone());
    let spawned = std::thread::Builder::new()
        .name(format!("job-{}", &job.id[job.id.len() - 8..]))
        .spawn(move || {
            lower_priority(t.cfg.nice);
            let run = std::panic::AssertUnwindSafe(|| t.threads.install(|| run_local(&t, &job, &stop)));
            let result =
                std::panic::catch_unwind(run).unwrap_or_else(|_| Err(anyhow::anyhow!("the tuning loop panicked")));
            let ended = match result {
                Ok(Some(())) => succeed(&t, &job, &runtime),
                Ok(None) => Ok(()), // stopped: cancelled, or the server is going down (it resumes on restart)
                Err(e) => fail(&t, &job.id, "training_failed", &format!("{e:#}")),
            };
            if let Err(e) = ended {
                tracing::error!(job = %job.id, "{e:#}");
            }
            t.unregister(&job.id);
        });
    if let Err(e) = spawned {
        let _ = fail(&here, &id, "start_failed", &format!("no thread for the job: {e}"));
        here.unregister(&id);
    }
}

/// The run: resumed from its checkpoint if it has one, else begun; events and checkpoints to the store.
fn run_local(t: &Tuning, job: &JobRow, stop: &std::sync::atomic::AtomicBool) -> Result<Option<()>> {
    let spec = Spec::read(job)?;
    let (_, base) = t.base(&job.model).context("the job's base model is no longer served")?;
    let (device, dtype) = base.placement()?;
    let run_dir = spec.run_dir();
    let (cfg, resume) = match RunDir::read(&run_dir) {
        RunDir::Started(_) => (None, Some(run_dir.as_path())),
        RunDir::Finished { .. } => return Ok(Some(())),
        RunDir::Missing => {
            let settings = pez_config::TuneSettings {
                dtype: spec.settings.dtype.or(Some(dtype)),
                ..spec.settings.clone()
            };
            (Some(settings.resolve(&device)?), None)
        }
    };
    let mut report = Reporter::new(t, &job.id);
    let done = pez_tune::tune_observed(cfg, resume, &device, &mut |r| {
        if let Err(e) = report.take(r) {
            tracing::warn!(job = %job.id, "recording progress: {e:#}");
        }
        if stop.load(Ordering::Relaxed) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(done.map(|_| ()))
}

/// Progress as events: a step every few seconds, every holdout evaluation (also a checkpoint).
struct Reporter<'t> {
    t: &'t Tuning,
    job: &'t str,
    last: Instant,
    loss: (f64, usize),
    best: Option<f64>,
}

impl<'t> Reporter<'t> {
    fn new(t: &'t Tuning, job: &'t str) -> Self {
        let past = Instant::now().checked_sub(std::time::Duration::from_secs_f64(STEP_EVENT_SECS));
        Self {
            t,
            job,
            last: past.unwrap_or_else(Instant::now),
            loss: (0.0, 0),
            best: None,
        }
    }

    fn take(&mut self, r: Report) -> Result<()> {
        match r {
            Report::Step {
                step,
                steps,
                loss,
                elapsed_s,
            } => {
                self.loss = (self.loss.0 + loss as f64, self.loss.1 + 1);
                if self.last.elapsed().as_secs_f64() >= STEP_EVENT_SECS || step == steps {
                    let m = self.metrics(step, steps, elapsed_s, None);
                    self.last = Instant::now();
                    let msg = format!(
                        "Step {step}/{steps}: training loss={:.4}",
                        m.train_loss.unwrap_or(f64::NAN)
                    );
                    self.t.store.add_event(self.job, "info", &msg, Some(&m))?;
                }
            }
            Report::Evaluated { record, steps } => {
                self.best = Some(
                    self.best
                        .map_or(record.holdout_accuracy, |b| b.max(record.holdout_accuracy)),
                );
                let m = self.metrics(record.step, steps, record.elapsed_s, Some(record));
                let acc = record.holdout_accuracy * 100.0;
                let msg = format!(
                    "Step {}/{steps}: holdout accuracy {acc:.2}%, prompt {:?}",
                    record.step, record.prompt
                );
                self.t.store.add_event(self.job, "info", &msg, Some(&m))?;
                self.t.store.add_checkpoint(self.job, record.step as u64, &m)?;
            }
            Report::Checkpointed { .. } => {}
        }
        Ok(())
    }

    fn metrics(&mut self, step: usize, steps: usize, elapsed_s: f64, eval: Option<&EvalRecord>) -> Metrics {
        let train_loss = (self.loss.1 > 0).then(|| self.loss.0 / self.loss.1 as f64);
        self.loss = (0.0, 0);
        let eta_s = (step > 0).then(|| elapsed_s / step as f64 * (steps - step) as f64);
        if let Some(eta) = eta_s {
            let _ = self.t.store.set_estimate(self.job, crate::openai::now() + eta as u64);
        }
        Metrics {
            step: step as u64,
            total_steps: steps as u64,
            train_loss: train_loss.or(eval.map(|e| e.train_loss as f64)),
            holdout_accuracy: eval.map(|e| e.holdout_accuracy),
            best_holdout_accuracy: self.best,
            prompt: eval.map(|e| e.prompt.clone()),
            elapsed_s,
            eta_s,
        }
    }
}

/// Serves the job's prompt as its classifier and marks it succeeded.
fn succeed(t: &Tuning, job: &JobRow, runtime: &tokio::runtime::Handle) -> Result<()> {
    let spec = Spec::read(job)?;
    let prompt = spec.run_dir().join("prompt.json");
    let artifact = pez_config::PromptArtifact::read(&prompt)?;
    let name = jobs::model_name(job);
    if t.store
        .job(None, &job.id)?
        .is_some_and(|j| j.status == Status::Cancelled)
    {
        return Ok(()); // cancelled as it ended: not served
    }
    if let Err(e) = runtime.block_on(t.pool.add(&name, prompt, &job.model)) {
        return fail(
            t,
            &job.id,
            "serving_failed",
            &format!("the tuned classifier could not be served: {e}"),
        );
    }
    t.store.succeed(&job.id, &name)?;
    let acc = |x: Option<f64>| x.map_or("–".to_string(), |a| format!("{:.2}%", a * 100.0));
    let msg = format!(
        "The job has successfully completed: prompt {:?}, holdout accuracy {}, dev accuracy {}. Served as `{name}`.",
        artifact.prompt,
        acc(artifact.holdout_accuracy),
        acc(artifact.dev_accuracy)
    );
    t.store.add_event(&job.id, "info", &msg, None)?;
    Ok(())
}

fn fail(t: &Tuning, id: &str, code: &str, message: &str) -> Result<()> {
    if t.store.job(None, id)?.is_some_and(|j| j.status.is_final()) {
        return Ok(());
    }
    t.store.fail(
        id,
        &JobError {
            code: code.into(),
            message: message.into(),
            param: None,
        },
    )?;
    t.store
        .add_event(id, "error", &format!("The job failed: {message}"), None)
}

/// Submits `job` as a Slurm batch job running `pez tune` (or `pez tune --resume` when its run has a checkpoint).
pub fn submit_slurm(t: &Tuning, job: &JobRow) {
    if let Err(e) = try_submit(t, job) {
        let _ = fail(t, &job.id, "submission_failed", &format!("{e:#}"));
    }
}

fn try_submit(t: &Tuning, job: &JobRow) -> Result<()> {
    let spec = Spec::read(job)?;
    let pez = match &t.cfg.slurm.pez {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("pez"),
    };
    let dir = &spec.dir;
    let script = format!(
        "#!/bin/sh\nset -e\ncd {dir}\nif [ -f run/checkpoint.json ]; then exec {pez} tune --resume run; else exec {pez} tune \
         --settings settings.toml; fi\n",
        dir = shell_quote(dir),
        pez = shell_quote(&pez)
    );
    let path = dir.join("job.sh");
    std::fs::write(&path, script)?;
    let mut cmd = std::process::Command::new("sbatch");
    cmd.arg("--parsable").arg(format!("--job-name=pez-{}", job.id));
    cmd.arg(format!("--output={}", dir.join("slurm-%j.out").display()));
    if let Some(p) = &t.cfg.slurm.partition {
        cmd.arg(format!("--partition={p}"));
    }
    let out = cmd
        .args(&t.cfg.slurm.sbatch_args)
        .arg(&path)
        .output()
        .context("running sbatch")?;
    if !out.status.success() {
        bail!("sbatch failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let slurm_id = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    t.store.set_runner_id(&job.id, &format!("slurm:{slurm_id}"))?;
    t.store
        .add_event(&job.id, "info", &format!("Submitted to Slurm as job {slurm_id}."), None)?;
    Ok(())
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// Follows every job running on Slurm (`sacct`, else `scontrol`): new holdout evaluations as events; the end as
/// success or failure.
pub async fn follow_slurm(t: &Arc<Tuning>) {
    let Ok(jobs) = t.store.jobs_in(Status::Running) else {
        return;
    };
    for job in jobs {
        let Some(slurm_id) = job
            .runner_id
            .as_deref()
            .and_then(|r| r.strip_prefix("slurm:"))
            .map(String::from)
        else {
            continue;
        };
        let (t2, job2) = (t.clone(), job.clone());
        let state = tokio::task::spawn_blocking(move || {
            let _ = report_new_evaluations(&t2, &job2);
            slurm_state(&slurm_id)
        })
        .await;
        let runtime = tokio::runtime::Handle::current();
        let ended = match state {
            Ok(s) if s == "COMPLETED" => {
                let (t2, job2) = (t.clone(), job.clone());
                tokio::task::spawn_blocking(move || succeed(&t2, &job2, &runtime))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
            }
            Ok(s)
                if [
                    "FAILED",
                    "CANCELLED",
                    "TIMEOUT",
                    "OUT_OF_MEMORY",
                    "NODE_FAIL",
                    "PREEMPTED",
                ]
                .iter()
                .any(|f| s.starts_with(f)) =>
            {
                fail(t, &job.id, "training_failed", &format!("the Slurm job ended {s}"))
            }
            _ => Ok(()),
        };
        if let Err(e) = ended {
            tracing::error!(job = %job.id, "{e:#}");
        }
    }
}

/// A Slurm job's state (`PENDING`, `RUNNING`, `COMPLETED`, `FAILED`, ...): from `sacct` where the cluster keeps
/// accounting, else from `scontrol show job` (which knows a job until `MinJobAge` after it ends); empty if
/// neither knows it.
fn slurm_state(id: &str) -> String {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    if let Some(out) = run("sacct", &["-j", id, "-X", "-n", "-P", "-o", "State"]) {
        if let Some(s) = out.lines().next().map(str::trim).filter(|s| !s.is_empty()) {
            return s.to_string();
        }
    }
    let out = run("scontrol", &["show", "job", id, "-o"]).unwrap_or_default();
    out.split_whitespace()
        .find_map(|kv| kv.strip_prefix("JobState="))
        .unwrap_or_default()
        .to_string()
}

/// The run's holdout evaluations not reported yet (its metrics.jsonl past the job's checkpoints) as events.
fn report_new_evaluations(t: &Tuning, job: &JobRow) -> Result<()> {
    let spec = Spec::read(job)?;
    let text = std::fs::read_to_string(spec.run_dir().join("metrics.jsonl")).unwrap_or_default();
    let seen = t.store.checkpoints(&job.id, (None, 100_000, true))?.rows.len();
    let steps = spec.resolved.steps.unwrap_or(0);
    let mut report = Reporter::new(t, &job.id);
    for line in text.lines().skip(seen) {
        let record: EvalRecord = serde_json::from_str(line)?;
        report.take(Report::Evaluated { record: &record, steps })?;
    }
    Ok(())
}
