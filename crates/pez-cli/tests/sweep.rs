//! `pez sweep` end to end on the tiny GPT-2 checkpoint (runs of a second or two): stable indices, bad input
//! refused before anything runs, a cell run twice, finished cells without their checkpoints (as committed) kept,
//! a killed cell resumed exactly, a failed cell shown as failed,
//! and a seeds-only grid summarised as `pez tune --seeds` summarises the same seeds.

mod common;

use common::{metrics_without_time, ok, pez, tune_tiny};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

fn fx() -> PathBuf {
    common::fixtures().join("transfer")
}

fn err(o: Output) -> String {
    assert!(
        !o.status.success(),
        "pez should have failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `name` in `dir`: short tunes (`steps`, holdout every `every`) of the tiny checkpoint on the fixture task into
/// `out`, with `grid` and `extra` base lines.
fn sweep_at(dir: &Path, name: &str, out: &str, (steps, every): (usize, usize), grid: &str, extra: &str) -> PathBuf {
    let f = fx();
    let text = format!(
        "out = \"{out}\"\ntop = 2\n[base]\ntask = \"{}\"\nmodel = \"{}\"\ntrain = \"{}\"\nsteps = {steps}\nbatch_size = 2\neval_every = {every}\n\
         holdout = 4\nprompt_len = 2\ndtype = \"f32\"\n{extra}\n[grid]\n{grid}\n",
        f.join("task.toml").display(), f.join("gpt2").display(), f.join("dev.tsv").display()
    );
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn sweep_file(dir: &Path, grid: &str, extra: &str) -> PathBuf {
    sweep_at(dir, "sweep.toml", "runs", (6, 3), grid, extra)
}

fn plan(file: &Path) -> String {
    String::from_utf8(ok(pez().args(["sweep", "plan", file.to_str().unwrap()]).output().unwrap()).stdout).unwrap()
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn plan_indices_do_not_move_with_comments_spacing_or_key_order() {
    let tmp = tempfile::tempdir().unwrap();
    let a = plan(&sweep_file(
        tmp.path(),
        "fluency = [0.0, 0.3]\nseed = [0, 1]\neval_batch = [8, 16]",
        "",
    ));
    let b = plan(&sweep_file(tmp.path(), "# seeds last or first, the index is the same\nseed   = [0, 1]   # two\n\neval_batch=[8,16]\n  fluency = [ 0.0 , 0.3 ]", ""));
    assert_eq!(a, b);
    assert!(a.contains("8 cells"), "{a}");
    // Name order, the seed last: eval_batch, fluency, seed.
    let rows: Vec<&str> = a.lines().skip(2).collect();
    assert!(
        rows[0].ends_with("eval_batch8-fluency0.0-s0") && rows[1].ends_with("eval_batch8-fluency0.0-s1"),
        "{a}"
    );
    assert!(
        rows[2].ends_with("eval_batch8-fluency0.3-s0") && rows[7].ends_with("eval_batch16-fluency0.3-s1"),
        "{a}"
    );
    assert!(rows.iter().all(|r| r.contains("missing")), "{a}");
}

#[test]
fn bad_input_is_refused_naming_the_cell_and_field_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let f = sweep_file(tmp.path(), "seed = [0, 1]", "flunecy = 0.1");
    let e = err(pez().args(["sweep", "plan", f.to_str().unwrap()]).output().unwrap());
    assert!(
        e.contains("unknown setting `flunecy` in [base]") && e.contains("fluency"),
        "{e}"
    );

    let f = sweep_file(tmp.path(), "seed = [0]\nfluency = [0.0, 2.0]", "");
    let e = err(pez()
        .args(["sweep", "run", f.to_str().unwrap(), "--index", "0"])
        .output()
        .unwrap());
    assert!(
        e.contains("cell 1 (fluency2.0-s0)") && e.contains("--fluency must be in [0, 1]"),
        "{e}"
    );

    let f = sweep_file(tmp.path(), "seed = [0]\nfluency = [\"much\"]", "");
    let e = err(pez().args(["sweep", "plan", f.to_str().unwrap()]).output().unwrap());
    assert!(e.contains("cell 0") && e.contains("setting `fluency`"), "{e}");

    let f = sweep_file(tmp.path(), "seed = [0]\nmethod = [\"pez\", \"no-such-method\"]", "");
    let e = err(pez().args(["sweep", "plan", f.to_str().unwrap()]).output().unwrap());
    assert!(e.contains("cell 1") && e.contains("setting `method`"), "{e}");

    let text = std::fs::read_to_string(sweep_file(tmp.path(), "seed = [0]", ""))
        .unwrap()
        .replacen("task = ", "task_was = ", 1)
        + "";
    let f = tmp.path().join("sweep.toml");
    std::fs::write(&f, text.replace("[grid]\n", "[grid]\ntask = [\"sst3\"]\n")).unwrap();
    let e = err(pez().args(["sweep", "plan", f.to_str().unwrap()]).output().unwrap());
    assert!(e.contains("unknown setting `task_was`"), "{e}");
    std::fs::write(
        &f,
        text.replace("task_was = ", "# ")
            .replace("[grid]\n", "[grid]\ntask = [\"sst3\"]\n"),
    )
    .unwrap();
    let e = err(pez().args(["sweep", "plan", f.to_str().unwrap()]).output().unwrap());
    assert!(
        e.contains("cell 0 (tasksst3-s0)") && e.contains("setting `task`") && e.contains("unknown task `sst3`"),
        "{e}"
    );

    let f = sweep_file(tmp.path(), "seed = [0, 1]", "");
    let e = err(pez()
        .args(["sweep", "run", f.to_str().unwrap(), "--index", "2"])
        .output()
        .unwrap());
    assert!(
        e.contains("index 2 is out of range") && e.contains("2 cells (0..=1)"),
        "{e}"
    );
    let e = err(pez()
        .args(["sweep", "run", f.to_str().unwrap()])
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap());
    assert!(e.contains("no cell index"), "{e}");

    let f = sweep_file(tmp.path(), "seed = [0]\nmodel = [\"x/m.gguf\", \"y/m.gguf\"]", "");
    std::fs::write(
        &f,
        std::fs::read_to_string(&f)
            .unwrap()
            .replacen("\nmodel = \"", "\n# model = \"", 1),
    )
    .unwrap();
    let e = err(pez().args(["sweep", "plan", f.to_str().unwrap()]).output().unwrap());
    assert!(e.contains("cells 0 and 1 would share the run directory"), "{e}");
    assert!(!runs.exists(), "nothing may be written for a refused sweep");
}

#[test]
fn cells_run_twice_keep_their_runs_and_summarise_as_pez_tune_seeds() {
    let tmp = tempfile::tempdir().unwrap();
    // 4 cells: seeds 0-2 of the fixture task, and one (index 3) whose train file does not exist.
    let f = sweep_file(tmp.path(), "seed = [0, 1, 2]", "");
    for i in 0..3 {
        ok(pez()
            .args(["sweep", "run", f.to_str().unwrap()])
            .env("SLURM_ARRAY_TASK_ID", i.to_string())
            .output()
            .unwrap());
    }
    let runs = tmp.path().join("runs");
    let metrics = std::fs::read_to_string(runs.join("s1/metrics.jsonl")).unwrap();
    // Run again: kept, nothing appended.
    let o = ok(pez()
        .args(["sweep", "run", f.to_str().unwrap(), "--index", "1"])
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("finished in"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(runs.join("s1/metrics.jsonl")).unwrap(), metrics);

    // The same seeds by `pez tune --seeds`: equal summaries but for where the runs are and how long they took.
    let seeds = tmp.path().join("seeds");
    let flags = [
        "--batch-size",
        "2",
        "--eval-every",
        "3",
        "--prompt-len",
        "2",
        "--dtype",
        "f32",
        "--seeds",
        "3",
    ];
    ok(tune_tiny(&seeds).args(flags).args(["--top", "2"]).output().unwrap());
    ok(pez()
        .args(["sweep", "summarize", f.to_str().unwrap()])
        .output()
        .unwrap());
    let strip = |mut v: serde_json::Value| {
        for r in v["runs"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().retain(|k, _| k != "dir" && k != "wall_s");
        }
        v.as_object_mut().unwrap().remove("wall_s");
        v
    };
    let grid = json(&runs.join("summary.json"));
    assert_eq!(grid["groups"].as_array().unwrap().len(), 1);
    assert_eq!(
        strip(grid["groups"][0]["summary"].clone()),
        strip(json(&tmp.path().join("seeds/summary.json")))
    );
    assert!(
        runs.join("summary.md").exists()
            && std::fs::read_to_string(runs.join("summary.svg"))
                .unwrap()
                .starts_with("<svg")
    );

    // Committed results hold no checkpoint.json (git-ignored): the cells are still finished, kept and summarised
    // alike, and a new run into one of them is refused rather than overwriting its prompt.json.
    for i in 0..3 {
        std::fs::remove_file(runs.join(format!("s{i}/checkpoint.json"))).unwrap();
    }
    assert!(
        plan(&f).lines().skip(2).take(3).all(|l| l.contains("finished")),
        "{}",
        plan(&f)
    );
    let o = ok(pez()
        .args(["sweep", "run", f.to_str().unwrap(), "--index", "1"])
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("(its prompt.json; no checkpoint), kept"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(std::fs::read_to_string(runs.join("s1/metrics.jsonl")).unwrap(), metrics);
    ok(pez()
        .args(["sweep", "summarize", f.to_str().unwrap()])
        .output()
        .unwrap());
    assert_eq!(
        strip(json(&runs.join("summary.json"))["groups"][0]["summary"].clone()),
        strip(grid["groups"][0]["summary"].clone())
    );
    let e = err(tune_tiny(&runs.join("s1")).output().unwrap());
    assert!(e.contains("already holds a run's prompt.json"), "{e}");
}

#[test]
fn a_killed_cell_resumes_as_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    // A cell killed after its first checkpoint resumes exactly: as the uninterrupted run of the same seed.
    let f2 = sweep_at(tmp.path(), "long.toml", "long", (1000, 3), "seed = [0, 1, 2, 3]", "");
    ok(pez()
        .args(["sweep", "run", f2.to_str().unwrap(), "--index", "3"])
        .output()
        .unwrap());
    let dir = tmp.path().join("long/s3");
    std::fs::rename(&dir, tmp.path().join("long/uninterrupted")).unwrap();
    let mut child = pez()
        .args(["sweep", "run", f2.to_str().unwrap(), "--index", "3"])
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !dir.join("checkpoint.json").exists() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the cell ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !json(&dir.join("checkpoint.json"))["finished"]
            .as_bool()
            .unwrap_or(false),
        "killed too late to test anything"
    );
    let plan2 = plan(&f2);
    assert!(
        plan2.lines().any(|l| l.contains("started") && l.ends_with("s3")),
        "{plan2}"
    );
    let o = ok(pez()
        .args(["sweep", "run", f2.to_str().unwrap(), "--index", "3"])
        .output()
        .unwrap());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("resuming"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (a, b) = (
        json(&tmp.path().join("long/uninterrupted/prompt.json")),
        json(&dir.join("prompt.json")),
    );
    assert_eq!(
        (
            a["token_ids"].clone(),
            a["holdout_accuracy"].clone(),
            a["dev_accuracy"].clone()
        ),
        (
            b["token_ids"].clone(),
            b["holdout_accuracy"].clone(),
            b["dev_accuracy"].clone()
        )
    );
    assert_eq!(
        metrics_without_time(&tmp.path().join("long/uninterrupted")),
        metrics_without_time(&dir)
    );
}

#[test]
fn a_failed_cell_shows_as_failed_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // A failing cell leaves error.txt, and the summary shows it failed with the reason; the others stay missing.
    let f3 = sweep_at(
        tmp.path(),
        "fail.toml",
        "fail",
        (6, 3),
        "seed = [0, 1]\ntrain = [\"/no/such/train.tsv\"]",
        "",
    );
    std::fs::write(
        &f3,
        std::fs::read_to_string(&f3)
            .unwrap()
            .replacen("\ntrain = \"", "\n# train = \"", 1),
    )
    .unwrap();
    let e = err(pez()
        .args(["sweep", "run", f3.to_str().unwrap(), "--index", "1"])
        .output()
        .unwrap());
    assert!(e.contains("/no/such/train.tsv"), "{e}");
    assert!(std::fs::read_to_string(tmp.path().join("fail/traintrain-s1/error.txt"))
        .unwrap()
        .contains("/no/such/train.tsv"));
    let md = String::from_utf8(
        ok(pez()
            .args(["sweep", "summarize", f3.to_str().unwrap()])
            .output()
            .unwrap())
        .stdout,
    )
    .unwrap();
    assert!(
        md.contains("| 1 | \"/no/such/train.tsv\" | 1 | failed |")
            && md.contains("2 cells: 0 finished, 0 started, 1 failed, 1 missing"),
        "{md}"
    );
}

#[test]
fn a_listing_piped_into_a_reader_that_stops_early_ends_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().unwrap();
    // More lines than a pipe buffers (64 KiB), so pez is still writing when the reader goes.
    let seeds = (0..4000).map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let f = sweep_file(tmp.path(), &format!("seed = [{seeds}]"), "");
    let mut child = pez()
        .args(["sweep", "plan", f.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 64];
    child.stdout.as_mut().unwrap().read_exact(&mut head).unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        o.status.signal(),
        Some(13),
        "ended by SIGPIPE as a Unix filter is: {:?} {stderr}",
        o.status
    );
}
