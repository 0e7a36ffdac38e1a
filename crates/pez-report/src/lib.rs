//! What the sweep, grid and transfer reports share: Markdown tables whose cells cannot break the table,
//! percentages and mean ± std as they are printed, the statistics behind them (statrs) and CSV files (csv).

pub mod stats;
pub mod table;

pub use stats::{mean_std, paired_t};
pub use table::{code, pct, pm, Table};

use anyhow::{Context, Result};
use std::path::Path;

/// `rows` as a CSV file with a header row (the field names of `T`; `None` is an empty field).
pub fn write_csv<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut w = csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    for r in rows {
        w.serialize(r)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn csv_quotes_what_needs_quoting() {
        #[derive(serde::Serialize)]
        struct Row<'a> {
            method: &'a str,
            mean: f64,
            p_value: Option<f64>,
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        let rows = [
            Row {
                method: "pez, w=0.1",
                mean: 0.5,
                p_value: None,
            },
            Row {
                method: "soft",
                mean: 0.25,
                p_value: Some(0.01),
            },
        ];
        super::write_csv(&p, &rows).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, "method,mean,p_value\n\"pez, w=0.1\",0.5,\nsoft,0.25,0.01\n");
    }
}
