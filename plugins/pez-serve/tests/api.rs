//! The API on a tiny random GPT-2 (word-level tokenizer) without the mistral.rs engine: labels equal
//! `pez eval`'s predictions, OpenAI response and error shapes, truncation, 429 when saturated.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use candle_core::{DType, Device};
use http_body_util::BodyExt;
use pez_serve::api::{AppState, BaseInfo};
use pez_serve::config::{BaseModel, ClassifierEntry, ServeConfig};
use pez_serve::{router, ClassifierPool};
use pez_tasks::TaskSpec;
use pez_classify::{LearnedPrompt, Prompted};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tower::ServiceExt;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crates/pez-models/tests/fixtures/transfer")
}

fn write_artifact(dir: &Path, prompt: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let a = pez_tasks::PromptArtifact {
        format: 1, prompt: prompt.into(), token_ids: vec![], method: "pez".into(), source_model: "tiny".into(),
        task: "tiny-sst2".into(), prompt_format: pez_tasks::PromptFormat::polarity(), calibration: Default::default(), holdout_accuracy: Some(0.9), dev_accuracy: None, dev_per_class: None,
        fluency_log_ppl: None, step: 1, seed: 0, config: json!({}),
    };
    a.write(&dir.join("prompt.json")).unwrap();
}

struct Server {
    app: axum::Router,
    state: AppState,
    runs: tempfile::TempDir,
}

fn server(max_concurrency: usize) -> Server {
    let runs = tempfile::tempdir().unwrap();
    write_artifact(&runs.path().join("tiny-pez"), "film great bad movie");
    write_artifact(&runs.path().join("tiny-empty"), "");
    let model = fixtures().join("gpt2").to_string_lossy().into_owned();
    let cfg = ServeConfig {
        host: "127.0.0.1".into(), port: 0, max_concurrency, max_batch: 32,
        models: vec![BaseModel { name: "tiny-gpt2".into(), path: Some(model), generate: Some(false) }],
        classifiers: ["tiny-pez", "tiny-empty"].iter().map(|n| ClassifierEntry { name: None, prompt: runs.path().join(n), base: None }).collect(),
    };
    cfg.validate().unwrap();
    let pool = ClassifierPool::start(&cfg).unwrap();
    let state = AppState::new(pool, None, vec![BaseInfo { name: "tiny-gpt2".into(), generate: false }], max_concurrency);
    Server { app: router(state.clone()), state, runs }
}

async fn call(app: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, Value, Option<String>) {
    let req = Request::builder().method(method).uri(path).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), retry)
}

/// Labels and label log-probabilities from the server equal `pez eval`'s (`Classifier::predict`) on the same
/// model and prompt, for the tiny dev set and for every SST-2 dev sentence (on the tiny model).
#[tokio::test]
async fn labels_agree_with_pez_eval() {
    let s = server(64);
    let lm = pez_models::load_lm(fixtures().join("gpt2").to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let task = TaskSpec::resolve(fixtures().join("task.toml").to_str().unwrap()).unwrap();
    let mut examples = task.load("dev", None).unwrap().examples;
    let sst2 = TaskSpec::resolve("sst2").unwrap();
    if let Ok(d) = sst2.load("dev", None) {
        examples.extend(d.examples);
    }
    for name in ["tiny-pez", "tiny-empty"] {
        let p = Prompted::new(&lm, LearnedPrompt::from_artifact(&s.runs.path().join(name), &lm).unwrap()).unwrap();
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let pez_classify::Predictions { labels: pred, probs } = p.predict(&texts, 32).unwrap();
        let (st, v, _) = call(&s.app, "POST", "/v1/classify", &json!({"model": name, "input": texts}).to_string()).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), examples.len());
        let mut worst = 0f64;
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["index"], i);
            assert_eq!(d["label_index"], pred[i], "{name}: example {i} {:?}", examples[i].text);
            assert_eq!(d["label"], ["negative", "positive"][pred[i]]);
            for (l, p) in ["negative", "positive"].iter().zip(&probs[i]) {
                worst = worst.max((d["probs"][l].as_f64().unwrap() - *p as f64).abs());
            }
        }
        eprintln!("{name}: {} labels equal, max |p_server - p_eval| = {worst:.2e}", data.len());
        assert!(worst < 1e-5);
    }
}

#[tokio::test]
async fn openai_shapes() {
    let s = server(64);
    let (st, v, _) = call(&s.app, "GET", "/v1/models", "").await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["tiny-gpt2", "tiny-empty", "tiny-pez"]);
    assert_eq!(v["data"][2]["labels"], json!(["negative", "positive"]));
    // One model by id, as the official client's models.retrieve asks for it; an unknown id is a 404.
    let (st, m, _) = call(&s.app, "GET", "/v1/models/tiny-pez", "").await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(m, v["data"][2]);
    let (st, e, _) = call(&s.app, "GET", "/v1/models/nope", "").await;
    assert_eq!((st, e["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("model_not_found")));

    let (_, c, _) = call(&s.app, "POST", "/v1/classify", r#"{"model": "tiny-pez", "input": "the film is great"}"#).await;
    let label = c["data"][0]["label"].clone();
    let lp = c["data"][0]["logprobs"].clone();

    let chat = json!({"model": "tiny-pez", "logprobs": true, "messages": [
        {"role": "system", "content": "ignored"}, {"role": "user", "content": "the film is great"}]});
    let (st, v, _) = call(&s.app, "POST", "/v1/chat/completions", &chat.to_string()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], label);
    let content = &v["choices"][0]["logprobs"]["content"][0];
    assert_eq!(content["token"], label);
    assert_eq!(content["logprob"], lp[label.as_str().unwrap()]);
    let top = content["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 2);
    assert!(top[0]["logprob"].as_f64().unwrap() >= top[1]["logprob"].as_f64().unwrap());
    let sum: f64 = top.iter().map(|t| t["logprob"].as_f64().unwrap().exp()).sum();
    assert!((sum - 1.0).abs() < 1e-5, "label probabilities sum to {sum}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let (st, v, _) = call(&s.app, "POST", "/v1/completions", r#"{"model": "tiny-pez", "prompt": ["the film is great", "a bad movie"], "logprobs": 2}"#).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], label);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][0]["logprobs"]["tokens"][0], label);
    assert_eq!(v["choices"][0]["logprobs"]["top_logprobs"][0].as_object().unwrap().len(), 2);

    let (st, v, _) = call(&s.app, "GET", "/health", "").await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn errors_in_openai_shape() {
    let s = server(64);
    let cases: &[(&str, &str, StatusCode, &str)] = &[
        ("/v1/classify", r#"{"model": "tiny-pez", "input": "x""#, StatusCode::BAD_REQUEST, "invalid JSON"),
        ("/v1/classify", r#"["not", "an", "object"]"#, StatusCode::BAD_REQUEST, "JSON object"),
        ("/v1/classify", r#"{"input": "x"}"#, StatusCode::BAD_REQUEST, "missing required field `model`"),
        ("/v1/classify", r#"{"model": "tiny-pez"}"#, StatusCode::BAD_REQUEST, "missing field `input`"),
        ("/v1/classify", r#"{"model": "tiny-pez", "input": ""}"#, StatusCode::BAD_REQUEST, "empty"),
        ("/v1/classify", r#"{"model": "tiny-pez", "input": []}"#, StatusCode::BAD_REQUEST, "empty"),
        ("/v1/classify", r#"{"model": "tiny-pez", "input": ["ok", "  "]}"#, StatusCode::BAD_REQUEST, "`input` 1 is empty"),
        ("/v1/classify", r#"{"model": "tiny-pez", "input": [1, 2]}"#, StatusCode::BAD_REQUEST, "array of strings"),
        ("/v1/classify", r#"{"model": "nope", "input": "x"}"#, StatusCode::NOT_FOUND, "does not exist"),
        ("/v1/classify", r#"{"model": "tiny-gpt2", "input": "x"}"#, StatusCode::BAD_REQUEST, "is a base model: give `template`"),
        ("/v1/classify", r#"{"model": "tiny-gpt2", "input": "x", "template": " It was", "verbalizers": [" good"]}"#, StatusCode::BAD_REQUEST, "two verbalizers"),
        ("/v1/chat/completions", r#"{"model": "tiny-pez"}"#, StatusCode::BAD_REQUEST, "messages"),
        ("/v1/chat/completions", r#"{"model": "tiny-pez", "messages": [{"role": "system", "content": "x"}]}"#, StatusCode::BAD_REQUEST, "no user message"),
        ("/v1/chat/completions", r#"{"model": "tiny-pez", "messages": [{"role": "user", "content": ""}]}"#, StatusCode::BAD_REQUEST, "empty"),
        ("/v1/chat/completions", r#"{"model": "nope", "messages": []}"#, StatusCode::NOT_FOUND, "does not exist"),
        ("/v1/chat/completions", r#"{"model": "tiny-gpt2", "messages": [{"role": "user", "content": "hi"}]}"#, StatusCode::BAD_REQUEST, "classification only"),
        ("/v1/completions", r#"{"model": "tiny-pez", "prompt": ""}"#, StatusCode::BAD_REQUEST, "empty"),
        ("/v1/nothing", r#"{}"#, StatusCode::NOT_FOUND, "no such route"),
    ];
    for (path, body, want, msg) in cases {
        let (st, v, _) = call(&s.app, "POST", path, body).await;
        assert_eq!(st, *want, "{path} {body}: {v}");
        let m = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{path} {body}: not an OpenAI error: {v}"));
        assert!(m.contains(msg), "{path} {body}: {m:?} does not say {msg:?}");
        assert!(v["error"]["type"].is_string());
    }
}

/// A text longer than the context is truncated as `pez eval` does (its start kept, prompt and template intact).
#[tokio::test]
async fn long_input_is_truncated_like_pez_eval() {
    let s = server(64);
    let info = &s.state.pool.classifiers["tiny-pez"];
    let long = "the film is great ".repeat(info.max_text_tokens); // 4x the room
    let (st, v, _) = call(&s.app, "POST", "/v1/classify", &json!({"model": "tiny-pez", "input": [long.clone(), "a bad movie"]}).to_string()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["truncated"], true);
    assert_eq!(v["data"][1]["truncated"], false);
    let lm = pez_models::load_lm(fixtures().join("gpt2").to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let p = Prompted::new(&lm, LearnedPrompt::from_artifact(&s.runs.path().join("tiny-pez"), &lm).unwrap()).unwrap();
    let pez_classify::Predictions { labels: pred, probs } = p.predict(&[long], 1).unwrap();
    assert_eq!(v["data"][0]["label_index"], pred[0]);
    assert!((v["data"][0]["probs"]["negative"].as_f64().unwrap() - probs[0][0] as f64).abs() < 1e-5);
    let used = v["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    assert!(used <= 2 * lm.model.info().max_positions, "rows fit the context");
}

/// With every permit taken, requests get 429 with Retry-After; /health and /v1/models still answer.
#[tokio::test]
async fn saturated_server_answers_429() {
    let s = server(2);
    let held = s.state.limiter.clone().acquire_many_owned(2).await.unwrap();
    let (st, v, retry) = call(&s.app, "POST", "/v1/classify", r#"{"model": "tiny-pez", "input": "x"}"#).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(v["error"]["type"], "rate_limit_exceeded");
    assert_eq!(call(&s.app, "GET", "/health", "").await.0, StatusCode::OK);
    drop(held);
    let (st, _, _) = call(&s.app, "POST", "/v1/classify", r#"{"model": "tiny-pez", "input": "the film is great"}"#).await;
    assert_eq!(st, StatusCode::OK);
}

/// `pez transfer` with pez-serve as an endpoint target gives the same per-example results as the in-process
/// target for the same model (a real server on a loopback port, ad-hoc classifiers in the requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_endpoint_equals_in_process() {
    let s = server(64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = s.app.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let runs = s.runs.path().to_path_buf();
    let model = fixtures().join("gpt2").to_string_lossy().into_owned();
    let (local, remote) = tokio::task::spawn_blocking(move || {
        let task = fixtures().join("task.toml");
        let grid = pez_transfer::Grid::new(task.to_str().unwrap(), &[runs], 5, None).unwrap();
        let local = grid.score_model(&model, 8, pez_classify::Calibration::None, &mut |_| {}).unwrap();
        let ep = pez_transfer::endpoint::Endpoint::new(&format!("{url}/v1"), "tiny-gpt2", pez_transfer::endpoint::Api::Pez).unwrap();
        let remote = grid.score_endpoint(&ep, &mut |_| {}).unwrap();
        (local, remote)
    })
    .await
    .unwrap();
    assert_eq!(local.len(), 3, "empty template + two prompts");
    assert_eq!(local.len(), remote.len());
    for (l, r) in local.iter().zip(&remote) {
        assert_eq!((&l.method, &l.prompt), (&r.method, &r.prompt));
        assert_eq!(l.correct, r.correct, "{} {:?}", l.method, l.prompt);
        assert_eq!(l.accuracy, r.accuracy);
        eprintln!("{} {:?}: in-process {:.4}, endpoint {:.4}", l.method, l.prompt, l.accuracy, r.accuracy);
    }
}
