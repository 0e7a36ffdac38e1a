//! The API on a tiny random GPT-2 (word-level tokenizer) without the mistral.rs engine: labels equal
//! `pez eval`'s predictions, OpenAI response and error shapes, truncation, 429 when saturated.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use candle_core::{DType, Device};
use http_body_util::BodyExt;
use pez_classify::{Ensemble, LearnedPrompt, Predictor, Prompted};
use pez_serve::config::BaseInfo;
use pez_serve::config::{BaseModel, ClassifierEntry, Limits, ServeConfig};
use pez_serve::metrics::Metrics;
use pez_serve::state::AppState;
use pez_serve::{router, ClassifierPool};
use pez_tasks::TaskSpec;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use tower::ServiceExt;

fn fixtures() -> PathBuf {
    pez_models::testing::fixtures().join("transfer")
}

fn write_artifact(dir: &Path, prompt: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let a = pez_config::PromptArtifact {
        format: 1,
        prompt: prompt.into(),
        token_ids: vec![],
        method: pez_core::Method::Pez,
        source_model: "tiny".into(),
        task: "tiny-sst2".into(),
        prompt_format: pez_tasks::PromptFormat::polarity(),
        calibration: Default::default(),
        holdout_accuracy: Some(0.9),
        dev_accuracy: None,
        dev_per_class: None,
        fluency_log_ppl: None,
        step: 1,
        seed: 0,
        config: pez_config::TuneSettings::default()
            .resolve(&candle_core::Device::Cpu)
            .unwrap(),
    };
    a.write(&dir.join("prompt.json")).unwrap();
}

/// An ensemble of the `tiny-pez` prompt and another in `dir`: its ensemble.json and the second member's run.
fn write_ensemble(dir: &Path) {
    write_artifact(&dir.join("m2"), "terrible awful good");
    let member = |file: &str, prompt: &str| pez_config::Member {
        prompt_file: file.into(),
        seed: 0,
        prompt: prompt.into(),
        holdout_accuracy: Some(0.9),
        dev_accuracy: None,
    };
    let e = pez_config::EnsembleArtifact {
        format: 1,
        kind: "ensemble".into(),
        task: "tiny-sst2".into(),
        source_model: "tiny".into(),
        combine: pez_config::Combine::MeanLogprob,
        calibration: Default::default(),
        members: vec![
            member("../tiny-pez/prompt.json", "film great bad movie"),
            member("m2/prompt.json", "terrible awful good"),
        ],
        dev_accuracy: None,
        dev_per_class: None,
    };
    e.write(&dir.join("ensemble.json")).unwrap();
}

/// Labels and label probabilities as `pez eval` computes them.
fn predict(p: &dyn Predictor, texts: &[&str], batch: usize) -> (Vec<usize>, Vec<Vec<f32>>) {
    let s = p.score(texts, batch, &mut |_| {}).unwrap();
    (
        s.iter().map(|x| x.label).collect(),
        s.iter().map(|x| x.logprobs.iter().map(|l| l.exp()).collect()).collect(),
    )
}

struct Server {
    app: axum::Router,
    state: AppState,
    runs: tempfile::TempDir,
}

fn server(max_concurrency: usize) -> Server {
    server_with(max_concurrency, Limits::default())
}

fn server_with(max_concurrency: usize, limits: Limits) -> Server {
    let runs = tempfile::tempdir().unwrap();
    write_artifact(&runs.path().join("tiny-pez"), "film great bad movie");
    write_artifact(&runs.path().join("tiny-empty"), "");
    write_ensemble(&runs.path().join("tiny-ensemble"));
    let model = fixtures().join("gpt2").to_string_lossy().into_owned();
    let cfg = ServeConfig {
        host: "127.0.0.1".into(),
        port: 0,
        max_concurrency,
        max_batch: 32,
        models: vec![BaseModel {
            name: "tiny-gpt2".into(),
            path: Some(model),
            generate: Some(false),
            dtype: Some(pez_nn::Dtype::F32),
            device: None,
        }],
        classifiers: ["tiny-pez", "tiny-empty", "tiny-ensemble"]
            .iter()
            .map(|n| ClassifierEntry {
                name: None,
                prompt: runs.path().join(n),
                base: None,
            })
            .collect(),
        limits,
        fetch_missing: false,
        state_dir: None,
        auth: Default::default(),
        tuning: Default::default(),
    };
    cfg.validate().unwrap();
    let metrics = std::sync::Arc::new(Metrics::default());
    let pool = std::sync::Arc::new(ClassifierPool::start(&cfg, metrics.clone()).unwrap());
    let state = AppState::new(
        pool,
        None,
        vec![BaseInfo {
            name: "tiny-gpt2".into(),
            generate: false,
        }],
        max_concurrency,
        cfg.limits.clone(),
        metrics,
    );
    Server {
        app: router(state.clone()),
        state,
        runs,
    }
}

async fn call(app: &axum::Router, method: &str, path: &str, body: &str) -> (StatusCode, Value, Option<String>) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), retry)
}

/// Labels and label log-probabilities from the server equal `pez eval`'s (`Ensemble` as a `Predictor`) on the same
/// model and prompt, for the tiny dev set and for every SST-2 dev sentence (on the tiny model): a prompt, the
/// empty template and an ensemble of two prompts.
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
    for name in ["tiny-pez", "tiny-empty", "tiny-ensemble"] {
        let p = Ensemble::load(&s.runs.path().join(name), &lm, None).unwrap();
        let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
        let (pred, probs) = predict(&p, &texts, 32);
        let (st, v, _) = call(
            &s.app,
            "POST",
            "/v1/classify",
            &json!({"model": name, "input": texts}).to_string(),
        )
        .await;
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
        eprintln!(
            "{name}: {} labels equal, max |p_server - p_eval| = {worst:.2e}",
            data.len()
        );
        assert!(worst < 1e-5);
    }
}

#[tokio::test]
async fn openai_shapes() {
    let s = server(64);
    let (st, v, _) = call(&s.app, "GET", "/v1/models", "").await;
    assert_eq!(st, StatusCode::OK);
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["tiny-gpt2", "tiny-empty", "tiny-ensemble", "tiny-pez"]);
    assert_eq!(v["data"][3]["labels"], json!(["negative", "positive"]));
    // What a text costs: one forward pass per prompt, an ensemble's members best first.
    assert_eq!(v["data"][3]["prompts"], json!(["film great bad movie"]));
    assert_eq!(
        v["data"][2]["prompts"],
        json!(["film great bad movie", "terrible awful good"])
    );
    assert_eq!(v["data"][2]["prompt"], "film great bad movie");
    // One model by id, as the official client's models.retrieve asks for it; an unknown id is a 404.
    let (st, m, _) = call(&s.app, "GET", "/v1/models/tiny-pez", "").await;
    assert_eq!(st, StatusCode::OK, "{m}");
    assert_eq!(m, v["data"][3]);
    let (st, e, _) = call(&s.app, "GET", "/v1/models/nope", "").await;
    assert_eq!(
        (st, e["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("model_not_found"))
    );

    let (_, c, _) = call(
        &s.app,
        "POST",
        "/v1/classify",
        r#"{"model": "tiny-pez", "input": "the film is great"}"#,
    )
    .await;
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

    let (st, v, _) = call(
        &s.app,
        "POST",
        "/v1/completions",
        r#"{"model": "tiny-pez", "prompt": ["the film is great", "a bad movie"], "logprobs": 2}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], label);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][0]["logprobs"]["tokens"][0], label);
    assert_eq!(
        v["choices"][0]["logprobs"]["top_logprobs"][0]
            .as_object()
            .unwrap()
            .len(),
        2
    );

    let (st, v, _) = call(&s.app, "GET", "/health", "").await;
    assert_eq!((st, v["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn classify_errors_in_openai_shape() {
    let s = server(64);
    let cases: &[(&str, &str, StatusCode, &str)] = &[
        (
            "/v1/classify",
            r#"{"model": "tiny-pez", "input": "x""#,
            StatusCode::BAD_REQUEST,
            "invalid JSON",
        ),
        (
            "/v1/classify",
            r#"["not", "an", "object"]"#,
            StatusCode::BAD_REQUEST,
            "JSON object",
        ),
        (
            "/v1/classify",
            r#"{"input": "x"}"#,
            StatusCode::BAD_REQUEST,
            "missing required field `model`",
        ),
        (
            "/v1/classify",
            r#"{"model": "tiny-pez"}"#,
            StatusCode::BAD_REQUEST,
            "missing required field `input`",
        ),
        (
            "/v1/classify",
            r#"{"model": "tiny-pez", "input": ""}"#,
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "/v1/classify",
            r#"{"model": "tiny-pez", "input": []}"#,
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "/v1/classify",
            r#"{"model": "tiny-pez", "input": ["ok", "  "]}"#,
            StatusCode::BAD_REQUEST,
            "`input` 1 is empty",
        ),
        (
            "/v1/classify",
            r#"{"model": "tiny-pez", "input": [1, 2]}"#,
            StatusCode::BAD_REQUEST,
            "array of strings",
        ),
        (
            "/v1/classify",
            r#"{"model": "nope", "input": "x"}"#,
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            "/v1/classify",
            r#"{"model": "tiny-gpt2", "input": "x"}"#,
            StatusCode::BAD_REQUEST,
            "is a base model: give `template`",
        ),
        (
            "/v1/classify",
            r#"{"model": "tiny-gpt2", "input": "x", "template": " It was", "verbalizers": [" good"]}"#,
            StatusCode::BAD_REQUEST,
            "two verbalizers",
        ),
    ];
    expect_errors(&s, cases).await;
}

#[tokio::test]
async fn chat_and_completion_errors_in_openai_shape() {
    let s = server(64);
    let cases: &[(&str, &str, StatusCode, &str)] = &[
        (
            "/v1/chat/completions",
            r#"{"model": "tiny-pez"}"#,
            StatusCode::BAD_REQUEST,
            "messages",
        ),
        (
            "/v1/chat/completions",
            r#"{"model": "tiny-pez", "messages": [{"role": "system", "content": "x"}]}"#,
            StatusCode::BAD_REQUEST,
            "no user message",
        ),
        (
            "/v1/chat/completions",
            r#"{"model": "tiny-pez", "messages": [{"role": "user", "content": ""}]}"#,
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            "/v1/chat/completions",
            r#"{"model": "nope", "messages": []}"#,
            StatusCode::NOT_FOUND,
            "does not exist",
        ),
        (
            "/v1/chat/completions",
            r#"{"model": "tiny-gpt2", "messages": [{"role": "user", "content": "hi"}]}"#,
            StatusCode::BAD_REQUEST,
            "classification only",
        ),
        (
            "/v1/completions",
            r#"{"model": "tiny-pez", "prompt": ""}"#,
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        ("/v1/nothing", r#"{}"#, StatusCode::NOT_FOUND, "no such route"),
    ];
    expect_errors(&s, cases).await;
}

/// Each POST `(path, body)` answers `want` with an OpenAI error whose message says `msg`.
async fn expect_errors(s: &Server, cases: &[(&str, &str, StatusCode, &str)]) {
    for (path, body, want, msg) in cases {
        let (st, v, _) = call(&s.app, "POST", path, body).await;
        assert_eq!(st, *want, "{path} {body}: {v}");
        let m = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{path} {body}: not an OpenAI error: {v}"));
        assert!(m.contains(msg), "{path} {body}: {m:?} does not say {msg:?}");
        assert!(v["error"]["type"].is_string());
    }
}

/// A text longer than the context is truncated as `pez eval` does (its start kept, prompt and template intact).
#[tokio::test]
async fn long_input_is_truncated_like_pez_eval() {
    let s = server(64);
    let info = s.state.pool.get("tiny-pez").unwrap();
    let long = "the film is great ".repeat(info.max_text_tokens); // 4x the room
    let (st, v, _) = call(
        &s.app,
        "POST",
        "/v1/classify",
        &json!({"model": "tiny-pez", "input": [long.clone(), "a bad movie"]}).to_string(),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["data"][0]["truncated"], true);
    assert_eq!(v["data"][1]["truncated"], false);
    let lm = pez_models::load_lm(fixtures().join("gpt2").to_str().unwrap(), DType::F32, &Device::Cpu).unwrap();
    let p = Prompted::new(
        &lm,
        LearnedPrompt::from_artifact(&s.runs.path().join("tiny-pez"), &lm).unwrap(),
    )
    .unwrap();
    let (pred, probs) = predict(&p, &[long.as_str()], 1);
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
    let (st, _, _) = call(
        &s.app,
        "POST",
        "/v1/classify",
        r#"{"model": "tiny-pez", "input": "the film is great"}"#,
    )
    .await;
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
        let local = grid
            .score_model(
                &model,
                (&candle_core::Device::Cpu, pez_nn::Dtype::F32),
                8,
                pez_tasks::Calibration::None,
                &mut |_| {},
            )
            .unwrap();
        let ep =
            pez_classify::endpoint::Endpoint::new(&format!("{url}/v1"), "tiny-gpt2", pez_classify::endpoint::Api::Pez)
                .unwrap();
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
        eprintln!(
            "{} {:?}: in-process {:.4}, endpoint {:.4}",
            l.method, l.prompt, l.accuracy, r.accuracy
        );
    }
}

async fn call_raw(app: &axum::Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

/// Limits are refused before any work, in OpenAI's shape with the field named; long texts are cut to
/// `max_text_tokens`.
#[tokio::test]
async fn limits_are_refused_in_openai_shape() {
    let limits = Limits {
        max_body_bytes: 2000,
        max_inputs: 3,
        max_text_tokens: 4,
        max_content_parts: 2,
        ..Limits::default()
    };
    let s = server_with(64, limits);
    let cases: &[(&str, String, StatusCode, &str, Option<&str>)] = &[
        ("/v1/classify", json!({"model": "tiny-pez", "input": ["a", "b", "c", "d"]}).to_string(), StatusCode::BAD_REQUEST, "at most 3", Some("input")),
        ("/v1/classify", json!({"model": "tiny-pez", "input": "x".repeat(3000)}).to_string(), StatusCode::PAYLOAD_TOO_LARGE, "larger than 2000 bytes", None),
        ("/v1/chat/completions", json!({"model": "tiny-pez", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}, {"type": "text", "text": "c"}]}]}).to_string(), StatusCode::BAD_REQUEST, "at most 2", Some("messages[0].content")),
        ("/v1/chat/completions", json!({"model": "tiny-pez", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]}).to_string(), StatusCode::BAD_REQUEST, "text only", Some("messages[0].content")),
        ("/v1/chat/completions", json!({"model": "tiny-pez", "messages": [{"role": "user", "content": null}]}).to_string(), StatusCode::BAD_REQUEST, "null", Some("messages[0].content")),
        ("/v1/chat/completions", json!({"model": "tiny-pez", "messages": []}).to_string(), StatusCode::BAD_REQUEST, "empty", Some("messages")),
        ("/v1/chat/completions", json!({"model": "tiny-pez", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}).to_string(), StatusCode::BAD_REQUEST, "boolean", Some("stream")),
    ];
    for (path, body, want, msg, param) in cases {
        let (st, v, _) = call(&s.app, "POST", path, body).await;
        assert_eq!(st, *want, "{path} {body:.200}: {v}");
        let m = v["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("not an OpenAI error: {v}"));
        assert!(m.contains(msg), "{m:?} does not say {msg:?}");
        assert_eq!(v["error"]["param"].as_str(), *param, "{v}");
    }
    // A refused body may be left unread: the answer closes the connection so a pooling client does not reuse it
    // (any error to a request with a body; a bodiless request's error keeps the connection).
    let req = Request::post("/v1/classify")
        .header("content-type", "application/json")
        .body(Body::from("x".repeat(3000)))
        .unwrap();
    let (st, headers, _) = call_raw(&s.app, req).await;
    assert_eq!(
        (st, headers.get("connection").map(|v| v.to_str().unwrap())),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("close"))
    );
    let (st, headers, _) = call_raw(&s.app, Request::get("/v1/models/none").body(Body::empty()).unwrap()).await;
    assert_eq!((st, headers.get("connection")), (StatusCode::NOT_FOUND, None));
    // A GET to a POST route is a 405 in the same shape.
    let (st, v, _) = call(&s.app, "GET", "/v1/classify", "").await;
    assert_eq!(
        (st, v["error"]["type"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("invalid_request_error")),
        "{v}"
    );
    // Cut to 4 text tokens: the usage counts prompt + 4 + template tokens.
    let (st, v, _) = call(
        &s.app,
        "POST",
        "/v1/classify",
        r#"{"model": "tiny-empty", "input": ["the film is great the film is great", "bad"]}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(
        (v["data"][0]["truncated"].as_bool(), v["data"][1]["truncated"].as_bool()),
        (Some(true), Some(false))
    );
    let info = s.state.pool.get("tiny-empty").unwrap();
    assert_eq!(info.max_text_tokens, 4);
    let template = pez_hub::tokenizer::encode(
        &pez_models::load_lm(fixtures().join("gpt2").to_str().unwrap(), DType::F32, &Device::Cpu)
            .unwrap()
            .tokenizer,
        " It was",
    )
    .unwrap()
    .len();
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() as usize,
        (4 + template) + (1 + template)
    );
}

/// A body that stops arriving gets a 408 once `body_timeout_s` passes (it does not hold a permit meanwhile).
#[tokio::test]
async fn stalled_body_is_a_408() {
    let s = server_with(
        1,
        Limits {
            body_timeout_s: 1,
            ..Limits::default()
        },
    );
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tx.send(Ok(axum::body::Bytes::from_static(b"{\"model\": \"tiny-pez\", ")))
        .await
        .unwrap();
    let body = Body::from_stream(tokio_stream_from(rx));
    let req = Request::builder()
        .method("POST")
        .uri("/v1/classify")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let slow = tokio::spawn({
        let app = s.app.clone();
        async move { call_raw(&app, req).await }
    });
    // Meanwhile the only permit is free for a real request.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (st, _, _) = call(
        &s.app,
        "POST",
        "/v1/classify",
        r#"{"model": "tiny-pez", "input": "the film is great"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, body) = slow.await.unwrap();
    drop(tx);
    assert_eq!(st, StatusCode::REQUEST_TIMEOUT, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("within 1 s"), "{v}");
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `stream: true` on a classifier: one chunk with the label, then [DONE]; `x-request-id` echoed; /metrics counts.
#[tokio::test]
async fn streaming_and_request_ids() {
    let s = server(64);
    let chat = json!({"model": "tiny-pez", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "the film is great"}]});
    let req = Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("x-request-id", "probe-42")
        .body(Body::from(chat.to_string()))
        .unwrap();
    let (st, headers, body) = call_raw(&s.app, req).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(headers["x-request-id"], "probe-42");
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events: Vec<&str> = body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap())
        .collect();
    assert_eq!(events.len(), 3, "{body}");
    assert_eq!(events[2], "[DONE]");
    let chunk: Value = serde_json::from_str(events[0]).unwrap();
    let (_, c, _) = call(
        &s.app,
        "POST",
        "/v1/classify",
        r#"{"model": "tiny-pez", "input": "the film is great"}"#,
    )
    .await;
    assert_eq!(chunk["object"], "chat.completion.chunk");
    assert_eq!(chunk["choices"][0]["delta"]["content"], c["data"][0]["label"]);
    assert_eq!(chunk["choices"][0]["finish_reason"], "stop");
    let usage: Value = serde_json::from_str(events[1]).unwrap();
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let (st, _, body) = call_raw(
        &s.app,
        Request::builder()
            .method("POST")
            .uri("/v1/completions")
            .body(Body::from(
                r#"{"model": "tiny-pez", "stream": true, "prompt": ["a", "b"]}"#,
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body.matches("data: ").count(), 3, "{body}");

    // Our own id when the client gives none (or an unusable one).
    let (_, headers, _) = call_raw(
        &s.app,
        Request::builder()
            .uri("/v1/models")
            .header("x-request-id", "bad id\twith tab")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(headers["x-request-id"].to_str().unwrap().starts_with("req-"));
}

/// Metrics count requests by route pattern (never the raw path), served model ("-" for a name that is none) and
/// status.
#[tokio::test]
async fn metrics_label_routes_and_served_models() {
    let s = server(64);
    let chat = json!({"model": "tiny-pez", "messages": [{"role": "user", "content": "the film is great"}]});
    let (st, _, _) = call(&s.app, "POST", "/v1/chat/completions", &chat.to_string()).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _, _) = call(
        &s.app,
        "POST",
        "/v1/classify",
        r#"{"model": "tiny-pez", "input": "the film is great"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK);

    let _ = call(
        &s.app,
        "POST",
        "/v1/classify",
        r#"{"model": "no-such-model", "input": "x"}"#,
    )
    .await;
    let _ = call_raw(
        &s.app,
        Request::builder()
            .uri("/v1/models/tiny-pez")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let _ = call_raw(
        &s.app,
        Request::builder().uri("/no/such/route").body(Body::empty()).unwrap(),
    )
    .await;
    let (st, _, text) = call_raw(&s.app, Request::builder().uri("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    assert!(
        text.contains(r#"pez_requests_total{route="/v1/chat/completions",model="tiny-pez",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pez_requests_total{route="/v1/classify",model="-",status="404"} 1"#),
        "unknown model names are not labels: {text}"
    );
    assert!(
        text.contains(r#"pez_request_duration_seconds_bucket{le="+Inf",route="/v1/classify"} 2"#),
        "{text}"
    );
    // Routes are labelled by their pattern, never by the raw path.
    assert!(
        text.contains(r#"pez_requests_total{route="/v1/models/{id}",model="-",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"pez_requests_total{route="other",model="-",status="404"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("/no/such/route") && !text.contains("/v1/models/tiny-pez"),
        "{text}"
    );
    assert!(text.contains("pez_classifier_batch_texts_count "), "{text}");
    let rss: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1e6, "{rss}");
}

/// One request of many texts does not hold up a one-text request behind it (batches are drawn from every
/// waiting request in turn), and texts of a request whose client has gone are dropped unscored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_requests_interleave_and_abandoned_work_stops() {
    let s = server_with(
        64,
        Limits {
            max_inputs: 100_000,
            ..Limits::default()
        },
    );
    let many: Vec<String> = (0..3000).map(|i| format!("the film number {i} is great")).collect();
    let pool = s.state.pool.clone();
    let c = pool.get("tiny-pez").unwrap();
    let big = tokio::spawn({
        let (pool, many, c) = (pool.clone(), many.clone(), c.clone());
        async move {
            pool.classify(&c, many).await.unwrap();
            std::time::Instant::now()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    pool.classify(&c, vec!["a bad movie".into()]).await.unwrap();
    let small_done = std::time::Instant::now();
    let big_done = big.await.unwrap();
    assert!(
        small_done < big_done,
        "the one-text request waited for the 3000-text one"
    );

    // Abandoned: the future is dropped after 20 ms; the worker drops the rest.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(20), pool.classify(&c, many.clone())).await;
    let t0 = std::time::Instant::now();
    let cancelled = loop {
        let text = s.state.metrics.render();
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("pez_cancelled_texts_total "))
            .unwrap()
            .parse()
            .unwrap();
        if n > 0 || t0.elapsed().as_secs() > 10 {
            break n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(cancelled > 0 && cancelled <= 3000, "{cancelled} texts dropped");
    // The worker is still there.
    assert_eq!(pool.classify(&c, vec!["a bad movie".into()]).await.unwrap().len(), 1);
    assert!(pool.dead_workers().is_empty());
}

/// Base-model generation requests are checked (and made plain) before mistral.rs sees them; a refusal names the
/// field, whether the body does not parse as the request type or a check refuses it.
#[test]
fn generation_requests_are_checked_before_mistral_rs() {
    use pez_serve::requests::{parse, ChatRequest, CompletionRequest};
    use pez_serve::validate::{chat_request, completion_request};
    let l = Limits::default();
    let chat = |mut v: Value| -> Result<ChatRequest, pez_serve::error::ApiError> {
        v["model"] = json!("m");
        let mut r: ChatRequest = parse(&axum::body::Bytes::from(v.to_string()))?;
        chat_request(&mut r, &l).map(|_| r)
    };
    let completion = |mut v: Value| -> Result<CompletionRequest, pez_serve::error::ApiError> {
        v["model"] = json!("m");
        let mut r: CompletionRequest = parse(&axum::body::Bytes::from(v.to_string()))?;
        completion_request(&mut r, &l).map(|_| r)
    };
    let user = json!([{"role": "user", "content": "hi"}]);
    let refused = [
        (json!({"messages": user, "max_tokens": 0}), "max_tokens"),
        (json!({"messages": user, "max_tokens": 1_000_000_000u64}), "max_tokens"),
        (
            json!({"messages": user, "max_completion_tokens": 100_000}),
            "max_completion_tokens",
        ),
        (json!({"messages": user, "n": 1000}), "n"),
        (json!({"messages": user, "temperature": -1}), "temperature"),
        (json!({"messages": user, "temperature": 3}), "temperature"),
        (json!({"messages": user, "top_p": 0}), "top_p"),
        (json!({"messages": user, "repetition_penalty": 0}), "repetition_penalty"),
        (json!({"messages": user, "presence_penalty": 5}), "presence_penalty"),
        (json!({"messages": user, "top_logprobs": 50}), "top_logprobs"),
        (json!({"messages": user, "stop": ["a", "b", "c", "d", "e"]}), "stop"),
        (
            json!({"messages": user, "grammar": {"type": "regex", "value": "("}}),
            "grammar",
        ),
        (
            json!({"messages": user, "web_search_options": {}}),
            "web_search_options",
        ),
        (json!({"messages": []}), "messages"),
        (json!({"messages": "hello"}), "messages"),
        (
            json!({"messages": [{"role": "user", "content": null}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": "http://127.0.0.1/x"}}]}]}),
            "messages[0].content",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_data": "x"}}]}]}),
            "messages[0].content",
        ),
        (json!({"messages": [{"role": "wizard", "content": "x"}]}), "messages"),
        (json!({"messages": [{"content": "x"}]}), "messages"),
        (json!({"messages": user, "logprobs": "yes"}), "logprobs"),
    ];
    for (v, param) in refused {
        let e = chat(v.clone()).expect_err(&v.to_string());
        assert_eq!(
            (e.status(), e.param()),
            (StatusCode::BAD_REQUEST, Some(param)),
            "{v}: {e:?}"
        );
    }
    // Text parts become one string; max_tokens defaults to the limit; unknown fields travel on unchanged.
    let r = chat(json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hello."}]}], "seed": 7})).unwrap();
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["messages"][0]["content"], "Say hello.");
    assert_eq!(
        (v["max_tokens"].as_u64(), v["seed"].as_u64()),
        (Some(l.max_tokens as u64), Some(7))
    );
    let v = serde_json::to_value(chat(json!({"messages": user, "max_completion_tokens": 8})).unwrap()).unwrap();
    assert_eq!(
        (v["max_tokens"].as_u64(), v.get("max_completion_tokens")),
        (Some(8), None)
    );
    for v in [
        json!({"prompt": ["a", "b"]}),
        json!({"prompt": ""}),
        json!({}),
        json!({"prompt": "x", "logprobs": 9}),
        json!({"prompt": "x", "best_of": 99}),
    ] {
        assert!(completion(v.clone()).is_err(), "{v}");
    }
    let v = serde_json::to_value(completion(json!({"prompt": "Once upon a time", "max_tokens": 16})).unwrap()).unwrap();
    assert_eq!(v["max_tokens"], 16);
}

/// mistral.rs's answers in OpenAI's shape: `top_logprobs` entries (mistral.rs: `token` an id, `bytes` the text)
/// as text and UTF-8 bytes; completions' logprobs in the legacy layout, offsets in characters carried across a
/// stream's chunks; the model named as requested.
#[test]
fn engine_answers_in_openai_shape() {
    use mistralrs_core::{CompletionChunkChoice, CompletionChunkResponse, ResponseLogprob, TopLogprob};
    use pez_serve::engine::compat;
    let entry = |t: &str, lp: f32, alt: &str| ResponseLogprob {
        token: t.into(),
        logprob: lp,
        bytes: Some(t.as_bytes().to_vec()),
        top_logprobs: vec![
            TopLogprob {
                token: 19556,
                logprob: lp,
                bytes: Some(t.into()),
            },
            TopLogprob {
                token: 26843,
                logprob: lp - 1.0,
                bytes: Some(alt.into()),
            },
        ],
    };
    let chunk = |text: &str, e: ResponseLogprob| CompletionChunkResponse {
        id: "c".into(),
        choices: vec![CompletionChunkChoice {
            text: text.into(),
            index: 0,
            logprobs: Some(e),
            finish_reason: None,
        }],
        created: 1,
        model: "/models/smollm2.gguf".into(),
        system_fingerprint: "local".into(),
        object: "text_completion".into(),
    };
    let mut offsets = Vec::new();
    let first = compat::completion_chunk(chunk(" an", entry(" an", -1.5, " a")), "smol", &mut offsets);
    let second = compat::completion_chunk(chunk(" épée", entry(" épée", -2.0, " x")), "smol", &mut offsets);
    let third = compat::completion_chunk(chunk("!", entry("!", -0.5, "?")), "smol", &mut offsets);
    let v: Vec<Value> = [first, second, third]
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(v[0]["model"], "smol");
    assert_eq!(
        v[0]["choices"][0]["logprobs"],
        json!({"tokens": [" an"], "token_logprobs": [-1.5], "top_logprobs": [{" an": -1.5, " a": -2.5}], "text_offset": [0]})
    );
    assert_eq!(v[1]["choices"][0]["logprobs"]["text_offset"], json!([3]));
    assert_eq!(
        v[2]["choices"][0]["logprobs"],
        json!({"tokens": ["!"], "token_logprobs": [-0.5], "top_logprobs": [{"!": -0.5, "?": -1.5}], "text_offset": [8]})
    );
    // A whole completion's entries: offsets from 0, in the same layout.
    let l = compat::completion_logprobs(&[entry(" an", -1.5, " a"), entry(" épée", -2.0, " x")], &mut 0);
    assert_eq!((l.tokens.len(), l.text_offset.clone()), (2, vec![0, 3]));
    // Chat: each top entry's token is its text, its bytes the text's UTF-8 bytes.
    let chat = compat::chat_chunk(
        mistralrs_core::ChatCompletionChunkResponse {
            id: "c".into(),
            choices: vec![mistralrs_core::ChunkChoice {
                finish_reason: Some("stop".into()),
                index: 0,
                delta: mistralrs_core::Delta {
                    content: Some(" Hi".into()),
                    role: "assistant".into(),
                    tool_calls: None,
                    reasoning_content: None,
                },
                logprobs: Some(entry(" Hi", -0.26, "Hello")),
            }],
            created: 1,
            model: "x".into(),
            system_fingerprint: "local".into(),
            object: "chat.completion.chunk".into(),
            usage: None,
        },
        "smol",
    );
    let v = serde_json::to_value(&chat).unwrap();
    let top = &v["choices"][0]["logprobs"]["content"][0]["top_logprobs"];
    assert_eq!(
        top[0],
        json!({"token": " Hi", "logprob": -0.25999999046325684, "bytes": [32, 72, 105]})
    );
    assert_eq!(
        (top[1]["token"].as_str(), &top[1]["bytes"]),
        (Some("Hello"), &json!([72, 101, 108, 108, 111]))
    );
    assert_eq!(v["model"], "smol");
}
