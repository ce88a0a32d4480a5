//! Config hot reload (SPEC §3, SIGHUP of §4): the file watched and
//! re-read, a new backend set applied in every worker under continuous
//! load with no failed request, bad files refused, and the new set kept by
//! respawned workers.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::load::{Load, SlowOrigin};
use common::{Client, Lb, children, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

const APPLY: Duration = Duration::from_secs(2);

/// A directory of its own per test (the watcher watches directories).
fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "reload-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A config file with `backends` as `(origin, weight)`.
fn json(backends: &[(&Origin, u32)], strategy: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(o, w)| {
            format!(
                r#"{{"host": "127.0.0.1", "port": {}, "weight": {w}}}"#,
                o.addr().port()
            )
        })
        .collect();
    format!(
        r#"{{"backends": [{}], "strategy": "{strategy}", "health": {{"interval_ms": 200}}}}"#,
        list.join(", ")
    )
}

/// Write-temp-then-rename, as editors and config managers do.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename over");
}

fn start(file: &Path, mode: &str) -> Lb {
    let path = file.to_str().expect("utf-8 path");
    let lb = Lb::start(&["--mode", mode, "-w", "2", "-c", path]);
    if mode == "mp" {
        assert!(
            wait_until(Duration::from_secs(5), || children(lb.pid()).len() == 2),
            "the master starts two workers"
        );
    }
    lb
}

fn metric(port: u16, name: &str) -> u64 {
    let text = common::get(port, "/metrics").body_str();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

fn reloads(port: u16, result: &str) -> u64 {
    metric(
        port,
        &format!("lb_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// Waits for the success counter to reach `n`, then checks it stays there
/// (a burst of events must not count twice).
fn exactly_reloads(lb: &Lb, n: u64) {
    assert!(
        wait_until(APPLY, || reloads(lb.port(), "success") >= n),
        "reload {n} applied: {:#?}",
        lb.stderr_lines()
    );
    thread::sleep(Duration::from_millis(600));
    assert_eq!(reloads(lb.port(), "success"), n, "{:#?}", lb.stderr_lines());
}

fn origin(name: &str) -> Origin {
    Origin::start(OriginConfig::new(name)).expect("origin")
}

#[test]
fn backends_are_added_removed_and_reweighted_under_load() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("set");
    let file = dir.join("lb.json");
    std::fs::write(&file, json(&[(&a, 1)], "round_robin")).unwrap();
    let lb = start(&file, "mp");
    let load = Load::start(lb.port());
    assert!(load.wait_for("a", Instant::now(), APPLY));

    // Added: serves within 2 s.
    let t = Instant::now();
    replace(&file, &json(&[(&a, 1), (&b, 1)], "round_robin"));
    assert!(load.wait_for("b", t, APPLY), "b gets traffic");
    exactly_reloads(&lb, 1);
    assert!(
        lb.wait_for_log("added 127.0.0.1:", APPLY),
        "the diff is logged"
    );

    // Re-weighted: b gets about 4 in 5.
    replace(&file, &json(&[(&a, 1), (&b, 4)], "weighted"));
    exactly_reloads(&lb, 2);
    let t = Instant::now();
    thread::sleep(Duration::from_millis(1500));
    let counts = load.counts_since(t);
    let (na, nb) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    let share = nb as f64 / (na + nb).max(1) as f64;
    assert!(
        (0.7..0.9).contains(&share),
        "b's share {share} of {counts:?}"
    );

    // Removed: no new request reaches a once the reload is applied.
    replace(&file, &json(&[(&b, 1)], "least_conn"));
    exactly_reloads(&lb, 3);
    let t = Instant::now();
    thread::sleep(Duration::from_millis(500));
    let counts = load.counts_since(t);
    assert_eq!(counts.get("a"), None, "a removed: {counts:?}");
    assert!(counts.get("b").is_some_and(|&n| n > 0), "{counts:?}");

    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
}

#[test]
fn a_removed_backend_finishes_its_request_in_flight() {
    let slow = SlowOrigin::start("127.0.0.1:0".parse().unwrap());
    let b = origin("b");
    let dir = scratch_dir("inflight");
    let file = dir.join("lb.json");
    let config = |port: u16| {
        format!(
            r#"{{"backends": [{{"host": "127.0.0.1", "port": {port}}}], "health": {{"interval_ms": 200}}, "loglevel": "debug"}}"#
        )
    };
    std::fs::write(&file, config(slow.addr.port())).unwrap();
    let lb = start(&file, "mp");
    let port = lb.port();
    let client = thread::spawn(move || {
        let mut c = Client::connect(port);
        c.set_read_timeout(Duration::from_secs(10));
        let r = c.request("GET", "/slow", &[], b"");
        (r, Instant::now())
    });
    slow.arrived
        .recv_timeout(APPLY)
        .expect("the slow request reached the backend");
    replace(&file, &config(b.addr().port()));
    // Both workers took it up (the master counts it when it publishes).
    assert!(
        wait_until(APPLY, || lb
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("config generation 2 applied"))
            .count()
            == 2),
        "{:#?}",
        lb.stderr_lines()
    );
    let applied = Instant::now();
    let before = slow.requests.load(Ordering::SeqCst);
    for _ in 0..20 {
        let r = common::get(lb.port(), "/");
        assert_eq!(r.header("x-origin"), Some("b"));
    }
    assert_eq!(
        slow.requests.load(Ordering::SeqCst),
        before,
        "no new request reaches it"
    );
    let (r, done) = client.join().expect("slow client");
    assert!(
        done > applied,
        "the request was in flight across the reload"
    );
    assert_eq!(r.status, 200, "the request in flight completes");
    assert_eq!(r.header("x-origin"), Some("slow"));
}

#[test]
fn an_invalid_file_keeps_the_running_config() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("invalid");
    let file = dir.join("lb.json");
    std::fs::write(&file, json(&[(&a, 1)], "round_robin")).unwrap();
    let lb = start(&file, "mp");
    let load = Load::start(lb.port());
    replace(
        &file,
        "{\"backends\": [\n  {\"host\": \"127.0.0.1\", \"port\": 1,}\n]}",
    );
    assert!(
        wait_until(APPLY, || reloads(lb.port(), "failure") == 1),
        "{:#?}",
        lb.stderr_lines()
    );
    assert!(
        lb.wait_for_log("config reload failed", APPLY),
        "{:#?}",
        lb.stderr_lines()
    );
    let line = lb
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("config reload failed"))
        .unwrap();
    assert!(line.contains("line 2"), "the reason has the place: {line}");
    let t = Instant::now();
    thread::sleep(Duration::from_millis(300));
    assert!(
        load.counts_since(t).contains_key("a"),
        "the old config serves"
    );
    assert_eq!(reloads(lb.port(), "success"), 0);
    // A later valid write is applied.
    let t = Instant::now();
    replace(&file, &json(&[(&b, 1)], "round_robin"));
    assert!(load.wait_for("b", t, APPLY));
    exactly_reloads(&lb, 1);
    // A deleted file keeps the running config too.
    std::fs::remove_file(&file).unwrap();
    assert!(
        lb.wait_for_log("is gone", APPLY),
        "{:#?}",
        lb.stderr_lines()
    );
    let t = Instant::now();
    assert!(load.wait_for("b", t, APPLY));
    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(reloads(lb.port(), "failure"), 1);
}

#[test]
fn each_way_of_replacing_the_file_is_one_reload() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("ways");
    // Kubernetes' layout: lb.json -> ..data/lb.json, ..data -> ..v1.
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/lb.json"), json(&[(&a, 1)], "round_robin")).unwrap();
    std::os::unix::fs::symlink("..v1", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/lb.json", dir.join("lb.json")).unwrap();
    let file = dir.join("lb.json");
    let lb = start(&file, "mp");

    // The symlink swap.
    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/lb.json"), json(&[(&b, 1)], "round_robin")).unwrap();
    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    exactly_reloads(&lb, 1);
    assert_eq!(common::get(lb.port(), "/").header("x-origin"), Some("b"));

    // Rename-replace (of the link: now a plain file).
    replace(&file, &json(&[(&a, 1)], "round_robin"));
    exactly_reloads(&lb, 2);
    assert_eq!(common::get(lb.port(), "/").header("x-origin"), Some("a"));

    // Truncate and write in place, in two writes.
    {
        use std::io::Write;
        let text = json(&[(&b, 1)], "round_robin");
        let mut f = std::fs::File::create(&file).unwrap();
        f.write_all(&text.as_bytes()[..10]).unwrap();
        f.flush().unwrap();
        thread::sleep(Duration::from_millis(20));
        f.write_all(&text.as_bytes()[10..]).unwrap();
    }
    exactly_reloads(&lb, 3);
    assert_eq!(common::get(lb.port(), "/").header("x-origin"), Some("b"));
    assert_eq!(reloads(lb.port(), "failure"), 0, "{:#?}", lb.stderr_lines());
}

#[test]
fn sighup_reloads_and_respawned_workers_run_the_new_set() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("hup");
    let file = dir.join("lb.json");
    std::fs::write(&file, json(&[(&a, 1)], "round_robin")).unwrap();
    let lb = start(&file, "mp");
    replace(&file, &json(&[(&b, 1)], "round_robin"));
    // At once: before the watcher's debounce ends.
    lb.signal("HUP");
    exactly_reloads(&lb, 1);
    assert!(
        lb.wait_for_log("config reloaded (SIGHUP)", APPLY),
        "{:#?}",
        lb.stderr_lines()
    );

    // A worker killed after the reload is replaced by one running the
    // new set, even though the file has become invalid since.
    std::fs::write(&file, "not json").unwrap();
    assert!(wait_until(APPLY, || reloads(lb.port(), "failure") == 1));
    let victim = children(lb.pid())[0];
    let killed = std::process::Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    assert!(wait_until(Duration::from_secs(5), || {
        let now = children(lb.pid());
        now.len() == 2 && !now.contains(&victim)
    }));
    let before = a.requests();
    for _ in 0..40 {
        assert_eq!(common::get(lb.port(), "/").header("x-origin"), Some("b"));
    }
    assert_eq!(a.requests(), before);
}

#[test]
fn sp_mode_watches_and_applies_itself() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("sp");
    let file = dir.join("lb.json");
    std::fs::write(&file, json(&[(&a, 1)], "round_robin")).unwrap();
    let lb = start(&file, "sp");
    let load = Load::start(lb.port());
    let t = Instant::now();
    replace(&file, &json(&[(&a, 1), (&b, 1)], "round_robin"));
    assert!(load.wait_for("b", t, APPLY));
    exactly_reloads(&lb, 1);
    replace(&file, &json(&[(&b, 1)], "round_robin"));
    exactly_reloads(&lb, 2);
    lb.signal("HUP");
    let t = Instant::now();
    thread::sleep(Duration::from_millis(400));
    assert_eq!(load.counts_since(t).get("a"), None);
    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(
        reloads(lb.port(), "success"),
        2,
        "an unchanged re-read is no reload"
    );
}

#[test]
fn a_binary_upgrade_after_a_reload_keeps_the_new_set() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("usr2");
    let file = dir.join("lb.json");
    std::fs::write(&file, json(&[(&a, 1)], "round_robin")).unwrap();
    let lb = start(&file, "mp");
    replace(&file, &json(&[(&b, 1)], "round_robin"));
    exactly_reloads(&lb, 1);
    lb.signal("USR2");
    assert!(
        lb.wait_for_log("upgrade: new master", Duration::from_secs(10)),
        "{:#?}",
        lb.stderr_lines()
    );
    let before = a.requests();
    for _ in 0..40 {
        assert_eq!(common::get(lb.port(), "/").header("x-origin"), Some("b"));
    }
    assert_eq!(a.requests(), before);
    // The new master watches the file in turn.
    replace(&file, &json(&[(&a, 1)], "round_robin"));
    assert!(
        wait_until(APPLY, || common::get(lb.port(), "/").header("x-origin")
            == Some("a")),
        "{:#?}",
        lb.stderr_lines()
    );
}

/// Shares of `a` and `b` among answers over `window` from now.
fn share_of_b(load: &Load, window: Duration) -> (f64, HashMap<String, usize>) {
    let t = Instant::now();
    thread::sleep(window);
    let counts = load.counts_since(t);
    let (na, nb) = (
        counts.get("a").copied().unwrap_or(0),
        counts.get("b").copied().unwrap_or(0),
    );
    (nb as f64 / (na + nb).max(1) as f64, counts)
}

#[test]
fn a_strategy_change_is_applied_in_place() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("strategy");
    let file = dir.join("lb.json");
    // Weights that only `weighted` heeds: round robin shares evenly.
    std::fs::write(&file, json(&[(&a, 1), (&b, 4)], "round_robin")).unwrap();
    let lb = start(&file, "mp");
    let load = Load::start(lb.port());
    assert!(load.wait_for("b", Instant::now(), APPLY));
    let (share, counts) = share_of_b(&load, Duration::from_millis(1500));
    assert!((0.4..0.6).contains(&share), "round robin: {counts:?}");

    replace(&file, &json(&[(&a, 1), (&b, 4)], "weighted"));
    exactly_reloads(&lb, 1);
    assert!(
        lb.wait_for_log("strategy round_robin -> weighted", APPLY),
        "{:#?}",
        lb.stderr_lines()
    );
    let (share, counts) = share_of_b(&load, Duration::from_millis(1500));
    assert!((0.7..0.9).contains(&share), "weighted: {counts:?}");
    let failures = load.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
}

#[test]
fn a_removed_backends_pooled_connections_close() {
    let (a, b) = (origin("a"), origin("b"));
    let dir = scratch_dir("pooled");
    let file = dir.join("lb.json");
    std::fs::write(&file, json(&[(&a, 1), (&b, 1)], "round_robin")).unwrap();
    let lb = start(&file, "sp");
    // Fresh client connections, so what stays open at `a` is the pool's.
    for _ in 0..10 {
        assert_eq!(common::get(lb.port(), "/").status, 200);
    }
    assert!(
        wait_until(APPLY, || a.open_connections() >= 1),
        "a pooled connection to a"
    );
    replace(&file, &json(&[(&b, 1)], "round_robin"));
    exactly_reloads(&lb, 1);
    assert!(
        wait_until(APPLY, || a.open_connections() == 0),
        "a's idle connections close at once: {} open",
        a.open_connections()
    );
    assert!(b.open_connections() >= 1, "b's pool is untouched");
}
