use crate::args::{parse, Placement};
use anyhow::Result;
use pez_config::{PromptArtifact, TuneSettings};
use std::path::{Path, PathBuf};

/// `pez tune`'s settings flags: declared from the list that declares `TuneSettings` (pez_config's
/// `for_each_setting!`), one flag per setting, so the two cannot drift apart.
macro_rules! settings_flags {
    ($($(#[$doc:meta])* $name:ident: $ty:ty,)* ; $($(#[$sdoc:meta])* $switch:ident,)*) => {
        #[derive(clap::Args)]
        pub struct SettingsFlags {
            $($(#[$doc])* #[arg(long, value_parser = parse::<$ty>)] $name: Option<$ty>,)*
            $($(#[$sdoc])* #[arg(long)] $switch: bool,)*
        }

        impl SettingsFlags {
            /// The settings these flags give (a flag not given is a setting not given).
            fn settings(self, task: Option<String>, dtype: Option<pez_nn::Dtype>) -> TuneSettings {
                TuneSettings {
                    task,
                    dtype,
                    $($name: self.$name,)*
                    $($switch: self.$switch.then_some(true),)*
                }
            }
        }
    };
}
pez_config::for_each_setting!(settings_flags);

#[derive(clap::Args)]
#[command(after_help = defaults_help())]
pub struct Args {
    /// sst2, amazon, agnews, or a task .toml file.
    task: Option<String>,
    #[command(flatten)]
    settings_flags: SettingsFlags,
    #[command(flatten)]
    placement: Placement,
    /// A TOML file of settings (`steps = 200`, `task = "sst2"`, ...: the flags' names in snake_case); flags given
    /// on the command line win over it. Paths in it are read from the current directory.
    #[arg(long)]
    settings: Option<PathBuf>,
    /// Best-of-N: run N seeds (from --seed) one after another, each in <out>/s<seed>, and write
    /// <out>/summary.{json,md} (default out: runs/<task>-<method>).
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Seeds ranked in the summary's top list (by holdout accuracy).
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// With --seeds N: the K best prompts by holdout accuracy as one classifier (the mean of their label
    /// log-probabilities), written to <out>/ensemble.json and scored on dev; eval, transfer and pez-serve take it
    /// wherever they take a prompt.json.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    ensemble: Option<u64>,
    /// Continue the run in this directory from its last checkpoint; with --steps N, to N steps in all (a finished
    /// run too: the N-step run with its settings, since a PEZ run of N steps begins as the shorter one did).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Print the final prompt.json instead of the summary.
    #[arg(long)]
    json: bool,
}

/// The defaults of the settings not given, as `TuneSettings::resolve` fills them in for SST-2 on the CPU.
fn defaults_help() -> String {
    let resolved = TuneSettings::default()
        .resolve(&candle_core::Device::Cpu)
        .map(|c| serde_json::to_value(c).ok());
    let Ok(Some(serde_json::Value::Object(d))) = resolved else {
        return String::new();
    };
    let shown: Vec<String> = d
        .iter()
        .filter(|(k, v)| !v.is_null() && !["task", "out", "dtype"].contains(&k.as_str()))
        .map(|(k, v)| format!("--{} {}", k.replace('_', "-"), v.to_string().trim_matches('"')))
        .collect();
    format!(
        "Defaults (sst2; the row rules and the learning rate follow the task and the optimizer):\n  {}",
        shown.join(", ")
    )
}

pub fn run(a: Args) -> Result<()> {
    let (device, _) = a.placement.open()?;
    if let Some(dir) = &a.resume {
        // The run keeps its own settings; --steps N alone may ask for more steps.
        let given = a.settings_flags.settings(a.task, a.placement.dtype);
        let other: Vec<&str> = given.given().into_iter().filter(|n| *n != "steps").collect();
        if !other.is_empty() || a.settings.is_some() || a.seeds > 1 || a.ensemble.is_some() {
            anyhow::bail!(
                "--resume DIR continues a run with its own settings (--steps N may extend it): give no task, \
                 --settings, --seeds, --ensemble or other settings with it (given: {})",
                other.join(", ")
            );
        }
        let prompt = match given.steps {
            Some(steps) => pez_tune::extend(dir, steps, &device)?,
            None => pez_tune::tune(None, Some(dir), &device)?,
        };
        return report(&prompt, dir, a.json);
    }
    match a.ensemble {
        Some(_) if a.seeds < 2 => {
            anyhow::bail!("--ensemble K needs --seeds N (N >= K): an ensemble is made of several runs' prompts")
        }
        Some(k) if k > a.seeds => anyhow::bail!("--ensemble {k} is more prompts than --seeds {}", a.seeds),
        _ => {}
    }
    let from_file = match &a.settings {
        Some(p) => read_settings(p)?,
        None => TuneSettings::default(),
    };
    let settings = a
        .settings_flags
        .settings(a.task.clone(), a.placement.dtype)
        .over(from_file);
    if settings.task.is_none() {
        anyhow::bail!(
            "give a task (sst2, amazon, agnews, or a .toml file), --settings FILE with a task, or --resume DIR"
        );
    }
    let cfg = settings.resolve(&device)?;
    if a.seeds > 1 {
        let root = settings
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", cfg.task.trim_end_matches(".toml"), cfg.method)));
        // Runs already under `root` must have been tuned as these settings resolve here, defaults included (a run
        // from before a default moved is another setting's). Not compared: what only scores a prompt, an
        // ensemble's calibration (it calibrates its members as asked) and a dtype left to the machine.
        let compared: Vec<&str> = (TuneSettings::NAMES.iter().copied())
            .filter(|k| match *k {
                "dev" | "skip_dev" | "eval_batch" => false,
                "calibration" => a.ensemble.is_none(),
                "dtype" => settings.dtype.is_some(),
                _ => true,
            })
            .collect();
        let s = pez_tune::sweep(&cfg, &compared, a.seeds, &root, a.top, &device)?;
        print!("{}", pez_tune::sweep::markdown(&s));
        eprintln!("wrote {}/summary.json and summary.md", root.display());
        if let Some(k) = a.ensemble {
            let e = pez_tune::sweep::ensemble(&cfg, &s, &root, k as usize, &device)?;
            let pct = e
                .dev_accuracy
                .map_or("not scored (--skip-dev)".into(), |d| format!("{:.2}%", d * 100.0));
            println!(
                "ensemble of {} (seeds {:?}): dev {pct}",
                e.members.len(),
                e.members.iter().map(|m| m.seed).collect::<Vec<_>>()
            );
            println!("wrote {}", root.join(pez_config::ENSEMBLE_FILE).display());
        }
        return Ok(());
    }
    let out = cfg.out.clone();
    report(&pez_tune::tune(Some(cfg), None, &device)?, &out, a.json)
}

fn read_settings(path: &Path) -> Result<TuneSettings> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// What a person reads at the end of a run (or, with `json`, the run's prompt.json).
fn report(a: &PromptArtifact, dir: &Path, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(a)?);
        return Ok(());
    }
    let pct = |x: Option<f64>| x.map_or("–".into(), |v| format!("{:.2}%", v * 100.0));
    println!("prompt   {:?}", a.prompt);
    println!("holdout  {}  (best at step {})", pct(a.holdout_accuracy), a.step);
    let per_class: Vec<String> = a
        .dev_per_class
        .iter()
        .flatten()
        .zip(&a.prompt_format.label_names)
        .map(|((k, n), l)| format!("{l} {:.1}%", 100.0 * *k as f64 / (*n).max(1) as f64))
        .collect();
    match a.dev_accuracy {
        Some(_) => println!("dev      {}  ({})", pct(a.dev_accuracy), per_class.join(", ")),
        None => println!("dev      not scored (--skip-dev)"),
    }
    println!("run      {}", dir.display());
    println!(
        "evaluate pez eval {} --prompt-file {} --model {}",
        a.task,
        dir.join("prompt.json").display(),
        a.config.model
    );
    println!(
        "serve    pez-serve --model {} --classifiers {}",
        a.config.model,
        dir.display()
    );
    Ok(())
}
