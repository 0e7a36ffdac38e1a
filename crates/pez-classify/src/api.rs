//! The `/v1/classify` request and response: one set of types for pez-serve (which parses requests and writes
//! responses) and for its clients (`pez transfer --endpoint`), so both sides agree by construction.

use pez_tasks::{Calibration, PromptFormat};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Texts to classify with a classifier (a model name), or on a base model with the classifier given in the
/// request: `template` and `verbalizers` (and optionally `prompt` and `labels`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyRequest {
    pub model: String,
    pub input: Input,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verbalizers: Option<Vec<String>>,
    /// Label names (default: the verbalizers, trimmed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<String>>,
    /// Calibration of an ad-hoc classifier (`none` or `content-free`, estimated on the served model); a named
    /// classifier uses its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
}

/// One text or several, as OpenAI's `input` fields take them.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Input {
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const EXPECTED: &str = "`input` must be a string or an array of strings";
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Input;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Input, E> {
                Ok(Input::One(s.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
                let mut v = vec![];
                while let Some(s) = seq.next_element::<StringOrNot>()? {
                    v.push(s.0.ok_or_else(|| serde::de::Error::custom(EXPECTED))?);
                }
                Ok(Input::Many(v))
            }
        }
        d.deserialize_any(V).map_err(|e| {
            let m = e.to_string();
            if m.starts_with("invalid type") {
                serde::de::Error::custom(EXPECTED)
            } else {
                e
            }
        })
    }
}

/// An element of `input`: the string, or none for any other value (so the error names `input` itself).
struct StringOrNot(Option<String>);

impl<'de> Deserialize<'de> for StringOrNot {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::IgnoredAny;
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = StringOrNot;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<StringOrNot, E> {
                Ok(StringOrNot(Some(s.to_string())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_unit<E>(self) -> Result<StringOrNot, E> {
                Ok(StringOrNot(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<StringOrNot, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StringOrNot(None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StringOrNot, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StringOrNot(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl ClassifyRequest {
    /// The classifier a request to a base model carries: `(prompt, format)`.
    pub fn ad_hoc(&self) -> Result<(String, PromptFormat), String> {
        let template = self
            .template
            .clone()
            .ok_or("give `template` and `verbalizers` for an ad-hoc classifier, or use a classifier")?;
        let verbalizers = self
            .verbalizers
            .clone()
            .ok_or("`verbalizers` must be an array of strings")?;
        if verbalizers.len() < 2 {
            return Err("give at least two verbalizers".into());
        }
        let label_names = match &self.labels {
            Some(l) if l.len() != verbalizers.len() => return Err("`labels` and `verbalizers` differ in length".into()),
            Some(l) => l.clone(),
            None => verbalizers.iter().map(|w| w.trim().to_string()).collect(),
        };
        Ok((
            self.prompt.clone().unwrap_or_default(),
            PromptFormat {
                template,
                verbalizers,
                label_names,
            },
        ))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassifyResponse {
    /// Always `"list"`.
    pub object: String,
    pub model: String,
    pub data: Vec<Classification>,
    pub usage: Usage,
}

/// One text's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Classification {
    pub index: usize,
    pub label: String,
    pub label_index: usize,
    /// Label -> probability (normalised over the verbalizers; calibrated if the classifier is), in label order.
    pub probs: LabelScores,
    pub logprobs: LabelScores,
    /// The uncalibrated probabilities, for a calibrated classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_probs: Option<LabelScores>,
    /// Whether the text was cut to fit the context (its start is kept).
    pub truncated: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// Scores by label name: a JSON object in label order.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelScores(pub Vec<(String, f32)>);

impl Serialize for LabelScores {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // As f64, like every other number pez-serve writes (`serde_json::json!` widens f32 the same way), so one
        // label's log-probability reads the same in /v1/classify and in chat or completion logprobs.
        s.collect_map(self.0.iter().map(|(k, v)| (k, *v as f64)))
    }
}

impl<'de> Deserialize<'de> for LabelScores {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LabelScores;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of label -> number")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<LabelScores, A::Error> {
                let mut v = vec![];
                while let Some(e) = m.next_entry::<String, f32>()? {
                    v.push(e);
                }
                Ok(LabelScores(v))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_takes_a_string_or_strings_and_refuses_the_rest() {
        let r: ClassifyRequest = serde_json::from_str(r#"{"model": "m", "input": "a"}"#).unwrap();
        assert!(matches!(r.input, Input::One(ref s) if s == "a"));
        let r: ClassifyRequest = serde_json::from_str(r#"{"model": "m", "input": ["a", "b"]}"#).unwrap();
        assert!(matches!(r.input, Input::Many(ref v) if v == &["a", "b"]));
        let e = serde_json::from_str::<ClassifyRequest>(r#"{"model": "m", "input": [1]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("array of strings"), "{e}");
    }

    #[test]
    fn label_scores_keep_label_order_both_ways() {
        let s = LabelScores(vec![("z".into(), 0.25), ("a".into(), 0.75)]);
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"z":0.25,"a":0.75}"#);
        let third = LabelScores(vec![("x".into(), 1.0 / 3.0)]);
        assert_eq!(
            serde_json::to_string(&third).unwrap(),
            serde_json::json!({"x": 1.0f32 / 3.0}).to_string()
        );
        assert_eq!(serde_json::from_str::<LabelScores>(&j).unwrap(), s);
    }

    #[test]
    fn ad_hoc_classifiers_need_a_template_and_two_verbalizers() {
        let mut r: ClassifyRequest = serde_json::from_str(r#"{"model": "m", "input": "a"}"#).unwrap();
        assert!(r.ad_hoc().unwrap_err().contains("give `template`"));
        r.template = Some(" It was".into());
        r.verbalizers = Some(vec![" good".into()]);
        assert!(r.ad_hoc().unwrap_err().contains("two verbalizers"));
        r.verbalizers = Some(vec![" bad".into(), " good".into()]);
        let (p, f) = r.ad_hoc().unwrap();
        assert_eq!(
            (p.as_str(), f.label_names),
            ("", vec!["bad".to_string(), "good".to_string()])
        );
    }
}
