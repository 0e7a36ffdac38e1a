//! Transfer tables (Markdown, CSV), every prompt's score (JSON) and a bar chart (SVG).

use crate::PromptScore;
use anyhow::Result;
use pez_report::{code, mean_std, paired_t, Table};
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub method: String,
    pub model: String,
    pub mean: f64,
    pub std: f64,
    pub n: usize,
    /// Paired t-test against the empty template on the same model and examples (None for the empty row).
    pub diff_vs_empty: Option<f64>,
    pub p_value: Option<f64>,
}

/// Method order: empty first, then as found (sorted by name).
pub fn cells(scores: &[PromptScore]) -> (Vec<String>, Vec<String>, Vec<Cell>) {
    let mut models: Vec<String> = vec![];
    let mut methods: Vec<String> = vec!["empty".into()];
    for s in scores {
        if !models.contains(&s.model) {
            models.push(s.model.clone());
        }
        if !methods.contains(&s.method) {
            methods.push(s.method.clone());
        }
    }
    let mut out = vec![];
    for model in &models {
        let empty: Vec<f64> = scores
            .iter()
            .find(|s| &s.model == model && s.method == "empty")
            .map(|s| s.correct.iter().map(|&c| c as f64).collect())
            .unwrap_or_default();
        for method in &methods {
            let of: Vec<&PromptScore> = scores
                .iter()
                .filter(|s| &s.model == model && &s.method == method)
                .collect();
            if of.is_empty() {
                continue;
            }
            let accs: Vec<f64> = of.iter().map(|s| s.accuracy).collect();
            let (mean, std) = mean_std(&accs).expect("a method with prompts");
            let (diff, p) = if method == "empty" || empty.is_empty() {
                (None, None)
            } else {
                let n = of[0].correct.len();
                let avg: Vec<f64> = (0..n)
                    .map(|i| of.iter().map(|s| s.correct[i] as f64).sum::<f64>() / of.len() as f64)
                    .collect();
                let (d, _, p) = paired_t(&avg, &empty);
                (Some(d), Some(p))
            };
            out.push(Cell {
                method: method.clone(),
                model: model.clone(),
                mean,
                std,
                n: of.len(),
                diff_vs_empty: diff,
                p_value: p,
            });
        }
    }
    (methods, models, out)
}

pub fn write_all(dir: &Path, task: &str, scores: &[PromptScore], header: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (methods, models, cells) = cells(scores);
    std::fs::write(
        dir.join("transfer.md"),
        markdown(task, header, &methods, &models, &cells, scores),
    )?;
    pez_report::write_csv(&dir.join("transfer.csv"), &cells)?;
    std::fs::write(
        dir.join("transfer_scores.json"),
        serde_json::to_string_pretty(&serde_json::json!({"cells": cells, "prompts": scores}))?,
    )?;
    std::fs::write(dir.join("transfer.svg"), svg(&methods, &models, &cells, task)?)?;
    Ok(())
}

/// The accuracy table (method x target model, with the paired test against the empty template) and every prompt.
fn markdown(
    task: &str,
    header: &str,
    methods: &[String],
    models: &[String],
    cells: &[Cell],
    scores: &[PromptScore],
) -> String {
    let mut t = Table::new(
        &std::iter::once("method")
            .chain(models.iter().map(String::as_str))
            .collect::<Vec<_>>(),
    );
    for me in methods {
        let row = models
            .iter()
            .map(|mo| match cells.iter().find(|c| &c.method == me && &c.model == mo) {
                Some(c) => {
                    let mut s = format!("{:.2} ± {:.2} (n={})", c.mean * 100.0, c.std * 100.0, c.n);
                    if let Some(p) = c.p_value {
                        s += &format!(", Δ {:+.2}, p={p:.3}", c.diff_vs_empty.unwrap_or(0.0) * 100.0);
                    }
                    s
                }
                None => "–".into(),
            });
        t.row(std::iter::once(me.clone()).chain(row));
    }
    let mut prompts = Table::new(&["method", "model", "accuracy", "holdout (source)", "prompt"]);
    for s in scores {
        let holdout = s.holdout_accuracy.map_or("–".into(), |h| format!("{:.1}", h * 100.0));
        prompts.row([
            s.method.clone(),
            s.model.clone(),
            format!("{:.2}", s.accuracy * 100.0),
            holdout,
            code(&s.prompt),
        ]);
    }
    format!(
        "# Transfer: {task}\n\n{header}\n\nAccuracy (%) on the dev set: mean ± std over the top prompts of each method (n \
         prompts); p: two-sided paired t-test of the method (correctness averaged over its prompts) against the empty \
         template on the same examples.\n\n{}\n## Prompts\n\n{}",
        t.finish(),
        prompts.finish()
    )
}

/// Grouped bars: one group per target model, one bar per method (mean over its prompts), error bars = std.
fn svg(methods: &[String], models: &[String], cells: &[Cell], task: &str) -> Result<String> {
    use plotters::prelude::*;
    let colors = [
        RGBColor(136, 136, 136),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
    ];
    let short = |m: &str| -> String { m.rsplit('/').next().unwrap_or(m).chars().take(24).collect() };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (160 * models.len() as u32 + 240, 380)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{task}: dev accuracy by target model and method"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(45)
            // Room above 100% for the legend.
            .build_cartesian_2d(-0.5..models.len() as f64 - 0.5, 0.0..125.0)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(models.len())
            .x_label_formatter(&|x| {
                models
                    .get(x.round() as usize)
                    .filter(|_| (x - x.round()).abs() < 1e-6)
                    .map_or(String::new(), |m| short(m))
            })
            .y_label_formatter(&|y| if *y <= 100.0 { format!("{y:.0}") } else { String::new() })
            .y_desc("accuracy (%)")
            .draw()?;
        let bw = 0.8 / methods.len() as f64;
        for (mi, me) in methods.iter().enumerate() {
            let color = colors[mi % colors.len()];
            let bars: Vec<(f64, &Cell)> = cells
                .iter()
                .filter(|c| &c.method == me)
                .filter_map(|c| {
                    Some((
                        models.iter().position(|m| *m == c.model)? as f64 - 0.4 + bw * mi as f64,
                        c,
                    ))
                })
                .collect();
            chart
                .draw_series(
                    bars.iter()
                        .map(|(x, c)| Rectangle::new([(*x, 0.0), (x + bw * 0.9, c.mean * 100.0)], color.filled())),
                )?
                .label(me.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
            let whiskers = bars.iter().filter(|(_, c)| c.std > 0.0).map(|(x, c)| {
                let (m, s) = (c.mean * 100.0, c.std * 100.0);
                ErrorBar::new_vertical(x + bw * 0.45, m - s, m, m + s, BLACK.filled(), 6)
            });
            chart.draw_series(whiskers)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
    }
    Ok(out)
}
