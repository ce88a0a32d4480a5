//! A scrape: the shared cells as Prometheus metric families (a custom
//! `prometheus::core::Collector`), written by the crate's `TextEncoder`,
//! so escaping and the format come from the crate. Runs only for a scrape.

use std::sync::OnceLock;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, TextEncoder};

use super::layout::{self, BUCKETS, CODES, RetryReason};
use super::{Metrics, histogram};
use crate::upstream::Backend;

/// Every family a scrape returns: name, help, type, label names.
const FAMILIES: [(&str, &str, MetricType, &[&str]); 23] = [
    (
        "lb_build_info",
        "The running binary: version and commit; always 1.",
        MetricType::GAUGE,
        &["version", "commit"],
    ),
    (
        "lb_requests_total",
        "Requests answered, by backend and status code.",
        MetricType::COUNTER,
        &["backend", "code"],
    ),
    (
        "lb_request_duration_seconds",
        "Time from a complete request head to the end of its response.",
        MetricType::HISTOGRAM,
        &[],
    ),
    (
        "lb_request_bytes_total",
        "Request bytes sent to the backend, head and body.",
        MetricType::COUNTER,
        &["backend"],
    ),
    (
        "lb_response_bytes_total",
        "Response bytes relayed from the backend, head and body.",
        MetricType::COUNTER,
        &["backend"],
    ),
    (
        "lb_retries_total",
        "Requests sent again after the backend failed them, by reason.",
        MetricType::COUNTER,
        &["backend", "reason"],
    ),
    (
        "lb_upstream_connect_duration_seconds",
        "Time to establish a new backend connection (TLS included).",
        MetricType::HISTOGRAM,
        &["backend"],
    ),
    (
        "lb_upstream_response_duration_seconds",
        "Time from the request sent to the backend's response head.",
        MetricType::HISTOGRAM,
        &["backend"],
    ),
    (
        "lb_backends_healthy",
        "Backends up in every worker.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "lb_backends_unhealthy",
        "Backends down in at least one worker.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "lb_backend_up",
        "1 if every worker considers the backend up.",
        MetricType::GAUGE,
        &["backend"],
    ),
    (
        "lb_backend_failures_total",
        "Failures blamed on the backend.",
        MetricType::COUNTER,
        &["backend"],
    ),
    (
        "lb_health_check_failures_total",
        "Active health probes that failed, summed over workers.",
        MetricType::COUNTER,
        &["backend"],
    ),
    (
        "lb_pool_idle_connections",
        "Idle keep-alive connections to the backend, over all workers.",
        MetricType::GAUGE,
        &["backend"],
    ),
    (
        "lb_pool_busy_connections",
        "Backend connections carrying a request, over all workers.",
        MetricType::GAUGE,
        &["backend"],
    ),
    (
        "lb_connections_active",
        "Open client connections.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "lb_connections_total",
        "Client connections accepted (scrapes included).",
        MetricType::COUNTER,
        &[],
    ),
    (
        "lb_worker_restarts_total",
        "Workers respawned by the master.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "lb_config_reloads_total",
        "Config reloads, by result.",
        MetricType::COUNTER,
        &["result"],
    ),
    (
        "process_cpu_seconds_total",
        "User and system CPU time of the master and its workers.",
        MetricType::COUNTER,
        &[],
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory of the master and its workers, summed (shared pages counted in each).",
        MetricType::GAUGE,
        &[],
    ),
    (
        "process_open_fds",
        "Open file descriptors of the master and its workers.",
        MetricType::GAUGE,
        &[],
    ),
    (
        "process_start_time_seconds",
        "Start of the master, in seconds since the Unix epoch.",
        MetricType::GAUGE,
        &[],
    ),
];

/// One scrape of `metrics`, with backend labels from `backends`.
pub struct Scrape<'a> {
    metrics: &'a Metrics,
    backends: &'a [Backend],
    descs: Vec<Desc>,
    /// /proc is read once per scrape, for all `process_*` families.
    tree: OnceLock<super::process::Tree>,
}

impl<'a> Scrape<'a> {
    pub fn new(metrics: &'a Metrics, backends: &'a [Backend]) -> Scrape<'a> {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help, _, labels)| {
                let labels = labels.iter().map(|l| l.to_string()).collect();
                Desc::new(
                    name.to_string(),
                    help.to_string(),
                    labels,
                    Default::default(),
                )
                .ok()
            })
            .collect();
        let backends = &backends[..backends.len().min(layout::MAX_BACKENDS)];
        Scrape {
            metrics,
            backends,
            descs,
            tree: OnceLock::new(),
        }
    }

    /// The exposition text. Families without a sample (no request yet, no
    /// backend) are left out: the format has no empty family.
    pub fn encode(&self) -> String {
        let families: Vec<MetricFamily> = self
            .collect()
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect();
        let mut out = Vec::with_capacity(16 * 1024);
        // The encoder fails only on an empty family or a failed write to
        // a Vec, both ruled out above.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn samples(&self, name: &str) -> Vec<Metric> {
        let m = self.metrics;
        let per_backend = |cell: usize| -> Vec<Metric> {
            self.backends
                .iter()
                .enumerate()
                .map(|(i, b)| counter(&[("backend", &b.label)], m.sum(layout::row(i) + cell)))
                .collect()
        };
        let backend_hist = |cell: usize| -> Vec<Metric> {
            self.backends
                .iter()
                .enumerate()
                .map(|(i, b)| hist(m, &[("backend", &b.label)], layout::row(i) + cell))
                .collect()
        };
        let pool = |cell: usize| -> Vec<Metric> {
            self.backends
                .iter()
                .enumerate()
                .map(|(i, b)| gauge(&[("backend", &b.label)], m.sum(cell + i) as f64))
                .collect()
        };
        let healthy = || {
            (0..self.backends.len())
                .filter(|&b| m.backend_up(b))
                .count()
        };
        match name {
            "lb_build_info" => vec![gauge(
                &[
                    ("version", crate::build_info::VERSION),
                    ("commit", crate::build_info::COMMIT),
                ],
                1.0,
            )],
            "lb_requests_total" => self.requests(),
            "lb_request_duration_seconds" => vec![hist(m, &[], layout::DURATION)],
            "lb_request_bytes_total" => per_backend(layout::R_REQUEST_BYTES),
            "lb_response_bytes_total" => per_backend(layout::R_RESPONSE_BYTES),
            "lb_retries_total" => self.retries(),
            "lb_upstream_connect_duration_seconds" => backend_hist(layout::R_CONNECT),
            "lb_upstream_response_duration_seconds" => backend_hist(layout::R_RESPONSE),
            "lb_backends_healthy" => vec![gauge(&[], healthy() as f64)],
            "lb_backends_unhealthy" => {
                vec![gauge(&[], (self.backends.len() - healthy()) as f64)]
            }
            "lb_backend_up" => self
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    gauge(
                        &[("backend", &b.label)],
                        f64::from(u8::from(m.backend_up(i))),
                    )
                })
                .collect(),
            "lb_backend_failures_total" => per_backend(layout::R_FAILURES),
            "lb_health_check_failures_total" => per_backend(layout::R_HEALTH_FAILURES),
            "lb_pool_idle_connections" => pool(layout::POOL_IDLE),
            "lb_pool_busy_connections" => pool(layout::POOL_BUSY),
            "lb_connections_active" => vec![gauge(&[], m.sum(layout::CONNECTIONS) as f64)],
            "lb_connections_total" => vec![counter(&[], m.sum(layout::CONNECTIONS_TOTAL))],
            "lb_worker_restarts_total" => {
                vec![counter(&[], m.header_total(layout::RESTARTS))]
            }
            "lb_config_reloads_total" => vec![
                counter(&[("result", "success")], m.header_total(layout::RELOADS_OK)),
                counter(
                    &[("result", "failure")],
                    m.header_total(layout::RELOADS_FAILED),
                ),
            ],
            _ => self.process(name),
        }
    }

    /// Non-zero `[backend][code]` counts, then the proxy's own answers.
    fn requests(&self) -> Vec<Metric> {
        let rows = self
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.label.as_str()))
            .chain(std::iter::once((layout::NONE, "none")));
        let mut out = Vec::new();
        for (row, label) in rows {
            for code in 0..CODES {
                let n = self.metrics.sum(layout::row(row) + code);
                if n > 0 {
                    let code = code.to_string();
                    out.push(counter(&[("backend", label), ("code", &code)], n));
                }
            }
        }
        out
    }

    fn retries(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        for (i, b) in self.backends.iter().enumerate() {
            for reason in RetryReason::ALL {
                let n = self
                    .metrics
                    .sum(layout::row(i) + layout::R_RETRIES + reason as usize);
                out.push(counter(
                    &[("backend", &b.label), ("reason", reason.label())],
                    n,
                ));
            }
        }
        out
    }

    fn process(&self, name: &str) -> Vec<Metric> {
        let tree = self
            .tree
            .get_or_init(|| super::process::tree(&self.metrics.pids()));
        let value = match name {
            "process_cpu_seconds_total" => return vec![counter_f(tree.cpu_seconds)],
            "process_resident_memory_bytes" => tree.resident_bytes as f64,
            "process_open_fds" => tree.open_fds as f64,
            "process_start_time_seconds" => tree.start_time,
            _ => return Vec::new(),
        };
        vec![gauge(&[], value)]
    }
}

impl Collector for Scrape<'_> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        FAMILIES
            .iter()
            .map(|&(name, help, kind, _)| {
                let mut family = MetricFamily::default();
                family.set_name(name.to_string());
                family.set_help(help.to_string());
                family.set_field_type(kind);
                family.set_metric(self.samples(name));
                family
            })
            .collect()
    }
}

fn labelled(labels: &[(&str, &str)]) -> Metric {
    let pairs = labels
        .iter()
        .map(|(k, v)| {
            let mut pair = LabelPair::default();
            pair.set_name(k.to_string());
            pair.set_value(v.to_string());
            pair
        })
        .collect();
    Metric::from_label(pairs)
}

fn counter(labels: &[(&str, &str)], n: u64) -> Metric {
    let mut c = Counter::default();
    c.set_value(n as f64);
    let mut m = labelled(labels);
    m.set_counter(c);
    m
}

fn counter_f(v: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(v);
    let mut m = labelled(&[]);
    m.set_counter(c);
    m
}

fn gauge(labels: &[(&str, &str)], v: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(v);
    let mut m = labelled(labels);
    m.set_gauge(g);
    m
}

/// The histogram at cell `at`, with cumulative buckets (the encoder adds
/// `+Inf` from the count).
fn hist(metrics: &Metrics, labels: &[(&str, &str)], at: usize) -> Metric {
    let (counts, sum, count) = histogram(metrics, at);
    let mut cumulative = 0;
    let buckets = BUCKETS
        .iter()
        .zip(counts)
        .map(|(&le, n)| {
            cumulative += n;
            let mut b = Bucket::default();
            b.set_upper_bound(le);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    let mut h = Histogram::default();
    h.set_bucket(buckets);
    h.set_sample_sum(sum);
    h.set_sample_count(count);
    let mut m = labelled(labels);
    m.set_histogram(h);
    m
}
