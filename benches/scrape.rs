//! Cost of one `/metrics` scrape with 100 backends and 4 workers: the
//! time `Metrics::render` takes (summing the shared cells, building the
//! families, the `prometheus` crate's text encoding) and the size of the
//! text. Std only (`harness = false`):
//! `cargo bench --bench scrape [-- SCRAPES]`. A measurement, not a limit.

use std::hint::black_box;
use std::time::{Duration, Instant};

use load_balancer::metrics::{Metrics, RetryReason};
use load_balancer::upstream::{Backend, BackendId, parse_spec};

const BACKENDS: usize = 100;
const WORKERS: usize = 4;

fn main() {
    let scrapes: u32 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200);
    let backends: Vec<Backend> = (0..BACKENDS)
        .map(|i| parse_spec(&format!("127.0.0.1:{}", 9001 + i), BackendId(i)).expect("spec"))
        .collect();
    let m = Metrics::create(WORKERS).expect("metrics block");
    // Traffic on every backend: a few status codes, every histogram.
    for (i, b) in backends.iter().enumerate() {
        for status in [200, 404, 502] {
            m.request(Some(b.id), status, Duration::from_micros(300 + i as u64));
        }
        m.bytes(b.id, 500, 5000);
        m.retry(b.id, RetryReason::Connect);
        m.upstream_timings(
            b.id,
            Some(Duration::from_micros(200)),
            Duration::from_millis(2),
        );
        m.set_pool(b.id, 4, 1);
    }
    let text = m.render(&backends);
    let started = Instant::now();
    for _ in 0..scrapes {
        black_box(m.render(black_box(&backends)));
    }
    let each = started.elapsed() / scrapes;
    println!(
        "{BACKENDS} backends, {WORKERS} workers: {:.2} ms per scrape, {} bytes, {} lines",
        each.as_secs_f64() * 1e3,
        text.len(),
        text.lines().count()
    );
}
