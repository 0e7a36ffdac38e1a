//! Models behind an HTTP endpoint: `pez-serve` (its `/v1/classify` with the classifier in the request, the same
//! numbers as the in-process `Prompted`) or any OpenAI-compatible server (`/v1/completions` with `max_tokens: 1`
//! and `logprobs`, reading the verbalizers among the returned alternatives).

use crate::api::{ClassifyRequest, ClassifyResponse, Input};
use crate::predictor::{Predictor, Scored};
use anyhow::{bail, Context, Result};
use pez_tasks::PromptFormat;
use serde_json::{json, Value};

/// How an endpoint is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::Display, strum::EnumString, strum::VariantNames)]
#[strum(serialize_all = "kebab-case")]
pub enum Api {
    /// pez-serve's `/v1/classify` on a base model with `prompt`, `template` and `verbalizers` in the request.
    Pez,
    /// `/v1/completions` of any OpenAI-compatible server: one request per example, `prompt + text + template` as
    /// one string (the server tokenizes it whole), the label whose verbalizer has the highest log-probability
    /// among the top 20 alternatives; a verbalizer not among them counts as -inf. Only the order of the values is
    /// used (mistral.rs 0.8.1 was seen returning positive "logprob" values there).
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
    /// Checks the URL's form (nothing is sent yet).
    pub fn new(url: &str, model: &str, api: Api) -> Result<Self> {
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
            bail!("--endpoint {url:?} is not an http:// or https:// URL");
        }
        if model.trim().is_empty() {
            bail!("--endpoint-model is empty");
        }
        let url = url.trim_end_matches('/').trim_end_matches("/v1").to_string();
        Ok(Self {
            url,
            model: model.into(),
            api,
        })
    }

    /// The name this target gets in tables.
    pub fn label(&self) -> String {
        format!("{}@{}", self.model, self.url)
    }

    /// `prompt` with `format` on this endpoint's model.
    pub fn bind<'a>(&'a self, format: &'a PromptFormat, prompt: &str) -> EndpointPrompt<'a> {
        EndpointPrompt {
            endpoint: self,
            format,
            prompt: prompt.to_string(),
        }
    }

    fn post<T: serde::de::DeserializeOwned>(&self, path: &str, body: &impl serde::Serialize) -> Result<T> {
        let url = format!("{}{path}", self.url);
        match ureq::post(&url).send_json(body) {
            Ok(r) => r
                .into_json()
                .with_context(|| format!("{url}: the answer is not the expected JSON")),
            Err(ureq::Error::Status(code, r)) => {
                let msg = r.into_string().unwrap_or_default();
                bail!("{url}: HTTP {code}: {msg}")
            }
            Err(e) => Err(e).with_context(|| format!("{url}: no answer")),
        }
    }
}

/// A prompt on a model behind an endpoint.
pub struct EndpointPrompt<'a> {
    endpoint: &'a Endpoint,
    format: &'a PromptFormat,
    prompt: String,
}

impl Predictor for EndpointPrompt<'_> {
    fn score(&self, texts: &[&str], batch: usize, done: &mut dyn FnMut(usize)) -> Result<Vec<Scored>> {
        match self.endpoint.api {
            Api::Pez => self.score_pez(texts, batch, done),
            Api::Openai => self.score_openai(texts, done),
        }
    }
}

impl EndpointPrompt<'_> {
    fn score_pez(&self, texts: &[&str], batch: usize, done: &mut dyn FnMut(usize)) -> Result<Vec<Scored>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(batch.max(1)) {
            let f = self.format;
            let req = ClassifyRequest {
                model: self.endpoint.model.clone(),
                input: Input::Many(chunk.iter().map(|t| t.to_string()).collect()),
                prompt: Some(self.prompt.clone()),
                template: Some(f.template.clone()),
                verbalizers: Some(f.verbalizers.clone()),
                labels: Some(f.label_names.clone()),
                calibration: None,
            };
            let v: ClassifyResponse = self.endpoint.post("/v1/classify", &req)?;
            if v.data.len() != chunk.len() {
                bail!("asked for {} labels, got {}", chunk.len(), v.data.len());
            }
            out.extend(v.data.into_iter().map(|r| Scored {
                label: r.label_index,
                logprobs: r.logprobs.0.iter().map(|x| x.1).collect(),
                raw_logprobs: r.raw_probs.map(|p| p.0.iter().map(|x| x.1.ln()).collect()),
                tokens: 0,
                truncated: r.truncated,
            }));
            done(chunk.len());
        }
        Ok(out)
    }

    fn score_openai(&self, texts: &[&str], done: &mut dyn FnMut(usize)) -> Result<Vec<Scored>> {
        let mut out = Vec::with_capacity(texts.len());
        let mut unseen = 0;
        for t in texts {
            let v: Value = self.endpoint.post(
                "/v1/completions",
                &json!({
                    "model": self.endpoint.model, "prompt": format!("{}{t}{}", self.prompt, self.format.template),
                    "max_tokens": 1, "temperature": 0, "logprobs": 20,
                }),
            )?;
            let scores = verbalizer_scores(&v, &self.format.verbalizers)?;
            if scores.iter().all(|s| s.is_infinite()) {
                unseen += 1;
            }
            let label = scores
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            out.push(Scored {
                label,
                logprobs: scores.iter().map(|&s| s as f32).collect(),
                raw_logprobs: None,
                tokens: 0,
                truncated: false,
            });
            done(1);
        }
        check_unseen(unseen, texts.len())?;
        Ok(out)
    }
}

/// Examples whose verbalizers are all missing from the top-20 alternatives cannot be scored (they count as label 0):
/// a few are tolerated with a warning, more than 5% make the accuracy meaningless and are an error.
fn check_unseen(unseen: usize, total: usize) -> Result<()> {
    if unseen * 20 > total {
        bail!(
            "{unseen} of {total} examples had no verbalizer among the endpoint's top 20 alternatives, so its accuracy \
             cannot be measured with --endpoint-api openai (the model prefers other next tokens after the template); \
             for pez-serve use --endpoint-api pez, which scores the verbalizers directly"
        );
    }
    if unseen > 0 {
        eprintln!(
            "warning: {unseen} of {total} examples had no verbalizer among the top 20 tokens (counted as label 0)"
        );
    }
    Ok(())
}

/// The score of each verbalizer among the alternatives of a completion's first token (-inf where absent).
/// Reads OpenAI's legacy shape (`logprobs.top_logprobs[0]`: token -> logprob) and the chat-style shape some servers
/// (mistral.rs) return for completions (`logprobs.content[0].top_logprobs`: a list of entries whose text is in
/// `token`, or in `bytes` as a string when `token` is the id).
pub fn verbalizer_scores(answer: &Value, verbalizers: &[String]) -> Result<Vec<f64>> {
    let lp = &answer["choices"][0]["logprobs"];
    let mut alternatives: Vec<(String, f64)> = vec![];
    if let Some(top) = lp["top_logprobs"][0].as_object() {
        alternatives = top.iter().filter_map(|(t, v)| Some((t.clone(), v.as_f64()?))).collect();
    } else if let Some(top) = lp["content"][0]["top_logprobs"].as_array() {
        for e in top {
            let text = e["token"].as_str().or_else(|| e["bytes"].as_str());
            if let (Some(t), Some(v)) = (text, e["logprob"].as_f64()) {
                alternatives.push((t.to_string(), v));
            }
        }
    } else {
        bail!("the answer has no top log-probabilities (ask for `logprobs`): {}", lp);
    }
    Ok(verbalizers
        .iter()
        .map(|w| {
            alternatives
                .iter()
                .filter(|(t, _)| t == w)
                .map(|x| x.1)
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_many_unscorable_examples_are_an_error() {
        assert!(super::check_unseen(0, 60).is_ok() && super::check_unseen(3, 60).is_ok());
        let e = super::check_unseen(60, 60).unwrap_err().to_string();
        assert!(e.contains("60 of 60") && e.contains("--endpoint-api pez"), "{e}");
    }

    #[test]
    fn reads_both_logprob_shapes() {
        let v = [" negative".to_string(), " positive".to_string()];
        let legacy = json!({"choices": [{"text": " great", "logprobs": {"tokens": [" great"], "token_logprobs": [-0.5],
            "top_logprobs": [{" great": -0.5, " positive": -1.25, " good": -2.0}]}}]});
        assert_eq!(verbalizer_scores(&legacy, &v).unwrap(), vec![f64::NEG_INFINITY, -1.25]);
        // As mistral.rs 0.8.1 answers /v1/completions (token ids in `token`, text in `bytes`).
        let chat_style = json!({"choices": [{"text": "a", "logprobs": {"content": [{"token": " a", "logprob": -0.1,
            "top_logprobs": [{"token": 253, "logprob": -0.1, "bytes": " a"}, {"token": 4135, "logprob": -2.5, "bytes": " negative"},
                             {"token": 3426, "logprob": -1.5, "bytes": " positive"}]}]}}]});
        assert_eq!(verbalizer_scores(&chat_style, &v).unwrap(), vec![-2.5, -1.5]);
        let none = json!({"choices": [{"text": "a", "logprobs": null}]});
        assert!(verbalizer_scores(&none, &v).is_err());
    }
}
