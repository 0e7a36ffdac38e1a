//! Progress on long work (tuning, evaluation, inversion): a bar when stderr is a terminal; otherwise (a log file,
//! a pipe, CI) a plain line every few seconds with the position, rate, ETA and message, as cargo or a training
//! framework's logger does. The first line comes at the start, so a log shows the run is alive at once.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Seconds between plain lines: `$PEZ_PROGRESS_SECS`, default 10.
fn interval() -> Duration {
    let s = std::env::var("PEZ_PROGRESS_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s >= 0.0)
        .unwrap_or(10.0);
    Duration::from_secs_f64(s)
}

pub struct Progress {
    /// What is being counted, e.g. "steps" or "examples".
    unit: &'static str,
    label: String,
    total: u64,
    pos: u64,
    /// Position and time when this process started counting (a resumed run starts part way).
    start: (u64, Instant),
    msg: String,
    bar: Option<indicatif::ProgressBar>,
    last_line: Instant,
    every: Duration,
}

impl Progress {
    /// Progress over `total` units of work called `unit`, reported as `label` in log lines.
    pub fn new(label: &str, unit: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            let style = format!("{{bar:30}} {{pos}}/{{len}} {unit}  {{msg}}  [{{elapsed_precise}} < {{eta_precise}}]");
            b.set_style(indicatif::ProgressStyle::with_template(&style).expect("a valid template"));
            b
        });
        let now = Instant::now();
        let p = Self {
            unit,
            label: label.into(),
            total,
            pos: 0,
            start: (0, now),
            msg: String::new(),
            bar,
            last_line: now,
            every: interval(),
        };
        if p.bar.is_none() {
            eprintln!("[{}] starting: {} {unit}", p.label, p.total);
        }
        p
    }

    /// Continue from `pos` (e.g. a resumed run); the rate counts only work done from here.
    pub fn set_position(&mut self, pos: u64) {
        self.pos = pos;
        self.start = (pos, Instant::now());
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    pub fn set_message(&mut self, msg: impl Into<String>) {
        self.msg = msg.into();
        if let Some(b) = &self.bar {
            b.set_message(self.msg.clone());
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.pos += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_line.elapsed() >= self.every => self.line(),
            None => {}
        }
    }

    /// A line now, whatever the interval (e.g. after an evaluation worth seeing in the log).
    pub fn line(&mut self) {
        if self.bar.is_some() {
            return;
        }
        self.last_line = Instant::now();
        eprintln!("[{}] {}", self.label, self.status());
    }

    /// `"12/300 steps (4.0%)  0.85 s/step  ETA 4m05s  <message>"`.
    pub fn status(&self) -> String {
        let done = self.pos.saturating_sub(self.start.0);
        let secs = self.start.1.elapsed().as_secs_f64();
        let pct = 100.0 * self.pos as f64 / self.total.max(1) as f64;
        let mut s = format!("{}/{} {} ({pct:.1}%)", self.pos, self.total, self.unit);
        if done > 0 {
            let per = secs / done as f64;
            let unit = self.unit.trim_end_matches('s');
            if per >= 1.0 {
                s += &format!("  {per:.2} s/{unit}");
            } else {
                s += &format!("  {:.1} {}/s", 1.0 / per, self.unit);
            }
            s += &format!("  ETA {}", hms(per * self.total.saturating_sub(self.pos) as f64));
        }
        if !self.msg.is_empty() {
            s += "  ";
            s += &self.msg;
        }
        s
    }

    pub fn finish(mut self) {
        match self.bar.take() {
            Some(b) => b.finish(),
            None => {
                self.last_line = Instant::now();
                eprintln!("[{}] done: {}", self.label, self.status());
            }
        }
    }
}

fn hms(secs: f64) -> String {
    let s = secs.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, s) => format!("{h}h{m:02}m{s:02}s"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_h_m_s() {
        assert_eq!(super::hms(4.4), "4s");
        assert_eq!(super::hms(245.0), "4m05s");
        assert_eq!(super::hms(3725.0), "1h02m05s");
    }
}
