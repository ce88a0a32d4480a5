use super::*;
use crate::upstream::parse_spec;

/// Another descriptor of `m`'s block, as a worker inherits it.
fn reopen(m: &Metrics) -> OwnedFd {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", m.shm_fd()))
        .expect("reopen the block")
        .into()
}

fn backends(ports: &[u16]) -> Vec<Backend> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| parse_spec(&format!("127.0.0.1:{p}"), BackendId(i)).unwrap())
        .collect()
}

fn has(text: &str, line: &str) {
    assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
}

#[test]
fn a_worker_learns_the_slot_count_from_the_block() {
    let master = Metrics::create(3).unwrap();
    let worker = Metrics::attach(2, reopen(&master)).expect("slot 2 of 3");
    worker.set_ready();
    assert!(master.is_ready(2, std::process::id()));
    let err = Metrics::attach(3, reopen(&master))
        .err()
        .expect("slot 3 of 3");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    master.shm.cells()[layout::MAGIC].store(7, Ordering::Relaxed);
    let err = Metrics::attach(0, reopen(&master))
        .err()
        .expect("another layout");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn renders_counts_histogram_and_gauges() {
    let backends = backends(&[9001]);
    let m = Metrics::create(1).unwrap();
    m.request(Some(BackendId(0)), 200, Duration::from_millis(3));
    m.request(Some(BackendId(0)), 200, Duration::from_millis(30));
    m.request(None, 400, Duration::ZERO);
    m.failure(BackendId(0));
    m.set_connections(7);
    m.connection_accepted();
    let text = m.render(&backends);
    for line in [
        "lb_requests_total{backend=\"127.0.0.1:9001\",code=\"200\"} 2",
        "lb_requests_total{backend=\"none\",code=\"400\"} 1",
        "lb_request_duration_seconds_bucket{le=\"0.005\"} 2",
        "lb_request_duration_seconds_bucket{le=\"0.05\"} 3",
        "lb_request_duration_seconds_bucket{le=\"+Inf\"} 3",
        "lb_request_duration_seconds_count 3",
        "lb_backend_failures_total{backend=\"127.0.0.1:9001\"} 1",
        "lb_backend_up{backend=\"127.0.0.1:9001\"} 1",
        "lb_backends_healthy 1",
        "lb_backends_unhealthy 0",
        "lb_connections_active 7",
        "lb_connections_total 1",
        "lb_health_check_failures_total{backend=\"127.0.0.1:9001\"} 0",
        "lb_worker_restarts_total 0",
        "lb_config_reloads_total{result=\"success\"} 0",
        "lb_config_reloads_total{result=\"failure\"} 0",
    ] {
        has(&text, line);
    }
    let build = format!(
        "lb_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        crate::build_info::VERSION,
        crate::build_info::COMMIT
    );
    has(&text, &build);
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family}:\n{text}"
        );
    }
    lint(&text);
}

#[test]
fn bytes_retries_and_upstream_timings_are_per_backend() {
    let backends = backends(&[9001, 9002]);
    let m = Metrics::create(1).unwrap();
    m.bytes(BackendId(1), 100, 2000);
    m.bytes(BackendId(1), 10, 20);
    m.retry(BackendId(0), RetryReason::Reused);
    m.retry(BackendId(0), RetryReason::Connect);
    m.retry(BackendId(0), RetryReason::Connect);
    m.upstream_timings(
        BackendId(0),
        Some(Duration::from_micros(800)),
        Duration::from_millis(20),
    );
    m.upstream_timings(BackendId(0), None, Duration::from_secs(20));
    let text = m.render(&backends);
    for line in [
        "lb_request_bytes_total{backend=\"127.0.0.1:9002\"} 110",
        "lb_response_bytes_total{backend=\"127.0.0.1:9002\"} 2020",
        "lb_request_bytes_total{backend=\"127.0.0.1:9001\"} 0",
        "lb_retries_total{backend=\"127.0.0.1:9001\",reason=\"connect\"} 2",
        "lb_retries_total{backend=\"127.0.0.1:9001\",reason=\"reused\"} 1",
        "lb_retries_total{backend=\"127.0.0.1:9001\",reason=\"failed\"} 0",
        "lb_retries_total{backend=\"127.0.0.1:9002\",reason=\"refused\"} 0",
        "lb_upstream_connect_duration_seconds_bucket{backend=\"127.0.0.1:9001\",le=\"0.001\"} 1",
        "lb_upstream_connect_duration_seconds_count{backend=\"127.0.0.1:9001\"} 1",
        "lb_upstream_connect_duration_seconds_sum{backend=\"127.0.0.1:9001\"} 0.0008",
        "lb_upstream_response_duration_seconds_bucket{backend=\"127.0.0.1:9001\",le=\"0.01\"} 0",
        "lb_upstream_response_duration_seconds_bucket{backend=\"127.0.0.1:9001\",le=\"0.025\"} 1",
        "lb_upstream_response_duration_seconds_bucket{backend=\"127.0.0.1:9001\",le=\"10\"} 1",
        "lb_upstream_response_duration_seconds_bucket{backend=\"127.0.0.1:9001\",le=\"+Inf\"} 2",
        "lb_upstream_response_duration_seconds_count{backend=\"127.0.0.1:9001\"} 2",
        "lb_upstream_response_duration_seconds_count{backend=\"127.0.0.1:9002\"} 0",
    ] {
        has(&text, line);
    }
    lint(&text);
}

#[test]
fn pool_gauges_are_summed_over_workers() {
    let backends = backends(&[9001]);
    let master = Metrics::create(2).unwrap();
    let w0 = Metrics::attach(0, reopen(&master)).unwrap();
    let w1 = Metrics::attach(1, reopen(&master)).unwrap();
    w0.set_pool(BackendId(0), 2, 1);
    w1.set_pool(BackendId(0), 3, 0);
    let text = w0.render(&backends);
    has(
        &text,
        "lb_pool_idle_connections{backend=\"127.0.0.1:9001\"} 5",
    );
    has(
        &text,
        "lb_pool_busy_connections{backend=\"127.0.0.1:9001\"} 1",
    );
}

#[test]
fn health_check_failures_are_summed_over_workers() {
    let backends = backends(&[9001, 9002]);
    let master = Metrics::create(2).unwrap();
    let w0 = Metrics::attach(0, reopen(&master)).unwrap();
    let w1 = Metrics::attach(1, reopen(&master)).unwrap();
    w0.health_check_failures(BackendId(1), 2);
    w1.health_check_failures(BackendId(1), 3);
    w1.failure(BackendId(0));
    w1.set_backend_up(BackendId(1), false);
    let text = w0.render(&backends);
    for line in [
        "lb_health_check_failures_total{backend=\"127.0.0.1:9001\"} 0",
        "lb_health_check_failures_total{backend=\"127.0.0.1:9002\"} 5",
        "lb_backend_failures_total{backend=\"127.0.0.1:9001\"} 1",
        "lb_backend_failures_total{backend=\"127.0.0.1:9002\"} 0",
        "lb_backend_up{backend=\"127.0.0.1:9002\"} 0",
        "lb_backends_unhealthy 1",
    ] {
        has(&text, line);
    }
    let strip = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("process_"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        strip(&text),
        strip(&w1.render(&backends)),
        "whichever worker answers"
    );
    lint(&text);
}

#[test]
fn totals_carry_over_by_label_not_by_id() {
    // The old tree: two backends, one worker, a respawn.
    let old_backends = backends(&[9001, 9002]);
    let old = Metrics::create(1).unwrap();
    let old_worker = Metrics::attach(0, reopen(&old)).unwrap();
    old_worker.request(Some(BackendId(0)), 200, Duration::from_millis(1));
    old_worker.request(Some(BackendId(1)), 503, Duration::from_millis(1));
    old_worker.bytes(BackendId(1), 7, 9);
    old_worker.request(None, 400, Duration::ZERO);
    old_worker.connection_accepted();
    old_worker.set_connections(4);
    old_worker.set_pool(BackendId(1), 3, 3);
    old.worker_restarted();
    // The new tree lists 9002 first and adds 9003.
    let new_backends = backends(&[9002, 9003, 9001]);
    let labels: Vec<String> = old_backends.iter().map(|b| b.label.clone()).collect();
    let mut new = Metrics::create(2).unwrap();
    new.carry_from(reopen(&old), &labels, &new_backends)
        .unwrap();
    let worker = Metrics::attach(1, reopen(&new)).unwrap();
    worker.request(Some(BackendId(0)), 503, Duration::from_millis(1));
    new.worker_restarted();
    // The old tree still drains: counted at the next refresh.
    old_worker.request(Some(BackendId(0)), 200, Duration::from_millis(1));
    new.refresh_carried(&new_backends);
    new.refresh_carried(&new_backends);
    let text = worker.render(&new_backends);
    for line in [
        "lb_requests_total{backend=\"127.0.0.1:9001\",code=\"200\"} 2",
        "lb_requests_total{backend=\"127.0.0.1:9002\",code=\"503\"} 2",
        "lb_requests_total{backend=\"none\",code=\"400\"} 1",
        "lb_request_bytes_total{backend=\"127.0.0.1:9002\"} 7",
        "lb_response_bytes_total{backend=\"127.0.0.1:9002\"} 9",
        "lb_request_bytes_total{backend=\"127.0.0.1:9003\"} 0",
        "lb_request_duration_seconds_count 5",
        "lb_connections_total 1",
        "lb_worker_restarts_total 2",
        // Gauges describe the running tree only.
        "lb_connections_active 0",
        "lb_pool_idle_connections{backend=\"127.0.0.1:9002\"} 0",
    ] {
        has(&text, line);
    }
    assert!(
        !text.contains("9003\",code"),
        "nothing carried to a new backend:\n{text}"
    );
    // A chain: the next master carries the carried totals too.
    let newer = {
        let labels: Vec<String> = new_backends.iter().map(|b| b.label.clone()).collect();
        let mut m = Metrics::create(1).unwrap();
        m.carry_from(reopen(&new), &labels, &old_backends).unwrap();
        m
    };
    let text = newer.render(&old_backends);
    has(
        &text,
        "lb_requests_total{backend=\"127.0.0.1:9002\",code=\"503\"} 2",
    );
    has(&text, "lb_worker_restarts_total 2");
    lint(&text);
}

fn lint(text: &str) {
    let mut families: Vec<(&str, &str)> = Vec::new();
    let mut help: Option<&str> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').expect("HELP name text");
            assert!(!doc.is_empty(), "{line}");
            assert!(
                families.iter().all(|(n, _)| *n != name),
                "{name} announced twice"
            );
            help = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert_eq!(help.take(), Some(name), "TYPE right after its HELP");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            families.push((name, kind));
        } else {
            let &(family, kind) = families.last().expect("a sample before any TYPE");
            let (series, value) = line.rsplit_once(' ').expect("name value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
            let name = series.split('{').next().unwrap_or_default();
            let ok = match kind {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family)),
                _ => name == family,
            };
            assert!(ok, "{line} outside its family {family}");
            if kind == "counter" {
                assert!(family.ends_with("_total"), "{family}");
            }
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                let inner = labels
                    .strip_prefix('{')
                    .and_then(|l| l.strip_suffix('}'))
                    .expect("{labels}");
                for pair in inner.split(',') {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    assert!(
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                        "{line}"
                    );
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "{line}"
                    );
                }
            }
        }
    }
    assert!(help.is_none(), "HELP without TYPE");
}

#[test]
fn the_master_comes_first_among_the_tree_pids() {
    let m = Metrics::create(2).unwrap();
    // A worker with a lower pid than the master (pids wrap around).
    m.shm.cells()[layout::region(1) + layout::READY].store(1, Ordering::Relaxed);
    m.set_ready();
    assert_eq!(m.pids(), vec![std::process::id(), 1]);
}
