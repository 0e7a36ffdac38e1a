//! CSV/TSV datasets with errors that name the file and line.

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    pub text: String,
    pub label: usize,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub source: PathBuf,
}

/// A column by header name or 0-based index.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Column {
    Index(usize),
    Name(String),
}

/// How rows of a file become examples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Format {
    #[serde(default = "comma")]
    pub delimiter: String,
    #[serde(default)]
    pub header: bool,
    /// Double quotes delimit fields (CSV); off for raw TSV such as GLUE's.
    #[serde(default = "yes")]
    pub quoting: bool,
    /// Joined with a space, in order (e.g. title + content).
    pub text_columns: Vec<Column>,
    pub label_column: Column,
    /// Raw label value -> label index; without it, labels are integers 0..n-1.
    #[serde(default)]
    pub label_map: BTreeMap<String, usize>,
}
fn comma() -> String {
    ",".into()
}
fn yes() -> bool {
    true
}

impl Format {
    pub fn sst2() -> Self {
        Self {
            delimiter: "\t".into(),
            header: true,
            quoting: false,
            text_columns: vec![Column::Name("sentence".into())],
            label_column: Column::Name("label".into()),
            label_map: BTreeMap::new(),
        }
    }
    /// The public Amazon Polarity CSV: label (1 = negative, 2 = positive), title, content; no header.
    pub fn amazon() -> Self {
        Self {
            delimiter: ",".into(),
            header: false,
            quoting: true,
            text_columns: vec![Column::Index(1), Column::Index(2)],
            label_column: Column::Index(0),
            label_map: [("1".to_string(), 0), ("2".to_string(), 1)].into(),
        }
    }
    /// The shared AG News files: text, label 0..3; no header.
    pub fn agnews() -> Self {
        Self {
            delimiter: ",".into(),
            header: false,
            quoting: true,
            text_columns: vec![Column::Index(0)],
            label_column: Column::Index(1),
            label_map: BTreeMap::new(),
        }
    }
}

fn col_index(c: &Column, headers: Option<&csv::StringRecord>, path: &Path) -> Result<usize> {
    match c {
        Column::Index(i) => Ok(*i),
        Column::Name(n) => headers
            .and_then(|h| h.iter().position(|x| x == n))
            .with_context(|| format!("{}: no column named `{n}` in the header", path.display())),
    }
}

/// Reads every row of a CSV/TSV file, or of a Parquet file (by extension: `text_columns` and `label_column` are
/// then column names or indexes of its top-level columns); any bad row is an error naming the file and row, and
/// nothing is returned.
pub fn load(path: &Path, f: &Format, num_labels: usize) -> Result<Dataset> {
    if is_parquet(path) {
        return load_parquet(path, f, num_labels);
    }
    let delim = match f.delimiter.as_str() {
        "\\t" | "\t" | "tab" => b'\t',
        d if d.len() == 1 => d.as_bytes()[0],
        d => bail!("delimiter must be one character, got {d:?}"),
    };
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delim)
        .has_headers(f.header)
        .quoting(f.quoting)
        .flexible(true)
        .from_path(path)
        .with_context(|| format!("opening dataset {}", path.display()))?;
    let headers = if f.header {
        Some(
            rdr.headers()
                .with_context(|| format!("{}: reading header", path.display()))?
                .clone(),
        )
    } else {
        None
    };
    let text_cols: Vec<usize> = f
        .text_columns
        .iter()
        .map(|c| col_index(c, headers.as_ref(), path))
        .collect::<Result<_>>()?;
    let label_col = col_index(&f.label_column, headers.as_ref(), path)?;
    let mut examples = Vec::new();
    for rec in rdr.records() {
        let rec = rec.with_context(|| format!("{}: malformed row", path.display()))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let at = || format!("{}:{line}", path.display());
        let need = text_cols.iter().chain([&label_col]).max().copied().unwrap_or(0) + 1;
        if rec.len() < need {
            bail!("{}: expected at least {need} columns, found {}", at(), rec.len());
        }
        let text = text_cols
            .iter()
            .map(|&i| rec[i].trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() {
            bail!("{}: empty text", at());
        }
        examples.push(Example {
            text,
            label: label_of(rec[label_col].trim(), f, num_labels, &at)?,
        });
    }
    if examples.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(Dataset {
        examples,
        source: path.to_path_buf(),
    })
}

/// A raw label as an index: through the label map if the format has one, else as an integer `0..num_labels`.
fn label_of(raw: &str, f: &Format, num_labels: usize, at: &dyn Fn() -> String) -> Result<usize> {
    let label = if f.label_map.is_empty() {
        raw.parse::<usize>()
            .with_context(|| format!("{}: label {raw:?} is not an integer", at()))?
    } else {
        *f.label_map
            .get(raw)
            .with_context(|| format!("{}: label {raw:?} is not in the label map", at()))?
    };
    if label >= num_labels {
        bail!(
            "{}: label {label} out of range (the task has {num_labels} labels)",
            at()
        );
    }
    Ok(label)
}

/// A Parquet file (e.g. a Hugging Face dataset split) read with the `parquet` crate's row API.
fn load_parquet(path: &Path, f: &Format, num_labels: usize) -> Result<Dataset> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;
    let file = std::fs::File::open(path).with_context(|| format!("opening dataset {}", path.display()))?;
    let reader = SerializedFileReader::new(file)
        .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
    let names: Vec<String> = reader
        .metadata()
        .file_metadata()
        .schema()
        .get_fields()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let col = |c: &Column| -> Result<usize> {
        match c {
            Column::Index(i) if *i < names.len() => Ok(*i),
            Column::Index(i) => bail!("{}: no column {i} (it has {})", path.display(), names.len()),
            Column::Name(n) => names
                .iter()
                .position(|x| x == n)
                .with_context(|| format!("{}: no column named `{n}` (columns: {names:?})", path.display())),
        }
    };
    let text_cols: Vec<usize> = f.text_columns.iter().map(&col).collect::<Result<_>>()?;
    let label_col = col(&f.label_column)?;
    let rows = reader
        .get_row_iter(None)
        .with_context(|| format!("{}: reading rows", path.display()))?;
    let mut examples = Vec::new();
    for (i, row) in rows.enumerate() {
        let at = || format!("{}: row {}", path.display(), i + 1);
        let row = row.with_context(|| format!("{}: corrupt or truncated data", at()))?;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, v)| v).collect();
        let text = text_cols
            .iter()
            .map(|&c| match fields[c] {
                Field::Str(s) => Ok(s.trim()),
                Field::Null => Ok(""),
                other => bail!("{}: column `{}` is not text: {other}", at(), names[c]),
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if text.is_empty() {
            bail!("{}: empty text", at());
        }
        let raw = match fields[label_col] {
            Field::Long(x) => x.to_string(),
            Field::Int(x) => x.to_string(),
            Field::Short(x) => x.to_string(),
            Field::Byte(x) => x.to_string(),
            Field::Str(s) => s.trim().to_string(),
            other => bail!("{}: label column `{}` holds {other}", at(), names[label_col]),
        };
        examples.push(Example {
            text,
            label: label_of(&raw, f, num_labels, &at)?,
        });
    }
    if examples.is_empty() {
        bail!("{}: no examples", path.display());
    }
    Ok(Dataset {
        examples,
        source: path.to_path_buf(),
    })
}

/// Whether `path` names a Parquet file (the hub's splits) rather than CSV/TSV.
pub fn is_parquet(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("parquet"))
}

/// Which train rows a run draws from: for the holdout that picks the best prompt (`--holdout-rule`) and for the
/// batches it trains on (`--train-rule`).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum RowRule {
    /// Any row, drawn at random (the paper's protocol; the default where a config or task file names none).
    #[default]
    Random,
    /// Rows of at least `LONG_WORDS` words. SST-2's train split is mostly short phrases (median 7 words) cut from
    /// the sentences that dev and test hold whole (median 19): long rows look like the data a prompt is scored
    /// on, and their label balance is dev's (51.6% positive against dev's 50.9%; all of train: 55.8%).
    Long,
}

/// The shortest row `RowRule::Long` admits, in whitespace-separated words.
pub const LONG_WORDS: usize = 10;

impl RowRule {
    pub fn admits(self, e: &Example) -> bool {
        match self {
            Self::Random => true,
            Self::Long => e.text.split_whitespace().count() >= LONG_WORDS,
        }
    }
}

impl Dataset {
    /// Seeded split into (train, holdout) with `holdout` examples held out (at most half of the data), drawn
    /// from the examples `rule` admits; the run trains on the other rows that `train_rule` admits, never on a
    /// holdout row.
    pub fn split_holdout(
        &self,
        holdout: usize,
        seed: u64,
        rule: RowRule,
        train_rule: RowRule,
    ) -> (Vec<Example>, Vec<Example>) {
        let mut idx: Vec<usize> = (0..self.examples.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let h = holdout.min(self.examples.len() / 2);
        // The first `h` admitted rows in shuffled order (with `Random`, simply the first `h`); the rest train, in
        // the same shuffled order.
        let held: std::collections::HashSet<usize> = idx
            .iter()
            .copied()
            .filter(|&i| rule.admits(&self.examples[i]))
            .take(h)
            .collect();
        let hold = idx
            .iter()
            .filter(|i| held.contains(i))
            .map(|&i| self.examples[i].clone())
            .collect();
        let trains = |&&i: &&usize| !held.contains(&i) && train_rule.admits(&self.examples[i]);
        let train = idx.iter().filter(trains).map(|&i| self.examples[i].clone()).collect();
        (train, hold)
    }

    /// Few-shot: `k` examples per class for training and another `k` per class as the holdout (seeded).
    pub fn few_shot(&self, k: usize, num_labels: usize, seed: u64) -> Result<(Vec<Example>, Vec<Example>)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (mut train, mut hold) = (vec![], vec![]);
        for c in 0..num_labels {
            let mut of_c: Vec<&Example> = self.examples.iter().filter(|e| e.label == c).collect();
            if of_c.len() < 2 * k {
                bail!(
                    "{}: class {c} has {} examples, {} needed for {k}-shot train + holdout",
                    self.source.display(),
                    of_c.len(),
                    2 * k
                );
            }
            of_c.shuffle(&mut rng);
            train.extend(of_c[..k].iter().map(|&e| e.clone()));
            hold.extend(of_c[k..2 * k].iter().map(|&e| e.clone()));
        }
        Ok((train, hold))
    }
}
