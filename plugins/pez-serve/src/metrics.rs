//! Prometheus text-format metrics (`GET /metrics`): requests by route, model and status, latency histograms,
//! classifier batch sizes, queue depth, requests in flight, cancelled work and resident memory.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

const LATENCY_BOUNDS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last is +Inf.
    counts: Vec<u64>,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len() + 1], sum: 0.0 }
    }
    fn observe(&mut self, x: f64) {
        let i = self.bounds.iter().position(|&b| x <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += x;
    }
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            let le = self.bounds.get(i).map_or("+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {acc}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {acc}");
    }
}

#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    batch_texts: Mutex<Histogram>,
    queue: Mutex<BTreeMap<String, i64>>,
    pub in_flight: AtomicI64,
    /// Classifier texts dropped because their client had gone.
    pub cancelled_texts: AtomicU64,
    /// Generation requests refused because the resident size was over its budget.
    pub memory_refusals: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Mutex::default(),
            latency: Mutex::default(),
            batch_texts: Mutex::new(Histogram::new(BATCH_BOUNDS)),
            queue: Mutex::default(),
            in_flight: AtomicI64::new(0),
            cancelled_texts: AtomicU64::new(0),
            memory_refusals: AtomicU64::new(0),
        }
    }
}

/// Escapes a label value (backslash, quote, newline), as the text format asks.
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    /// `model` must be a served model's name or "-" (names from requests would make the label set unbounded).
    pub fn request(&self, route: &str, model: &str, status: u16, seconds: f64) {
        *self.requests.lock().unwrap().entry((route.to_string(), model.to_string(), status)).or_default() += 1;
        self.latency.lock().unwrap().entry(route.to_string()).or_insert_with(|| Histogram::new(LATENCY_BOUNDS)).observe(seconds);
    }
    pub fn batch(&self, texts: usize) {
        self.batch_texts.lock().unwrap().observe(texts as f64);
    }
    pub fn queue_depth(&self, base: &str, texts: usize) {
        self.queue.lock().unwrap().insert(base.to_string(), texts as i64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP pez_requests_total Requests answered, by route, model and HTTP status.\n# TYPE pez_requests_total counter\n");
        for ((route, model, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(out, "pez_requests_total{{route=\"{}\",model=\"{}\",status=\"{status}\"}} {n}", esc(route), esc(model));
        }
        out.push_str("# HELP pez_request_duration_seconds Time from the request's arrival to its response, by route.\n# TYPE pez_request_duration_seconds histogram\n");
        for (route, h) in self.latency.lock().unwrap().iter() {
            h.render(&mut out, "pez_request_duration_seconds", &format!("route=\"{}\"", esc(route)));
        }
        out.push_str("# HELP pez_classifier_batch_texts Texts scored together in one classifier batch.\n# TYPE pez_classifier_batch_texts histogram\n");
        self.batch_texts.lock().unwrap().render(&mut out, "pez_classifier_batch_texts", "");
        out.push_str("# HELP pez_classifier_queue_texts Texts waiting or in progress at a base model's classifier worker.\n# TYPE pez_classifier_queue_texts gauge\n");
        for (base, n) in self.queue.lock().unwrap().iter() {
            let _ = writeln!(out, "pez_classifier_queue_texts{{base=\"{}\"}} {n}", esc(base));
        }
        let _ = write!(
            out,
            "# HELP pez_requests_in_flight Requests being served now.\n# TYPE pez_requests_in_flight gauge\npez_requests_in_flight {}\n\
             # HELP pez_cancelled_texts_total Classifier texts dropped unscored because their client had gone.\n# TYPE pez_cancelled_texts_total counter\npez_cancelled_texts_total {}\n\
             # HELP pez_memory_refusals_total Generation requests refused (503) with the resident size over its budget.\n# TYPE pez_memory_refusals_total counter\npez_memory_refusals_total {}\n\
             # HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}\n",
            self.in_flight.load(Ordering::Relaxed),
            self.cancelled_texts.load(Ordering::Relaxed),
            self.memory_refusals.load(Ordering::Relaxed),
            resident_bytes().unwrap_or(0),
        );
        out
    }
}

/// This process's resident size (VmRSS), on Linux.
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Physical memory (MemTotal), on Linux.
pub fn total_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("MemTotal:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
