//! Sweeps as job arrays: a TOML file names a grid of `pez tune` settings; each cell has a stable index and its own
//! run directory, so any scheduler that hands out indices (a Slurm array, a Kubernetes Indexed Job, a shell loop)
//! runs it. A cell resumes exactly from its checkpoint when run again (preempted, requeued) and never runs twice
//! at once (a lock in its directory); the summary gathers whatever is finished and names the rest.
//!
//! ```toml
//! out = "runs/fluency"          # relative to this file
//! top = 5                        # best-of-N, as `pez tune --seeds`
//! [base]                         # every cell: any `pez tune` setting (snake_case or the flag's kebab-case)
//! steps = 200
//! [grid]                         # the cells: every combination of these lists
//! fluency = [0.0, 0.003, 0.01]
//! seed = [0, 1, 2]
//! ```
//!
//! Files: `file.rs` (the file read into cells: their indices, names and settings), `run.rs` (a cell's state on
//! disk and one cell run under its lock), `summary.rs` (every cell gathered, as JSON, Markdown and SVG).

mod file;
mod run;
mod summary;

pub use file::{Cell, Sweep};
pub use run::{run_cell, Status, ERROR_FILE};
pub use summary::{markdown, summarize, CellRow, GridSummary, Group};
