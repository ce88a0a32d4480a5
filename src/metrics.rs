//! Counters of a worker and their Prometheus text exposition (SPEC §6).
//!
//! Recording is a few integer increments on the request path, no locks, no
//! allocation; rendering happens only for a scrape. Today each worker owns
//! its counters (sp mode); the multi-process master will place the same
//! layout in shared memory and sum it across workers.

use std::fmt::Write;
use std::time::Duration;

use crate::upstream::{Backend, BackendId};

/// Status codes are counted exactly, 100–599.
const CODES: usize = 600;
/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug)]
pub struct Metrics {
    labels: Vec<String>,
    /// `[backend][code]`; the last backend row is "none": answers the proxy
    /// gave itself (malformed requests, no backend reachable).
    requests: Vec<u64>,
    failures: Vec<u64>,
    buckets: [u64; BUCKETS.len()],
    duration_sum: Duration,
    duration_count: u64,
}

impl Metrics {
    pub fn new(backends: &[Backend]) -> Metrics {
        let mut labels: Vec<String> = backends.iter().map(|b| b.label.clone()).collect();
        labels.push("none".to_string());
        Metrics {
            requests: vec![0; labels.len() * CODES],
            failures: vec![0; backends.len()],
            labels,
            buckets: [0; BUCKETS.len()],
            duration_sum: Duration::ZERO,
            duration_count: 0,
        }
    }

    /// One answered request: by `backend`, or by the proxy itself (`None`).
    pub fn request(&mut self, backend: Option<BackendId>, status: u16, took: Duration) {
        let row = backend.map_or(self.labels.len() - 1, |b| b.0);
        let code = usize::from(status).min(CODES - 1);
        self.requests[row * CODES + code] += 1;
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i] += 1;
        }
        self.duration_sum += took;
        self.duration_count += 1;
    }

    /// A failure blamed on a backend (connect error, I/O error, timeout).
    pub fn failure(&mut self, backend: BackendId) {
        self.failures[backend.0] += 1;
    }

    /// The text exposition format, version 0.0.4.
    pub fn render(&self, connections_active: usize) -> String {
        let mut out = String::with_capacity(4096);
        let backends = &self.labels[..self.labels.len() - 1];
        header(
            &mut out,
            "lb_requests_total",
            "counter",
            "Requests answered, by backend and status code.",
        );
        for (row, label) in self.labels.iter().enumerate() {
            for code in 0..CODES {
                let n = self.requests[row * CODES + code];
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "lb_requests_total{{backend=\"{label}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        header(
            &mut out,
            "lb_request_duration_seconds",
            "histogram",
            "Time from a complete request head to the end of its response.",
        );
        let mut cumulative = 0;
        for (le, n) in BUCKETS.iter().zip(self.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "lb_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            self.duration_count
        );
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_sum {}",
            self.duration_sum.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "lb_request_duration_seconds_count {}",
            self.duration_count
        );
        // Health checks are not in yet: every backend counts as up.
        header(
            &mut out,
            "lb_backends_healthy",
            "gauge",
            "Backends currently considered up.",
        );
        let _ = writeln!(out, "lb_backends_healthy {}", backends.len());
        header(
            &mut out,
            "lb_backends_unhealthy",
            "gauge",
            "Backends currently considered down.",
        );
        let _ = writeln!(out, "lb_backends_unhealthy 0");
        header(
            &mut out,
            "lb_backend_up",
            "gauge",
            "1 if the backend is considered up.",
        );
        for label in backends {
            let _ = writeln!(out, "lb_backend_up{{backend=\"{label}\"}} 1");
        }
        header(
            &mut out,
            "lb_backend_failures_total",
            "counter",
            "Failures blamed on the backend.",
        );
        for (label, n) in backends.iter().zip(&self.failures) {
            let _ = writeln!(out, "lb_backend_failures_total{{backend=\"{label}\"}} {n}");
        }
        header(
            &mut out,
            "lb_connections_active",
            "gauge",
            "Open client connections.",
        );
        let _ = writeln!(out, "lb_connections_active {connections_active}");
        header(
            &mut out,
            "lb_worker_restarts_total",
            "counter",
            "Workers respawned by the master.",
        );
        let _ = writeln!(out, "lb_worker_restarts_total 0");
        header(
            &mut out,
            "lb_config_reloads_total",
            "counter",
            "Config reloads, by result.",
        );
        let _ = writeln!(out, "lb_config_reloads_total{{result=\"success\"}} 0");
        let _ = writeln!(out, "lb_config_reloads_total{{result=\"failure\"}} 0");
        out
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::parse_spec;

    #[test]
    fn renders_counts_histogram_and_gauges() {
        let backends = vec![parse_spec("127.0.0.1:9001", BackendId(0)).unwrap()];
        let mut m = Metrics::new(&backends);
        m.request(Some(BackendId(0)), 200, Duration::from_millis(3));
        m.request(Some(BackendId(0)), 200, Duration::from_millis(30));
        m.request(None, 400, Duration::ZERO);
        m.failure(BackendId(0));
        let text = m.render(7);
        for line in [
            "lb_requests_total{backend=\"127.0.0.1:9001\",code=\"200\"} 2",
            "lb_requests_total{backend=\"none\",code=\"400\"} 1",
            "lb_request_duration_seconds_bucket{le=\"0.005\"} 2",
            "lb_request_duration_seconds_bucket{le=\"0.05\"} 3",
            "lb_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "lb_request_duration_seconds_count 3",
            "lb_backend_failures_total{backend=\"127.0.0.1:9001\"} 1",
            "lb_backend_up{backend=\"127.0.0.1:9001\"} 1",
            "lb_connections_active 7",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
    }
}
