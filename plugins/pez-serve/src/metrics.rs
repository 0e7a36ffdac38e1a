//! `GET /metrics` in the OpenMetrics text format (Prometheus' own `prometheus-client`): requests by route, model
//! and status, latency histograms, classifier batch sizes, queue depth, requests in flight, cancelled work and
//! resident memory.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const BATCH_BOUNDS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    model: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BaseLabels {
    base: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BOUNDS.iter().copied())
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    batch_texts: Histogram,
    queue: Family<BaseLabels, Gauge>,
    resident: Gauge,
    pub in_flight: Gauge,
    /// Classifier texts dropped because their client had gone.
    pub cancelled_texts: Counter,
    /// Generation requests refused because the resident size was over its budget.
    pub memory_refusals: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Self {
            registry: Registry::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            batch_texts: Histogram::new(BATCH_BOUNDS.iter().copied()),
            queue: Family::default(),
            resident: Gauge::default(),
            in_flight: Gauge::default(),
            cancelled_texts: Counter::default(),
            memory_refusals: Counter::default(),
        };
        let mut r = m.registry;
        r.register(
            "pez_requests",
            "Requests answered, by route, model and HTTP status",
            m.requests.clone(),
        );
        r.register(
            "pez_request_duration_seconds",
            "Time from the request's arrival to its response, by route",
            m.latency.clone(),
        );
        r.register(
            "pez_classifier_batch_texts",
            "Texts scored together in one classifier batch",
            m.batch_texts.clone(),
        );
        r.register(
            "pez_classifier_queue_texts",
            "Texts waiting or in progress at a base model's classifier worker",
            m.queue.clone(),
        );
        r.register(
            "pez_requests_in_flight",
            "Requests being served now",
            m.in_flight.clone(),
        );
        r.register(
            "pez_cancelled_texts",
            "Classifier texts dropped unscored because their client had gone",
            m.cancelled_texts.clone(),
        );
        r.register(
            "pez_memory_refusals",
            "Generation requests refused (503) with the resident size over its budget",
            m.memory_refusals.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.resident.clone(),
        );
        Self { registry: r, ..m }
    }
}

impl Metrics {
    /// `model` must be a served model's name or "-" (names from requests would make the label set unbounded).
    pub fn request(&self, route: &str, model: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.into(),
                model: model.into(),
                status: status.to_string(),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels { route: route.into() })
            .observe(seconds);
    }
    pub fn batch(&self, texts: usize) {
        self.batch_texts.observe(texts as f64);
    }
    pub fn queue_depth(&self, base: &str, texts: usize) {
        self.queue
            .get_or_create(&BaseLabels { base: base.into() })
            .set(texts as i64);
    }

    pub fn render(&self) -> String {
        self.resident.set(resident_bytes().unwrap_or(0) as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// This process's resident size (VmRSS), on Linux.
pub fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Physical memory (MemTotal), on Linux.
pub fn total_memory_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("MemTotal:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_keep_their_names() {
        let m = Metrics::default();
        m.request("/v1/classify", "tiny", 200, 0.02);
        m.batch(3);
        m.queue_depth("tiny", 2);
        m.cancelled_texts.inc();
        let text = m.render();
        for want in [
            "pez_requests_total{route=\"/v1/classify\",model=\"tiny\",status=\"200\"} 1",
            "pez_request_duration_seconds_bucket{le=\"0.025\",route=\"/v1/classify\"} 1",
            "pez_classifier_batch_texts_count 1",
            "pez_classifier_queue_texts{base=\"tiny\"} 2",
            "pez_requests_in_flight 0",
            "pez_cancelled_texts_total 1",
            "pez_memory_refusals_total 0",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(want), "{want:?} not in\n{text}");
        }
    }
}
