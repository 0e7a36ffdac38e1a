use anyhow::{Context, Result};
use pez_tune::grid::{self, Sweep};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// List the cells of a sweep file with their indices, run directories and state.
    Plan {
        file: PathBuf,
        /// Print only the number of cells (for `sbatch --array=0-$((N-1))`).
        #[arg(long)]
        count: bool,
    },
    /// Run one cell (resumed from its checkpoint if it has one). The index comes from --index, else
    /// $SLURM_ARRAY_TASK_ID (a Slurm job array), else $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job).
    Run {
        file: PathBuf,
        #[arg(long)]
        index: Option<usize>,
        /// Where the cell runs; its dtype is the cell's own where the sweep file gives one.
        #[command(flatten)]
        placement: crate::args::Placement,
    },
    /// Gather every cell into summary.json, summary.md and summary.svg under the sweep's `out`.
    Summarize { file: PathBuf },
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Command::Plan { file, count } => {
            let s = Sweep::read(&file)?;
            if count {
                println!("{}", s.cells.len());
                return Ok(());
            }
            println!("{} cells, run directories under {}", s.cells.len(), s.out.display());
            println!("index  {:<9} cell", "state");
            for c in &s.cells {
                println!("{:>5}  {:<9} {}", c.index, s.status(c).to_string(), c.name);
            }
            Ok(())
        }
        Command::Run { file, index, placement } => {
            let (device, dtype) = placement.open()?;
            let s = Sweep::read(&file)?;
            let index = match index {
                Some(i) => i,
                None => array_index()?,
            };
            grid::run_cell(&s, index, &device, dtype)?;
            Ok(())
        }
        Command::Summarize { file } => {
            let s = Sweep::read(&file)?;
            let g = grid::summarize(&s)?;
            print!("{}", grid::markdown(&g));
            eprintln!("wrote {}/summary.json, summary.md and summary.svg", s.out.display());
            Ok(())
        }
    }
}

/// The index a scheduler gave this task.
fn array_index() -> Result<usize> {
    for var in ["SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX"] {
        if let Ok(v) = std::env::var(var) {
            return v
                .trim()
                .parse()
                .with_context(|| format!("${var} is `{v}`, not a cell index"));
        }
    }
    anyhow::bail!("no cell index: give --index I (or run as a Slurm array task or a Kubernetes Indexed Job)")
}
