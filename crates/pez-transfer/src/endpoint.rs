//! Targets behind an HTTP endpoint: `pez-serve` (its `/v1/classify` with the classifier in the request, the same
//! numbers as the in-process target) or any OpenAI-compatible server (`/v1/completions` with `max_tokens: 1` and
//! `logprobs`, reading the verbalizers among the returned alternatives).

use anyhow::{bail, Context, Result};
use pez_tasks::{Example, TaskSpec};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// pez-serve's `/v1/classify` on a base model with `prompt`, `template` and `verbalizers` in the request.
    Pez,
    /// `/v1/completions` of any OpenAI-compatible server: one request per example, `prompt + text + template` as
    /// one string (the server tokenizes it whole), the label whose verbalizer has the highest log-probability
    /// among the top 20 alternatives; a verbalizer not among them counts as -inf.
    Openai,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Base URL, e.g. `http://127.0.0.1:8080` (a trailing `/v1` is accepted).
    pub url: String,
    pub model: String,
    pub api: Api,
}

impl Endpoint {
    pub fn new(url: &str, model: &str, api: Api) -> Self {
        let url = url.trim_end_matches('/').trim_end_matches("/v1").to_string();
        Self { url, model: model.into(), api }
    }

    /// The name this target gets in tables.
    pub fn label(&self) -> String {
        format!("{}@{}", self.model, self.url)
    }

    /// Predicted label per example, in data order.
    pub fn predict(&self, task: &TaskSpec, prompt: &str, data: &[Example]) -> Result<Vec<usize>> {
        match self.api {
            Api::Pez => self.predict_pez(task, prompt, data),
            Api::Openai => self.predict_openai(task, prompt, data),
        }
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let url = format!("{}{path}", self.url);
        match ureq::post(&url).send_json(body) {
            Ok(r) => r.into_json().with_context(|| format!("{url}: the answer is not JSON")),
            Err(ureq::Error::Status(code, r)) => {
                let msg = r.into_string().unwrap_or_default();
                bail!("{url}: HTTP {code}: {msg}")
            }
            Err(e) => Err(e).with_context(|| format!("{url}: no answer")),
        }
    }

    fn predict_pez(&self, task: &TaskSpec, prompt: &str, data: &[Example]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(data.len());
        for chunk in data.chunks(64) {
            let texts: Vec<&str> = chunk.iter().map(|e| e.text.as_str()).collect();
            let v = self.post("/v1/classify", &json!({
                "model": self.model, "input": texts, "prompt": prompt, "template": task.template,
                "verbalizers": task.verbalizers, "labels": task.label_names,
            }))?;
            let rows = v["data"].as_array().context("no `data` in the answer")?;
            if rows.len() != chunk.len() {
                bail!("asked for {} labels, got {}", chunk.len(), rows.len());
            }
            for r in rows {
                out.push(r["label_index"].as_u64().context("no `label_index`")? as usize);
            }
        }
        Ok(out)
    }

    fn predict_openai(&self, task: &TaskSpec, prompt: &str, data: &[Example]) -> Result<Vec<usize>> {
        let mut out = Vec::with_capacity(data.len());
        let mut unseen = 0;
        for e in data {
            let v = self.post("/v1/completions", &json!({
                "model": self.model, "prompt": format!("{prompt}{}{}", e.text, task.template),
                "max_tokens": 1, "temperature": 0, "logprobs": 20,
            }))?;
            let top = v["choices"][0]["logprobs"]["top_logprobs"][0].as_object().context("no `logprobs.top_logprobs` in the answer")?;
            let scores: Vec<f64> = task.verbalizers.iter().map(|w| top.get(w).and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY)).collect();
            if scores.iter().all(|s| s.is_infinite()) {
                unseen += 1;
            }
            out.push(scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i));
        }
        if unseen > 0 {
            eprintln!("warning: {} of {} examples had no verbalizer among the top 20 tokens (counted as label 0)", unseen, data.len());
        }
        Ok(out)
    }
}
