//! `/metrics` end to end (SPEC §6, issue 14): the exposition read by a
//! Prometheus text parser, its families consistent with the traffic sent,
//! totals that survive a binary upgrade, and pool gauges that move.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use common::{Lb, backend_arg, children, get, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

/// Every family SPEC §6 and issue 14 name.
const FAMILIES: [&str; 23] = [
    "lb_build_info",
    "lb_requests_total",
    "lb_request_duration_seconds",
    "lb_request_bytes_total",
    "lb_response_bytes_total",
    "lb_retries_total",
    "lb_upstream_connect_duration_seconds",
    "lb_upstream_response_duration_seconds",
    "lb_backends_healthy",
    "lb_backends_unhealthy",
    "lb_backend_up",
    "lb_backend_failures_total",
    "lb_health_check_failures_total",
    "lb_pool_idle_connections",
    "lb_pool_busy_connections",
    "lb_connections_active",
    "lb_connections_total",
    "lb_worker_restarts_total",
    "lb_config_reloads_total",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
];

/// One scrape, parsed.
struct Exposition {
    text: String,
    scrape: prometheus_parse::Scrape,
    types: HashMap<String, String>,
}

impl Exposition {
    fn fetch(port: u16) -> Exposition {
        let response = get(port, "/metrics");
        assert_eq!(response.status, 200);
        Exposition::parse(response.body_str())
    }

    /// Parses with `prometheus-parse`, after the checks that crate is too
    /// lenient for (it skips what it cannot read): each family typed once,
    /// before its samples, every sample `name[{labels}] value` with a float
    /// value and a name of a typed family.
    fn parse(text: String) -> Exposition {
        let mut types = HashMap::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(
                    types.insert(name.to_string(), kind.to_string()).is_none(),
                    "{name} typed twice"
                );
                current = name.to_string();
            } else if !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').expect("name value");
                assert!(value.parse::<f64>().is_ok(), "value of {line}");
                let name = series.split('{').next().unwrap_or_default();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|b| types.get(*b).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                assert_eq!(base, current, "{line} outside its family");
            }
        }
        let lines = text.lines().map(|l| Ok(l.to_string()));
        let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus text exposition");
        Exposition {
            text,
            scrape,
            types,
        }
    }

    /// Samples of `name` (a histogram's `_sum`/`_count` by those names).
    fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a prometheus_parse::Sample> {
        self.scrape.samples.iter().filter(move |s| s.metric == name)
    }

    fn value(sample: &prometheus_parse::Sample) -> f64 {
        use prometheus_parse::Value;
        match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("not a single value: {other:?}"),
        }
    }

    /// The one sample of `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .samples(name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(Exposition::value)
            .collect();
        assert_eq!(found.len(), 1, "{name}{labels:?} in:\n{}", self.text);
        found[0]
    }

    /// The counters, without gauges nor what scraping itself moves.
    fn counters(&self) -> Vec<String> {
        self.text
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && !l.starts_with("process_")
                    && !l.starts_with("lb_connections_")
                    && !l.starts_with("lb_pool_")
            })
            .map(str::to_string)
            .collect()
    }
}

fn origin() -> Origin {
    Origin::start(OriginConfig::new("a")).expect("origin starts")
}

#[test]
fn byte_counters_and_upstream_timings_follow_each_request() {
    let o = origin();
    let lb = Lb::start(&["--mode", "sp", "-b", &backend_arg(&o)]);
    let request = b"GET /bytes/100 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let answer = common::raw_exchange(lb.port(), request, Duration::from_secs(5));
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let post =
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let echoed = common::raw_exchange(lb.port(), post, Duration::from_secs(5));
    assert!(echoed.starts_with(b"HTTP/1.1 200"), "{echoed:?}");
    let m = Exposition::fetch(lb.port());
    let backend = o.addr().to_string();
    let b = [("backend", backend.as_str())];
    let (up, down) = (request.len() + post.len(), answer.len() + echoed.len());
    assert_eq!(m.get("lb_request_bytes_total", &b), up as f64, "{}", m.text);
    assert_eq!(m.get("lb_response_bytes_total", &b), down as f64);
    assert_eq!(
        m.get("lb_upstream_response_duration_seconds_count", &b),
        2.0
    );
    // The first request opened the backend connection; the second reused it.
    assert_eq!(m.get("lb_upstream_connect_duration_seconds_count", &b), 1.0);
    let zero_retries = m
        .samples("lb_retries_total")
        .all(|s| Exposition::value(s) == 0.0);
    assert!(zero_retries, "{}", m.text);
}

#[test]
fn the_exposition_parses_and_its_families_agree_with_the_traffic() {
    let o = origin();
    let lb = Lb::start(&["--mode", "mp", "-w", "2", "-b", &backend_arg(&o)]);
    for _ in 0..10 {
        assert_eq!(get(lb.port(), "/").status, 200);
    }
    assert_eq!(get(lb.port(), "/status/503").status, 503);
    let m = Exposition::fetch(lb.port());
    for family in FAMILIES {
        assert!(
            m.types.contains_key(family),
            "{family} missing:\n{}",
            m.text
        );
        assert!(m.scrape.docs.contains_key(family), "{family} has no HELP");
    }
    let backend = o.addr().to_string();
    let b = [("backend", backend.as_str())];
    assert_eq!(m.get("lb_requests_total", &[b[0], ("code", "200")]), 10.0);
    assert_eq!(m.get("lb_requests_total", &[b[0], ("code", "503")]), 1.0);
    assert_eq!(m.get("lb_request_duration_seconds_count", &[]), 11.0);
    // Each `get` is a connection of its own; so was this scrape.
    assert!(m.get("lb_connections_total", &[]) >= 12.0, "{}", m.text);
    assert_eq!(m.get("lb_backend_up", &b), 1.0);
    assert_eq!(m.get("lb_backends_healthy", &[]), 1.0);
    assert_eq!(m.get("lb_worker_restarts_total", &[]), 0.0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(m.get("lb_build_info", &[("version", version)]), 1.0);
    assert_eq!(m.samples("lb_retries_total").count(), 4, "one per reason");
    // process_* covers the master and both workers.
    let fds = m.get("process_open_fds", &[]);
    assert!(fds >= 3.0 * 3.0, "{fds}");
    let rss = m.get("process_resident_memory_bytes", &[]);
    assert!(rss > 3.0 * 1024.0 * 1024.0, "{rss}");
    let start = m.get("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(start <= now && start > now - 600.0, "{start} vs {now}");
    // Whichever worker answers, the counters are the same.
    for _ in 0..6 {
        assert_eq!(Exposition::fetch(lb.port()).counters(), m.counters());
    }
}

fn pid_file(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("lb-metrics-{tag}-{}.pid", std::process::id()))
}

fn read_pid(path: &PathBuf) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[test]
fn counters_and_restarts_survive_a_binary_upgrade() {
    let o = origin();
    let pids = pid_file("upgrade");
    let lb = Lb::start(&[
        "--mode",
        "mp",
        "-w",
        "2",
        "-b",
        &backend_arg(&o),
        "--pid-file",
        pids.to_str().unwrap(),
    ]);
    let old = lb.pid();
    assert!(wait_until(Duration::from_secs(5), || read_pid(&pids) == Some(old)));
    for _ in 0..7 {
        assert_eq!(get(lb.port(), "/").status, 200);
    }
    assert_eq!(get(lb.port(), "/status/404").status, 404);
    // A worker dies and is respawned: one restart.
    let workers = children(old);
    assert_eq!(workers.len(), 2);
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status();
    assert!(wait_until(Duration::from_secs(10), || {
        Exposition::fetch(lb.port()).get("lb_worker_restarts_total", &[]) == 1.0
    }));
    let before = Exposition::fetch(lb.port());
    let backend = o.addr().to_string();
    let ok = [("backend", backend.as_str()), ("code", "200")];
    assert_eq!(before.get("lb_requests_total", &ok), 7.0);

    lb.signal("USR2");
    assert!(
        wait_until(Duration::from_secs(10), || read_pid(&pids)
            .is_some_and(|p| p != old)),
        "the pid file names the new master: {:?}",
        lb.stderr_lines()
    );
    let new = read_pid(&pids).expect("new pid");
    assert!(wait_until(Duration::from_secs(5), || children(new).len() == 2));
    assert!(lb.wait_for_log("upgrade: new master", Duration::from_secs(5)));
    for _ in 0..3 {
        assert_eq!(get(lb.port(), "/").status, 200);
    }
    // Requests the old workers were still draining reach the new master's
    // block within a refresh: wait for the totals, bounded.
    let mut after = Exposition::fetch(lb.port());
    wait_until(Duration::from_secs(5), || {
        after = Exposition::fetch(lb.port());
        after.get("lb_requests_total", &ok) >= 10.0
    });
    assert_eq!(after.get("lb_requests_total", &ok), 10.0, "{}", after.text);
    assert_eq!(
        after.get("lb_requests_total", &[ok[0], ("code", "404")]),
        1.0
    );
    assert_eq!(after.get("lb_request_duration_seconds_count", &[]), 11.0);
    assert_eq!(after.get("lb_worker_restarts_total", &[]), 1.0);
    assert!(
        after.get("lb_connections_total", &[]) >= before.get("lb_connections_total", &[]) + 3.0
    );
    // The new tree's processes, not the old one's.
    assert!(
        after.get("process_start_time_seconds", &[])
            >= before.get("process_start_time_seconds", &[])
    );
    let _ = std::fs::remove_file(&pids);
}

#[test]
fn pool_gauges_follow_the_backend_connections() {
    let o = origin();
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let backend = o.addr().to_string();
    let b = [("backend", backend.as_str())];
    let m = Exposition::fetch(lb.port());
    assert_eq!(m.get("lb_pool_idle_connections", &b), 0.0);
    assert_eq!(m.get("lb_pool_busy_connections", &b), 0.0);
    // A slow request holds its backend connection while it runs.
    let port = lb.port();
    let slow = thread::spawn(move || get(port, "/delay/2500").status);
    assert!(
        wait_until(Duration::from_secs(3), || {
            Exposition::fetch(port).get("lb_pool_busy_connections", &b) == 1.0
        }),
        "busy while the request runs"
    );
    assert_eq!(slow.join().expect("slow request"), 200);
    // Once answered, the connection waits in the pool.
    assert!(
        wait_until(Duration::from_secs(3), || {
            let m = Exposition::fetch(port);
            m.get("lb_pool_idle_connections", &b) == 1.0
                && m.get("lb_pool_busy_connections", &b) == 0.0
        }),
        "idle after the exchange"
    );
}
