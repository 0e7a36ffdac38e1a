use anyhow::{bail, Result};
use pez_tasks::sources::{builtin_task, Places, BUILTIN_TASKS};

#[derive(clap::Args)]
pub struct Args {
    /// Built-in tasks to show (default: all of them).
    tasks: Vec<String>,
    /// Download splits that are nowhere local from the Hugging Face hub into its cache.
    #[arg(long)]
    fetch: bool,
}

/// Where each split of the built-in tasks comes from (see `pez_tasks::sources` for the order), with its size.
pub fn run(a: Args) -> Result<()> {
    let tasks: Vec<String> = if a.tasks.is_empty() {
        BUILTIN_TASKS.map(String::from).to_vec()
    } else {
        a.tasks.clone()
    };
    let mut missing = 0;
    let places = Places::from_env();
    for t in &tasks {
        let Some(pez_tasks::sources::BuiltinTask { train, dev, .. }) = builtin_task(t) else {
            bail!("`{t}` is not a built-in task ({})", BUILTIN_TASKS.join(", "))
        };
        let task = pez_tasks::TaskSpec::resolve(t)?;
        for (split, s) in [("train", &train), ("dev", &dev)] {
            let found = if a.fetch {
                Some(s.fetch(&places)?)
            } else {
                s.locate(&places)
            };
            match found {
                Some(l) => {
                    let n = pez_tasks::data::load(l.path(), &s.format_of(l.path()), task.num_labels())?
                        .examples
                        .len();
                    let bytes = std::fs::metadata(l.path()).map(|m| m.len()).unwrap_or(0);
                    println!(
                        "{t:<7} {split:<5} {:<12} {}  ({n} examples, {:.1} MB)",
                        l.describe(),
                        l.path().display(),
                        bytes as f64 / 1e6
                    );
                }
                None => {
                    missing += 1;
                    println!(
                        "{t:<7} {split:<5} {:<12} hub {} {} (not cached; `pez data {t} --fetch` downloads it)",
                        "missing", s.hub_repo, s.hub_file
                    );
                }
            }
        }
    }
    if missing > 0 {
        eprintln!("{missing} split(s) are not here: set $PEZ_DATA, run from a checkout beside shared/data, or fetch them from the hub");
    }
    Ok(())
}
