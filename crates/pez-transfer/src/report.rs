//! Transfer tables (Markdown, CSV), every prompt's score (JSON) and a bar chart (SVG).

use crate::stats::{mean_std, paired_t};
use crate::PromptScore;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write as _;
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
        let empty: Vec<f64> = scores.iter().find(|s| &s.model == model && s.method == "empty")
            .map(|s| s.correct.iter().map(|&c| c as f64).collect()).unwrap_or_default();
        for method in &methods {
            let of: Vec<&PromptScore> = scores.iter().filter(|s| &s.model == model && &s.method == method).collect();
            if of.is_empty() {
                continue;
            }
            let accs: Vec<f64> = of.iter().map(|s| s.accuracy).collect();
            let (mean, std) = mean_std(&accs);
            let (diff, p) = if method == "empty" || empty.is_empty() {
                (None, None)
            } else {
                let n = of[0].correct.len();
                let avg: Vec<f64> = (0..n).map(|i| of.iter().map(|s| s.correct[i] as f64).sum::<f64>() / of.len() as f64).collect();
                let (d, _, p) = paired_t(&avg, &empty);
                (Some(d), Some(p))
            };
            out.push(Cell { method: method.clone(), model: model.clone(), mean, std, n: of.len(), diff_vs_empty: diff, p_value: p });
        }
    }
    (methods, models, out)
}

pub fn write_all(dir: &Path, task: &str, scores: &[PromptScore], header: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let (methods, models, cells) = cells(scores);
    let get = |m: &str, model: &str| cells.iter().find(|c| c.method == m && c.model == model);
    // Markdown
    let mut md = format!("# Transfer: {task}\n\n{header}\n\nAccuracy (%) on the dev set: mean ± std over the top prompts of each method (n prompts); \
                          p: two-sided paired t-test of the method (correctness averaged over its prompts) against the empty template on the same examples.\n\n");
    write!(md, "| method |")?;
    for m in &models {
        write!(md, " {m} |")?;
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(models.len()));
    md.push('\n');
    for me in &methods {
        write!(md, "| {me} |")?;
        for mo in &models {
            match get(me, mo) {
                Some(c) => {
                    write!(md, " {:.2} ± {:.2} (n={})", c.mean * 100.0, c.std * 100.0, c.n)?;
                    if let Some(p) = c.p_value {
                        write!(md, ", Δ {:+.2}, p={:.3}", c.diff_vs_empty.unwrap_or(0.0) * 100.0, p)?;
                    }
                    md.push_str(" |");
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md.push_str("\n## Prompts\n\n| method | model | accuracy | holdout (source) | prompt |\n|---|---|---|---|---|\n");
    for s in scores {
        writeln!(md, "| {} | {} | {:.2} | {} | `{}` |", s.method, s.model, s.accuracy * 100.0,
                 s.holdout_accuracy.map(|h| format!("{:.1}", h * 100.0)).unwrap_or("–".into()), table_cell(&s.prompt))?;
    }
    std::fs::write(dir.join("transfer.md"), md)?;
    // CSV
    let mut csv = String::from("method,model,mean,std,n,diff_vs_empty,p_value\n");
    for c in &cells {
        writeln!(csv, "{},{},{:.6},{:.6},{},{},{}", c.method, c.model, c.mean, c.std, c.n,
                 c.diff_vs_empty.map(|d| format!("{d:.6}")).unwrap_or_default(), c.p_value.map(|p| format!("{p:.6}")).unwrap_or_default())?;
    }
    std::fs::write(dir.join("transfer.csv"), csv)?;
    std::fs::write(dir.join("transfer_scores.json"), serde_json::to_string_pretty(&serde_json::json!({"cells": cells, "prompts": scores}))?)?;
    std::fs::write(dir.join("transfer.svg"), svg(&methods, &models, &cells, task))?;
    Ok(())
}

/// Grouped bars: one group per model, one bar per method, error bars = std.
fn svg(methods: &[String], models: &[String], cells: &[Cell], task: &str) -> String {
    let colors = ["#888888", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
    let (w, h, left, bottom, top) = (160.0 * models.len() as f64 + 120.0, 360.0, 60.0, 60.0, 40.0);
    let plot_h = h - bottom - top;
    let bw = 120.0 / methods.len() as f64;
    let y = |acc: f64| top + plot_h * (1.0 - acc);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n");
    let _ = writeln!(s, "<text x=\"{}\" y=\"20\" font-size=\"14\">{task}: dev accuracy by target model and method</text>", left);
    for t in 0..=10 {
        let a = t as f64 / 10.0;
        let _ = writeln!(s, "<line x1=\"{left}\" x2=\"{}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                         w - 10.0, y(a), y(a), left - 4.0, y(a) + 4.0, t * 10);
    }
    for (gi, mo) in models.iter().enumerate() {
        let gx = left + 20.0 + 160.0 * gi as f64;
        for (mi, me) in methods.iter().enumerate() {
            if let Some(c) = cells.iter().find(|c| &c.method == me && &c.model == mo) {
                let x = gx + bw * mi as f64;
                let _ = writeln!(s, "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{me}: {:.2}%</title></rect>",
                                 y(c.mean), bw - 2.0, y(0.0) - y(c.mean), colors[mi % colors.len()], c.mean * 100.0);
                if c.std > 0.0 {
                    let cx = x + (bw - 2.0) / 2.0;
                    let _ = writeln!(s, "<line x1=\"{cx:.1}\" x2=\"{cx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>", y(c.mean + c.std), y(c.mean - c.std));
                }
            }
        }
        let label: String = mo.rsplit('/').next().unwrap_or(mo).chars().take(24).collect();
        let _ = writeln!(s, "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>", gx + 60.0, h - bottom + 16.0);
    }
    for (mi, me) in methods.iter().enumerate() {
        let lx = left + 130.0 * mi as f64;
        let _ = writeln!(s, "<rect x=\"{lx}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{me}</text>",
                         h - 22.0, colors[mi % colors.len()], lx + 14.0, h - 13.0);
    }
    s.push_str("</svg>\n");
    s
}

/// A prompt inside a Markdown table cell (in backticks): pipes escaped, newlines and tabs written as `\n`, `\t`.
fn table_cell(prompt: &str) -> String {
    prompt.replace('|', "\\|").replace('`', "'").replace('\n', "\\n").replace('\t', "\\t")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_prompt_stays_in_one_table_cell() {
        assert_eq!(super::table_cell("a|b`c\n\td"), "a\\|b'c\\n\\td");
    }
}
