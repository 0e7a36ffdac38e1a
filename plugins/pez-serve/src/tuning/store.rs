//! What survives the server: files, tuning jobs, their events and checkpoints, in one SQLite database
//! (`<state_dir>/pez.sqlite3`: WAL, so a reader never waits on the writer and a killed process loses nothing it
//! committed). The schema is created and migrated on open (`PRAGMA user_version` counts the migrations run).
//!
//! Every row has an owner (the digest of the API key that made it, see `auth`): reads take the owner, and a row of
//! another owner is not there for them.

use anyhow::{Context, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::path::Path;
use std::sync::Mutex;

pub use crate::openai::{JobError, Metrics, Status};

/// The migrations, in order; the database's `user_version` says how many have run.
const MIGRATIONS: &[&str] = &["CREATE TABLE files (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        filename TEXT NOT NULL,
        purpose TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        model TEXT NOT NULL,
        training_file TEXT NOT NULL,
        validation_file TEXT,
        seed INTEGER NOT NULL,
        suffix TEXT,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        finished_at INTEGER,
        estimated_finish INTEGER,
        fine_tuned_model TEXT,
        error TEXT,
        spec TEXT NOT NULL,
        runner_id TEXT
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        created_at INTEGER NOT NULL,
        level TEXT NOT NULL,
        message TEXT NOT NULL,
        kind TEXT NOT NULL,
        data TEXT
    );
    CREATE INDEX events_by_job ON events(job_id, seq);
    CREATE TABLE checkpoints (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        job_id TEXT NOT NULL REFERENCES jobs(id),
        created_at INTEGER NOT NULL,
        step INTEGER NOT NULL,
        metrics TEXT NOT NULL
    );
    CREATE INDEX checkpoints_by_job ON checkpoints(job_id, seq);"];

#[derive(Debug, Clone)]
pub struct FileRow {
    pub id: String,
    pub owner: String,
    pub filename: String,
    pub purpose: String,
    pub bytes: u64,
    pub created_at: u64,
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub owner: String,
    pub model: String,
    pub training_file: String,
    pub validation_file: Option<String>,
    pub seed: u64,
    pub suffix: Option<String>,
    pub status: Status,
    pub created_at: u64,
    pub finished_at: Option<u64>,
    pub estimated_finish: Option<u64>,
    pub fine_tuned_model: Option<String>,
    pub error: Option<JobError>,
    /// The job's resolved settings and task (JSON of `jobs::Spec`).
    pub spec: String,
    /// The runner's own id for it (a Slurm job id).
    pub runner_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EventRow {
    pub id: String,
    pub created_at: u64,
    pub level: String,
    pub message: String,
    /// `message` or `metrics`.
    pub kind: String,
    pub data: Option<Metrics>,
}

#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub id: String,
    pub job_id: String,
    pub created_at: u64,
    pub step: u64,
    pub metrics: Metrics,
}

/// A page of rows, newest first unless asked otherwise, and whether more follow.
pub struct Page<T> {
    pub rows: Vec<T>,
    pub has_more: bool,
}

pub struct Store {
    db: Mutex<Connection>,
}

/// A fresh id: `prefix-` and 24 hex digits.
pub fn new_id(prefix: &str) -> String {
    let bytes: [u8; 12] = rand::random();
    format!(
        "{prefix}-{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn json<T: serde::de::DeserializeOwned>(text: Option<String>) -> Option<T> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

impl Store {
    /// Opens (creating and migrating) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the state directory {}", dir.display()))?;
        let path = dir.join("pez.sqlite3");
        let db = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // WAL with NORMAL sync: a committed row survives the process being killed (only an OS crash may lose the
        // last transactions); readers never wait on the writer.
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: usize = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            anyhow::bail!("{} was written by a newer pez-serve (schema {version})", path.display());
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = db.unchecked_transaction()?;
            tx.execute_batch(m)
                .with_context(|| format!("migration {} of {}", i + 1, path.display()))?;
            tx.pragma_update(None, "user_version", i + 1)?;
            tx.commit()?;
        }
        Ok(Self { db: Mutex::new(db) })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let db = self.db.lock().expect("the database lock is never poisoned");
        Ok(f(&db)?)
    }

    /// `limit` rows of `table` (newest first, or oldest with `ascending`) after the row `after`, among those
    /// `filter` (a WHERE clause on `args`) admits.
    fn page<T>(
        &self,
        table: &str,
        filter: &str,
        args: &[&dyn rusqlite::ToSql],
        (after, limit, ascending): (Option<&str>, usize, bool),
        read: fn(&Row) -> rusqlite::Result<T>,
    ) -> Result<Page<T>> {
        let (cmp, order) = if ascending { (">", "ASC") } else { ("<", "DESC") };
        let cursor = match after {
            Some(_) => format!("AND seq {cmp} (SELECT seq FROM {table} WHERE id = ?{})", args.len() + 1),
            None => String::new(),
        };
        let sql = format!(
            "SELECT * FROM {table} WHERE {filter} {cursor} ORDER BY seq {order} LIMIT {}",
            limit + 1
        );
        let mut all: Vec<&dyn rusqlite::ToSql> = args.to_vec();
        if let Some(a) = &after {
            all.push(a);
        }
        let mut rows: Vec<T> = self.with(|db| db.prepare(&sql)?.query_map(all.as_slice(), read)?.collect())?;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        Ok(Page { rows, has_more })
    }

    pub fn insert_file(&self, f: &FileRow) -> Result<()> {
        self.with(|db| {
            db.execute(
                "INSERT INTO files (id, owner, filename, purpose, bytes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![f.id, f.owner, f.filename, f.purpose, f.bytes, f.created_at],
            )
        })?;
        Ok(())
    }

    fn file_row(r: &Row) -> rusqlite::Result<FileRow> {
        Ok(FileRow {
            id: r.get("id")?,
            owner: r.get("owner")?,
            filename: r.get("filename")?,
            purpose: r.get("purpose")?,
            bytes: r.get("bytes")?,
            created_at: r.get("created_at")?,
        })
    }

    pub fn file(&self, owner: &str, id: &str) -> Result<Option<FileRow>> {
        self.with(|db| {
            db.query_row(
                "SELECT * FROM files WHERE id = ?1 AND owner = ?2",
                params![id, owner],
                Self::file_row,
            )
            .optional()
        })
    }

    pub fn files(
        &self,
        owner: &str,
        purpose: Option<&str>,
        cursor: (Option<&str>, usize, bool),
    ) -> Result<Page<FileRow>> {
        match purpose {
            Some(p) => self.page(
                "files",
                "owner = ?1 AND purpose = ?2",
                &[&owner, &p],
                cursor,
                Self::file_row,
            ),
            None => self.page("files", "owner = ?1", &[&owner], cursor, Self::file_row),
        }
    }

    /// Removes a file's row; false if it was not there (for this owner).
    pub fn delete_file(&self, owner: &str, id: &str) -> Result<bool> {
        Ok(self.with(|db| db.execute("DELETE FROM files WHERE id = ?1 AND owner = ?2", params![id, owner]))? > 0)
    }

    pub fn insert_job(&self, j: &JobRow) -> Result<()> {
        let error = j
            .error
            .as_ref()
            .map(|e| serde_json::to_string(e).expect("an error serializes"));
        self.with(|db| {
            db.execute(
                "INSERT INTO jobs (id, owner, model, training_file, validation_file, seed, suffix, status, created_at,
                 finished_at, estimated_finish, fine_tuned_model, error, spec, runner_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                params![
                    j.id,
                    j.owner,
                    j.model,
                    j.training_file,
                    j.validation_file,
                    j.seed,
                    j.suffix,
                    j.status.to_string(),
                    j.created_at,
                    j.finished_at,
                    j.estimated_finish,
                    j.fine_tuned_model,
                    error,
                    j.spec,
                    j.runner_id
                ],
            )
        })?;
        Ok(())
    }

    fn job_row(r: &Row) -> rusqlite::Result<JobRow> {
        let status: String = r.get("status")?;
        let bad = |e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e));
        Ok(JobRow {
            id: r.get("id")?,
            owner: r.get("owner")?,
            model: r.get("model")?,
            training_file: r.get("training_file")?,
            validation_file: r.get("validation_file")?,
            seed: r.get("seed")?,
            suffix: r.get("suffix")?,
            status: status.parse().map_err(bad)?,
            created_at: r.get("created_at")?,
            finished_at: r.get("finished_at")?,
            estimated_finish: r.get("estimated_finish")?,
            fine_tuned_model: r.get("fine_tuned_model")?,
            error: json(r.get("error")?),
            spec: r.get("spec")?,
            runner_id: r.get("runner_id")?,
        })
    }

    /// A job: an owner's, or (`owner` none) anyone's, for the runner.
    pub fn job(&self, owner: Option<&str>, id: &str) -> Result<Option<JobRow>> {
        self.with(|db| {
            db.query_row(
                "SELECT * FROM jobs WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)",
                params![id, owner],
                Self::job_row,
            )
            .optional()
        })
    }

    pub fn jobs(&self, owner: &str, cursor: (Option<&str>, usize, bool)) -> Result<Page<JobRow>> {
        self.page("jobs", "owner = ?1", &[&owner], cursor, Self::job_row)
    }

    /// Every job in `status`, oldest first (the queue's order).
    pub fn jobs_in(&self, status: Status) -> Result<Vec<JobRow>> {
        self.with(|db| {
            db.prepare("SELECT * FROM jobs WHERE status = ?1 ORDER BY seq ASC")?
                .query_map(params![status.to_string()], Self::job_row)?
                .collect()
        })
    }

    /// Jobs that are not final (queued or running): what the queue holds.
    pub fn open_jobs(&self) -> Result<usize> {
        self.with(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM jobs WHERE status IN ('validating_files', 'queued', 'running')",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Moves a job from `from` (any, if none) to `to`; false if it was not in `from`.
    pub fn set_status(&self, id: &str, from: Option<Status>, to: Status) -> Result<bool> {
        let finished = to.is_final().then(crate::openai::now);
        let n = self.with(|db| {
            db.execute(
                "UPDATE jobs SET status = ?1, finished_at = COALESCE(?2, finished_at)
                 WHERE id = ?3 AND (?4 IS NULL OR status = ?4)",
                params![to.to_string(), finished, id, from.map(|s| s.to_string())],
            )
        })?;
        Ok(n > 0)
    }

    pub fn fail(&self, id: &str, error: &JobError) -> Result<()> {
        let e = serde_json::to_string(error)?;
        self.with(|db| db.execute("UPDATE jobs SET error = ?1 WHERE id = ?2", params![e, id]))?;
        self.set_status(id, None, Status::Failed)?;
        Ok(())
    }

    pub fn succeed(&self, id: &str, model: &str) -> Result<()> {
        self.with(|db| {
            db.execute(
                "UPDATE jobs SET fine_tuned_model = ?1 WHERE id = ?2",
                params![model, id],
            )
        })?;
        self.set_status(id, Some(Status::Running), Status::Succeeded)?;
        Ok(())
    }

    pub fn set_estimate(&self, id: &str, at: u64) -> Result<()> {
        self.with(|db| db.execute("UPDATE jobs SET estimated_finish = ?1 WHERE id = ?2", params![at, id]))?;
        Ok(())
    }

    pub fn set_runner_id(&self, id: &str, runner_id: &str) -> Result<()> {
        self.with(|db| db.execute("UPDATE jobs SET runner_id = ?1 WHERE id = ?2", params![runner_id, id]))?;
        Ok(())
    }

    pub fn add_event(&self, job: &str, level: &str, message: &str, data: Option<&Metrics>) -> Result<()> {
        let kind = if data.is_some() { "metrics" } else { "message" };
        let data = data.map(|d| serde_json::to_string(d).expect("metrics serialize"));
        self.with(|db| {
            db.execute(
                "INSERT INTO events (id, job_id, created_at, level, message, kind, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![new_id("ftevent"), job, crate::openai::now(), level, message, kind, data],
            )
        })?;
        Ok(())
    }

    fn event_row(r: &Row) -> rusqlite::Result<EventRow> {
        Ok(EventRow {
            id: r.get("id")?,
            created_at: r.get("created_at")?,
            level: r.get("level")?,
            message: r.get("message")?,
            kind: r.get("kind")?,
            data: json(r.get("data")?),
        })
    }

    pub fn events(&self, job: &str, cursor: (Option<&str>, usize, bool)) -> Result<Page<EventRow>> {
        self.page("events", "job_id = ?1", &[&job], cursor, Self::event_row)
    }

    pub fn add_checkpoint(&self, job: &str, step: u64, metrics: &Metrics) -> Result<()> {
        let metrics = serde_json::to_string(metrics)?;
        self.with(|db| {
            db.execute(
                "INSERT INTO checkpoints (id, job_id, created_at, step, metrics) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![new_id("ftckpt"), job, crate::openai::now(), step, metrics],
            )
        })?;
        Ok(())
    }

    fn checkpoint_row(r: &Row) -> rusqlite::Result<CheckpointRow> {
        Ok(CheckpointRow {
            id: r.get("id")?,
            job_id: r.get("job_id")?,
            created_at: r.get("created_at")?,
            step: r.get("step")?,
            metrics: json(r.get("metrics")?).unwrap_or_default(),
        })
    }

    pub fn checkpoints(&self, job: &str, cursor: (Option<&str>, usize, bool)) -> Result<Page<CheckpointRow>> {
        self.page("checkpoints", "job_id = ?1", &[&job], cursor, Self::checkpoint_row)
    }
}
