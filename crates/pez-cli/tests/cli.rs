//! End-to-end tests of the `pez` binary on the real SmolLM2 weights (scripts/setup.sh fetches them): resume after
//! kill -9, and clear errors for bad input.

mod common;

use common::{fixtures, metrics_without_time, ok, pez, tune_tiny};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn shared(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(p)
}

/// A small custom task: the first 48 SST-2 dev sentences to train on, the next 16 as its dev split.
fn small_task(dir: &Path) -> PathBuf {
    let dev = std::fs::read_to_string(shared("sst2/dev.tsv")).unwrap();
    let lines: Vec<&str> = dev.lines().collect();
    std::fs::write(dir.join("train.tsv"), lines[..49].join("\n") + "\n").unwrap();
    std::fs::write(
        dir.join("dev.tsv"),
        [&lines[..1], &lines[49..65]].concat().join("\n") + "\n",
    )
    .unwrap();
    let toml = r#"
name = "mini-sst2"
template = " It was"
verbalizers = [" negative", " positive"]
label_names = ["negative", "positive"]
train = "train.tsv"
dev = "dev.tsv"
[format]
delimiter = "\t"
header = true
quoting = false
text_columns = ["sentence"]
label_column = "label"
"#;
    let p = dir.join("task.toml");
    std::fs::write(&p, toml).unwrap();
    p
}

fn tune_args(task: &Path, out: &Path) -> Vec<String> {
    [
        task.to_str().unwrap(),
        "--steps",
        "8",
        "--batch-size",
        "4",
        "--eval-every",
        "2",
        "--holdout",
        "8",
        "--prompt-len",
        "4",
        "--fluency",
        "0.003",
        "--seed",
        "3",
        "--eval-batch",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn resume_after_kill_equals_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let task = small_task(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    ok(pez().arg("tune").args(tune_args(&task, &a)).output().unwrap());

    let mut child = pez().arg("tune").args(tune_args(&task, &b)).spawn().unwrap();
    let t0 = Instant::now();
    // Kill -9 once the second evaluation's checkpoint is on disk, before the run ends.
    loop {
        let n = std::fs::read_to_string(b.join("metrics.jsonl"))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= 2 && b.join("checkpoint.json").exists() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(300), "run b made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "run b ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let ck: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(b.join("checkpoint.json")).unwrap()).unwrap();
    assert!(
        ck["pez"]["step"].as_u64().unwrap() < 8,
        "killed too late to test anything"
    );

    ok(pez().args(["tune", "--resume", b.to_str().unwrap()]).output().unwrap());
    let pa: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("prompt.json")).unwrap()).unwrap();
    let pb: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(b.join("prompt.json")).unwrap()).unwrap();
    assert_eq!(pa["token_ids"], pb["token_ids"]);
    assert_eq!(pa["holdout_accuracy"], pb["holdout_accuracy"]);
    assert_eq!(pa["dev_accuracy"], pb["dev_accuracy"]);
    assert_eq!(metrics_without_time(&a), metrics_without_time(&b));
    assert_eq!(metrics_without_time(&a).len(), 4);

    // A finished run keeps its settings; --steps alone takes it further (pez-tune's tests/horizon.rs: as the
    // longer run from the start), its first records untouched.
    let e = err_of(&[
        "tune",
        "--resume",
        a.to_str().unwrap(),
        "--steps",
        "10",
        "--fluency",
        "0.1",
    ]);
    assert!(e.contains("its own settings") && e.contains("given: fluency"), "{e}");
    ok(pez()
        .args(["tune", "--resume", a.to_str().unwrap(), "--steps", "10"])
        .output()
        .unwrap());
    let longer = metrics_without_time(&a);
    assert_eq!((longer.len(), &longer[..4]), (5, &metrics_without_time(&b)[..]));
    let pa: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("prompt.json")).unwrap()).unwrap();
    assert_eq!(
        (pa["config"]["steps"].as_u64(), pa["step"].as_u64().unwrap() <= 10),
        (Some(10), true)
    );
    assert!(pa["dev_accuracy"].is_number(), "{pa}");
}

fn err_of(args: &[&str]) -> String {
    let o = pez().args(args).output().unwrap();
    assert!(!o.status.success(), "expected failure for {args:?}");
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn bad_input_gets_clear_errors_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let task = small_task(tmp.path());
    let t = task.to_str().unwrap();
    // Label out of range, on line 3 of the data file.
    let mut rows = std::fs::read_to_string(tmp.path().join("train.tsv"))
        .unwrap()
        .lines()
        .map(String::from)
        .collect::<Vec<_>>();
    rows[2] = "a fine film\t7".into();
    std::fs::write(tmp.path().join("train.tsv"), rows.join("\n")).unwrap();
    let out = tmp.path().join("run");
    let e = err_of(&["tune", t, "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(e.contains("train.tsv:3") && e.contains("out of range"), "{e}");
    assert!(!out.exists(), "a failed run must not leave a run directory");
    // Empty text.
    rows[2] = "\t1".into();
    std::fs::write(tmp.path().join("train.tsv"), rows.join("\n")).unwrap();
    let e = err_of(&["tune", t, "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(e.contains("train.tsv:3") && e.contains("empty text"), "{e}");
    // A label that is not a number.
    rows[2] = "fine\tgood".into();
    std::fs::write(tmp.path().join("train.tsv"), rows.join("\n")).unwrap();
    let e = err_of(&["tune", t, "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(e.contains("train.tsv:3") && e.contains("not an integer"), "{e}");
    // A row with too few columns.
    rows[2] = "no label column".into();
    std::fs::write(tmp.path().join("train.tsv"), rows.join("\n")).unwrap();
    let e = err_of(&["tune", t, "--steps", "2", "--out", out.to_str().unwrap()]);
    assert!(e.contains("train.tsv:3") && e.contains("columns"), "{e}");
    assert!(!out.exists());

    let e = err_of(&["tune", "imdb"]);
    assert!(e.contains("unknown task `imdb`"), "{e}");
    let e = err_of(&["eval", "sst2", "--empty", "--model", "gpt5"]);
    assert!(e.contains("unknown model `gpt5`"), "{e}");
    let e = err_of(&["eval", "sst2", "--empty", "--data", "/nonexistent.tsv"]);
    assert!(e.contains("/nonexistent.tsv"), "{e}");
}

#[test]
fn multi_token_verbalizer_is_scored_by_its_first_token_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let task = small_task(tmp.path());
    let text = std::fs::read_to_string(&task)
        .unwrap()
        .replace("\" positive\"]", "\" superlatively\"]");
    std::fs::write(&task, text).unwrap();
    let o = ok(pez()
        .args(["eval", task.to_str().unwrap(), "--empty", "--json"])
        .output()
        .unwrap());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("\" superlatively\" is") && e.contains("scoring its first token"),
        "{e}"
    );
}

/// With stderr not a terminal (a pipe, as in `pez tune ... 2> run.log`), progress comes as plain timed lines:
/// one at the start, then step, rate, ETA and loss every `PEZ_PROGRESS_SECS` (0 here: every step).
#[test]
fn progress_is_plain_lines_when_stderr_is_not_a_terminal() {
    let fx = fixtures().join("transfer");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let o = ok(pez()
        .args([
            "tune",
            fx.join("task.toml").to_str().unwrap(),
            "--model",
            fx.join("gpt2").to_str().unwrap(),
        ])
        .args([
            "--train",
            fx.join("dev.tsv").to_str().unwrap(),
            "--steps",
            "6",
            "--batch-size",
            "2",
            "--eval-every",
            "3",
        ])
        .args(["--holdout", "4", "--prompt-len", "2", "--out", out.to_str().unwrap()])
        .env("PEZ_PROGRESS_SECS", "0")
        .output()
        .unwrap());
    let e = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = e.lines().filter(|l| l.starts_with("[tune ")).collect();
    assert!(lines[0].ends_with("starting: 6 steps"), "{e}");
    for step in 1..=6 {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("] {step}/6 steps (")) && l.contains("ETA") && l.contains("loss")),
            "step {step}: {e}"
        );
    }
    assert!(lines.iter().any(|l| l.contains("holdout") && l.contains("best")), "{e}");
    assert!(lines.last().unwrap().contains("done: 6/6 steps"), "{e}");
    assert!(
        !e.contains('\r') && !e.contains("\x1b["),
        "no bar escapes in a log: {e:?}"
    );
}

/// A row rule that admits no rows (the fixture's texts are 2-4 words; `long` wants 10+) is refused with the flag
/// that fixes it, before a run directory is written; few-shot runs draw from all rows and refuse the rules.
#[test]
fn row_rules_that_admit_no_rows_are_refused_with_the_fix() {
    let fx = fixtures().join("transfer");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let (task, model, train) = (fx.join("task.toml"), fx.join("gpt2"), fx.join("dev.tsv"));
    let base = [
        "tune",
        task.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--train",
        train.to_str().unwrap(),
        "--steps",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    let e = err_of(&[&base[..], &["--holdout-rule", "long"]].concat());
    assert!(
        e.contains("no holdout rows") && e.contains("give --holdout-rule random"),
        "{e}"
    );
    let e = err_of(&[&base[..], &["--train-rule", "long"]].concat());
    assert!(
        e.contains("no training rows") && e.contains("give --train-rule random"),
        "{e}"
    );
    let e = err_of(&[&base[..], &["--shots", "1", "--holdout-rule", "long"]].concat());
    assert!(e.contains("--shots"), "{e}");
    assert!(!out.exists(), "a refused run must not leave a run directory");
}

/// `--tokens words`: every prompt the run scores and the one it keeps are made of word pieces only, and the
/// subset's size is said at the start. `pez eval` then reports the kept prompt's log-perplexity: on the source
/// model what the run recorded for the same tokens (a words-only prompt re-tokenizes to itself), under another
/// reader (Gemma 3) its own figure.
#[test]
fn a_words_only_run_never_uses_a_token_outside_the_set() {
    let tmp = tempfile::tempdir().unwrap();
    let task = small_task(tmp.path());
    let out = tmp.path().join("words");
    let mut args = tune_args(&task, &out);
    args.extend(["--tokens", "words", "--init", "random", "--dtype", "f32"].map(String::from));
    let o = ok(pez().arg("tune").args(&args).output().unwrap());
    let lm = pez_models::load_lm("smollm2-135m", candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let words = pez_hub::tokenizer::token_set(
        &lm.tokenizer,
        lm.model.info().vocab_size,
        pez_hub::tokenizer::TokenSet::Words,
    );
    let n = words.iter().filter(|&&a| a).count();
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("tokens words: {n} of {} may be used", words.len())));
    let mut seen = 0;
    for line in std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for id in v["token_ids"].as_array().unwrap() {
            let id = id.as_u64().unwrap() as usize;
            assert!(
                words[id],
                "token {id} ({:?}) is not a word piece",
                pez_hub::tokenizer::decode(&lm.tokenizer, &[id as u32]).unwrap()
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 4 * 4, "4 holdout passes of a 4-token prompt");
    let p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("prompt.json")).unwrap()).unwrap();
    assert_eq!(p["config"]["tokens"], "words");
    assert!(
        p["prompt"]
            .as_str()
            .unwrap()
            .split(' ')
            .skip(1)
            .all(|w| !w.is_empty() && w.chars().all(char::is_alphabetic)),
        "{}",
        p["prompt"]
    );

    let eval = |model: &str| -> serde_json::Value {
        let o = ok(pez()
            .args([
                "eval",
                task.to_str().unwrap(),
                "--prompt-file",
                out.to_str().unwrap(),
                "--model",
                model,
                "--dtype",
                "f32",
                "--json",
            ])
            .output()
            .unwrap());
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let e = eval("smollm2-135m");
    assert_eq!(e["prompt_ids"], p["token_ids"]);
    let (smol, recorded) = (
        e["prompt_log_ppl"].as_f64().unwrap(),
        p["fluency_log_ppl"].as_f64().unwrap(),
    );
    assert!((smol - recorded).abs() < 1e-3, "eval {smol} vs the run's {recorded}");
    let gemma = eval("gemma3-270m")["prompt_log_ppl"].as_f64().unwrap();
    assert!(
        gemma.is_finite() && gemma > 0.0 && (gemma - smol).abs() > 1e-3,
        "gemma {gemma} vs smollm2 {smol}"
    );
}

/// `pez check-kernels` (what scripts/gpu_check.sh runs on a GPU) on the CPU kernels: every fused op is close to the
/// f32 truth, the norms not bitwise the composed maths (so the fused op is what ran), and bf16 is refused on the CPU.
#[test]
fn check_kernels_compares_the_fused_ops_with_the_composed_maths() {
    let o = ok(pez().args(["check-kernels", "--json"]).output().unwrap());
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let ops: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
    let each = [
        "rms_norm",
        "layer_norm",
        "rope",
        "gated_silu",
        "gated_gelu_tanh",
        "masked_softmax",
    ];
    assert_eq!(ops, [each, each].concat());
    for r in &rows {
        assert_eq!(
            (r["ok"].as_bool(), r["dtype"].as_str()),
            (Some(true), Some("f32")),
            "{r}"
        );
        for k in ["fused_values", "fused_grads"] {
            let e = r[k].as_f64().unwrap();
            assert!(e < 1e-5, "{k}: {r}");
            assert!(e > 0.0 || !r["op"].as_str().unwrap().ends_with("norm"), "{k}: {r}");
        }
        assert_eq!(
            (r["composed_values"].as_f64(), r["composed_grads"].as_f64()),
            (Some(0.0), Some(0.0))
        );
    }
    let err = err_of(&["check-kernels", "--dtype", "bf16"]);
    assert!(err.contains("the CPU kernels take f32"), "{err}");
}

/// `PEZ_PROFILE=1` adds each record's per-step phase times (what gpu_speed.py reports from a GPU) and changes
/// nothing else: the same records as a run without it.
#[test]
fn a_profiled_run_records_its_phases_and_otherwise_equals_a_plain_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, profiled) = (tmp.path().join("plain"), tmp.path().join("profiled"));
    let args = ["--eval-every", "3", "--dtype", "f32"];
    ok(tune_tiny(&plain).args(args).output().unwrap());
    ok(tune_tiny(&profiled)
        .args(args)
        .env("PEZ_PROFILE", "1")
        .output()
        .unwrap());
    let mut records = metrics_without_time(&profiled);
    for r in &mut records {
        let p = r
            .as_object_mut()
            .unwrap()
            .remove("profile")
            .expect("a profile in every record");
        assert_eq!(p["steps"], 3, "{p}");
        let phases = ["project_s", "forward_s", "backward_s", "update_s"].map(|k| p[k].as_f64().unwrap());
        assert!(
            phases.iter().all(|&s| s >= 0.0) && phases[1] > 0.0 && phases[2] > 0.0,
            "{p}"
        );
    }
    assert_eq!(records, metrics_without_time(&plain));
}
