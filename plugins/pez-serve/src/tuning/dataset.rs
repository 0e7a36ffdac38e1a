//! Training and validation files as tuning reads them: JSONL of OpenAI's chat examples (`{"messages": [...,
//! {"role": "user", "content": TEXT}, {"role": "assistant", "content": LABEL}]}`: the last user message is the
//! text, the assistant's answer after it the label) or pez's own `{"text": ..., "label": ...}` lines. A line that
//! is neither is refused by its number; so is a file with one label only.

use serde::Deserialize;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub text: String,
    pub label: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Line {
    Chat { messages: Vec<Message> },
    Plain { text: String, label: String },
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> Option<String> {
        match self {
            Self::Text(t) => Some(t.clone()),
            Self::Parts(p) => p
                .iter()
                .map(|p| (p.kind == "text").then(|| p.text.clone()).flatten())
                .collect(),
        }
    }
}

/// What is wrong with a file, and on which line (1-based) if it is one line's fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(n) => write!(f, "line {n}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn at(line: usize, message: impl Into<String>) -> Invalid {
    Invalid {
        line: Some(line),
        message: message.into(),
    }
}

/// Every example of a file; blank lines are skipped.
pub fn parse(bytes: &[u8]) -> Result<Vec<Example>, Invalid> {
    let text = std::str::from_utf8(bytes).map_err(|e| Invalid {
        line: None,
        message: format!("not UTF-8: {e}"),
    })?;
    let mut out = vec![];
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        let parsed: Line = serde_json::from_str(line).map_err(|e| {
            let why = if e.is_data() {
                "not an example".to_string()
            } else {
                format!("not JSON ({e})")
            };
            at(
                n,
                format!("{why}: expected {{\"messages\": [..., user, assistant]}} or {{\"text\", \"label\"}}"),
            )
        })?;
        let example = match parsed {
            Line::Plain { text, label } => Example { text, label },
            Line::Chat { messages } => chat_example(&messages).map_err(|m| at(n, m))?,
        };
        if example.text.trim().is_empty() {
            return Err(at(n, "the text is empty"));
        }
        if example.label.trim().is_empty() {
            return Err(at(n, "the label is empty"));
        }
        out.push(example);
    }
    if out.is_empty() {
        return Err(Invalid {
            line: None,
            message: "the file holds no examples".into(),
        });
    }
    Ok(out)
}

/// The last assistant message is the label; the last user message before it, the text.
fn chat_example(messages: &[Message]) -> Result<Example, String> {
    let a = messages
        .iter()
        .rposition(|m| m.role == "assistant")
        .ok_or("no assistant message (the label)")?;
    let u = messages[..a]
        .iter()
        .rposition(|m| m.role == "user")
        .ok_or("no user message (the text) before the answer")?;
    let text_of = |m: &Message, what: &str| {
        m.content
            .as_ref()
            .and_then(Content::text)
            .ok_or(format!("the {what} message has no text content"))
    };
    Ok(Example {
        text: text_of(&messages[u], "user")?,
        label: text_of(&messages[a], "assistant")?.trim().to_string(),
    })
}

/// The labels of `examples`, sorted; an error unless there are at least two.
pub fn labels(examples: &[Example]) -> Result<Vec<String>, Invalid> {
    let mut labels: Vec<String> = examples.iter().map(|e| e.label.clone()).collect();
    labels.sort();
    labels.dedup();
    if labels.len() < 2 {
        let only = labels.first().cloned().unwrap_or_default();
        return Err(Invalid {
            line: None,
            message: format!("every example has the label {only:?}: a classifier needs at least two labels"),
        });
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_and_plain_lines_and_their_errors_by_line() {
        let f = br#"{"messages": [{"role": "system", "content": "Classify."}, {"role": "user", "content": "a fine film"}, {"role": "assistant", "content": "positive"}]}

{"text": "a dull film", "label": "negative"}
{"messages": [{"role": "user", "content": [{"type": "text", "text": "so "}, {"type": "text", "text": "bad"}]}, {"role": "assistant", "content": " negative "}]}
"#;
        let ex = parse(f).unwrap();
        assert_eq!(ex.len(), 3);
        assert_eq!((ex[0].text.as_str(), ex[0].label.as_str()), ("a fine film", "positive"));
        assert_eq!((ex[2].text.as_str(), ex[2].label.as_str()), ("so bad", "negative"));
        assert_eq!(labels(&ex).unwrap(), ["negative", "positive"]);
        let e = parse(b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.to_string().starts_with("line 2: not JSON"), "{e}");
        let e =
            parse(b"{\"text\": \"a\", \"label\": \"x\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}")
                .unwrap_err();
        assert_eq!(e.to_string(), "line 2: no assistant message (the label)");
        let e = parse(b"{\"text\": \"a\", \"label\": 1}").unwrap_err();
        assert!(e.to_string().starts_with("line 1: not an example"), "{e}");
        assert!(parse(b"\n\n").unwrap_err().to_string().contains("no examples"));
        let one = parse(b"{\"text\": \"a\", \"label\": \"x\"}\n{\"text\": \"b\", \"label\": \"x\"}").unwrap();
        assert!(labels(&one).unwrap_err().to_string().contains("at least two labels"));
    }
}
