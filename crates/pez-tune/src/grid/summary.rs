//! Every cell of a sweep gathered (finished, started, failed, missing) and, per setting, its finished seeds
//! summarised as `pez tune --seeds` does: `summary.json`, `summary.md` and `summary.svg` under the sweep's `out`.

use super::{Status, Sweep, ERROR_FILE};
use crate::sweep::{self, SeedResult, Summary};
use anyhow::Result;
use pez_config::write_atomic;
use pez_report::{code, pct, pm, Table};
use serde::{Deserialize, Serialize};

/// One cell in the summary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRow {
    pub index: usize,
    pub name: String,
    /// The grid's values (`Summary::keys` order), as TOML writes them.
    pub values: Vec<String>,
    pub status: Status,
    pub result: Option<SeedResult>,
    /// The first line of `error.txt` for a failed cell.
    pub error: Option<String>,
}

/// Cells that differ only by seed, summarised as `pez tune --seeds` does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// The grid's values but the seed.
    pub values: Vec<String>,
    pub summary: Summary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GridSummary {
    pub keys: Vec<String>,
    pub cells: Vec<CellRow>,
    pub groups: Vec<Group>,
}

/// Gathers every cell (finished, started, failed, missing) and, per setting, its finished seeds; writes
/// `summary.json`, `summary.md` and `summary.svg` under the sweep's `out`.
pub fn summarize(sweep: &Sweep) -> Result<GridSummary> {
    let mut cells = vec![];
    for c in &sweep.cells {
        let status = sweep.status(c);
        let result = match status {
            Status::Finished => Some(SeedResult::read(c.config.seed, &sweep.dir(c))?),
            _ => None,
        };
        let error = (status == Status::Failed)
            .then(|| std::fs::read_to_string(sweep.dir(c).join(ERROR_FILE)).ok())
            .flatten()
            .map(|e| e.lines().next().unwrap_or("").to_string());
        cells.push(CellRow {
            index: c.index,
            name: c.name.clone(),
            values: c.values.iter().map(|v| v.to_string()).collect(),
            status,
            result,
            error,
        });
    }
    let seed_at = sweep.keys.iter().position(|k| k == "seed");
    let without_seed = |vals: &[String]| {
        vals.iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != seed_at)
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    let mut groups: Vec<Group> = vec![];
    for row in &cells {
        let values = without_seed(&row.values);
        if !groups.iter().any(|g| g.values == values) {
            let runs: Vec<SeedResult> = cells
                .iter()
                .filter(|r| without_seed(&r.values) == values)
                .filter_map(|r| r.result.clone())
                .collect();
            groups.push(Group {
                values,
                summary: sweep::summarize(runs, sweep.top),
            });
        }
    }
    let s = GridSummary {
        keys: sweep.keys.clone(),
        cells,
        groups,
    };
    std::fs::create_dir_all(&sweep.out)?;
    write_atomic(
        &sweep.out.join("summary.json"),
        serde_json::to_string_pretty(&s)?.as_bytes(),
    )?;
    write_atomic(&sweep.out.join("summary.md"), markdown(&s).as_bytes())?;
    write_atomic(&sweep.out.join("summary.svg"), svg(&s)?.as_bytes())?;
    Ok(s)
}

pub fn markdown(s: &GridSummary) -> String {
    let headers: Vec<&str> = ["cell"]
        .into_iter()
        .chain(s.keys.iter().map(String::as_str))
        .chain(["status", "holdout", "dev", "prompt"])
        .collect();
    let mut cells = Table::new(&headers);
    for c in &s.cells {
        let r = c.result.as_ref();
        let prompt = r.map_or_else(|| c.error.clone().unwrap_or_default(), |r| code(&r.prompt));
        let (holdout, dev) = (
            pct(r.and_then(|r| r.holdout_accuracy)),
            pct(r.and_then(|r| r.dev_accuracy)),
        );
        let row = [c.index.to_string()].into_iter().chain(c.values.iter().cloned());
        cells.row(row.chain([c.status.to_string(), holdout, dev, prompt]));
    }
    let counts: Vec<String> = [Status::Finished, Status::Started, Status::Failed, Status::Missing]
        .iter()
        .map(|st| format!("{} {st}", s.cells.iter().filter(|c| c.status == *st).count()))
        .collect();
    let keys: Vec<&str> = s.keys.iter().map(String::as_str).filter(|k| *k != "seed").collect();
    let setting = if keys.is_empty() { vec!["setting"] } else { keys };
    let mut groups = Table::new(&[setting, vec!["seeds done", "dev mean ± std", "top by holdout: dev"]].concat());
    for g in &s.groups {
        let values = if g.values.is_empty() {
            vec!["all".to_string()]
        } else {
            g.values.clone()
        };
        let summary = [
            g.summary.runs.len().to_string(),
            pm(g.summary.dev_mean_std),
            pm(g.summary.top_dev_mean_std),
        ];
        groups.row(values.into_iter().chain(summary));
    }
    format!(
        "{}\n{} cells: {}.\n\n{}",
        cells.finish(),
        s.cells.len(),
        counts.join(", "),
        groups.finish()
    )
}

/// Dev accuracy of every finished cell, one column per setting (its seeds as dots, their mean as a bar).
fn svg(s: &GridSummary) -> Result<String> {
    use plotters::prelude::*;
    let mut out = String::new();
    {
        let n = s.groups.len().max(1);
        let root = SVGBackend::with_string(&mut out, (120 * n as u32 + 160, 360)).into_drawing_area();
        root.fill(&WHITE)?;
        let labels: Vec<String> = s
            .groups
            .iter()
            .map(|g| {
                if g.values.is_empty() {
                    "all".into()
                } else {
                    g.values.join(" ")
                }
            })
            .collect();
        let mut chart = ChartBuilder::on(&root)
            .caption("dev accuracy by setting (dots: seeds, bar: mean)", ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..100.0)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                labels
                    .get(x.round() as usize)
                    .filter(|_| (x - x.round()).abs() < 1e-6)
                    .cloned()
                    .unwrap_or_default()
            })
            .y_desc("dev accuracy (%)")
            .draw()?;
        let blue = RGBColor(31, 119, 180);
        for (gi, g) in s.groups.iter().enumerate() {
            let devs: Vec<f64> = g
                .summary
                .runs
                .iter()
                .filter_map(|r| r.dev_accuracy)
                .map(|d| d * 100.0)
                .collect();
            let k = devs.len().max(1) as f64;
            chart.draw_series(
                devs.iter()
                    .enumerate()
                    .map(|(i, d)| Circle::new((gi as f64 - 0.2 + 0.4 * (i as f64 + 0.5) / k, *d), 3, blue.filled())),
            )?;
            if let Some((m, _)) = g.summary.dev_mean_std {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(gi as f64 - 0.3, m * 100.0), (gi as f64 + 0.3, m * 100.0)],
                    BLACK.stroke_width(2),
                )))?;
            }
        }
        root.present()?;
    }
    Ok(out)
}
