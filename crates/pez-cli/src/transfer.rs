use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, default_value = "sst2")]
    task: String,
    /// Run directories, prompt.json files, or folders of run directories.
    #[arg(long, num_args = 1.., required = true)]
    prompts: Vec<PathBuf>,
    /// Target models (names, GGUF files or Hugging Face directories); the source model may be one of them.
    #[arg(long, num_args = 1.., required_unless_present = "endpoint")]
    models: Vec<String>,
    /// OpenAI-compatible endpoints as targets (e.g. http://127.0.0.1:8080), each with an --endpoint-model.
    #[arg(long, requires = "endpoint_model")]
    endpoint: Vec<String>,
    /// The model name to ask each --endpoint for (in the same order).
    #[arg(long)]
    endpoint_model: Vec<String>,
    /// pez: pez-serve's /v1/classify (the same numbers as in-process); openai: /v1/completions with logprobs (the
    /// verbalizers must be among the server's top 20 next tokens; more than 5% of examples without them is an error).
    #[arg(long, default_value = "pez", value_parser = crate::args::parse::<pez_classify::endpoint::Api>)]
    endpoint_api: pez_classify::endpoint::Api,
    /// Prompts per method, best by holdout accuracy.
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Data file (default: the task's dev split).
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Where in-process targets run.
    #[command(flatten)]
    placement: crate::args::Placement,
    /// Label calibration on in-process targets: none, or content-free (estimated on each target model).
    #[arg(long, default_value = "none", value_parser = crate::args::parse::<pez_tasks::Calibration>)]
    calibration: pez_tasks::Calibration,
    /// Output folder (default evals/<task>).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let t0 = Instant::now();
    // The endpoints are checked before anything is scored (minutes of work lost to a typo otherwise).
    if a.endpoint.len() != a.endpoint_model.len() {
        anyhow::bail!(
            "give one --endpoint-model per --endpoint ({} endpoints, {} models)",
            a.endpoint.len(),
            a.endpoint_model.len()
        );
    }
    let endpoints = a
        .endpoint
        .iter()
        .zip(&a.endpoint_model)
        .map(|(url, model)| pez_classify::endpoint::Endpoint::new(url, model, a.endpoint_api))
        .collect::<Result<Vec<_>>>()?;
    let grid = pez_transfer::Grid::new(&a.task, &a.prompts, a.top, a.data.as_deref())?;
    let (device, dtype) = a.placement.open()?;
    let mut scores = vec![];
    for m in &a.models {
        let s = grid.score_model(m, (&device, dtype), a.batch_size, a.calibration, &mut |msg| {
            eprintln!("[{:>6.0}s] {msg}", t0.elapsed().as_secs_f64())
        })?;
        for x in &s {
            eprintln!("          {:<14} {:6.2}%  {:?}", x.method, x.accuracy * 100.0, x.prompt);
        }
        scores.extend(s);
    }
    for ep in &endpoints {
        let s = grid.score_endpoint(ep, &mut |msg| eprintln!("[{:>6.0}s] {msg}", t0.elapsed().as_secs_f64()))?;
        for x in &s {
            eprintln!("          {:<14} {:6.2}%  {:?}", x.method, x.accuracy * 100.0, x.prompt);
        }
        scores.extend(s);
    }
    let out = a.out.unwrap_or_else(|| PathBuf::from("evals").join(&a.task));
    let cmd: Vec<String> = std::env::args().collect();
    let header = format!(
        "Command: `{}`  \nData: {} ({} examples). Wall time {:.0} s.",
        cmd.join(" "),
        grid.data_source.display(),
        grid.data.len(),
        t0.elapsed().as_secs_f64()
    );
    pez_transfer::report::write_all(&out, &grid.task.name, &scores, &header)?;
    println!("{}", std::fs::read_to_string(out.join("transfer.md"))?);
    eprintln!(
        "wrote {}/transfer.{{md,csv,svg}} and transfer_scores.json",
        out.display()
    );
    Ok(())
}
