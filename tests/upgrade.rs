//! Zero-downtime binary upgrade on SIGUSR2 (SPEC §4, issue 5).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::{Client, Lb, backend_arg, children, get, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

/// A private copy of the binary, which a test may replace.
struct BinaryCopy {
    dir: PathBuf,
}

impl BinaryCopy {
    fn new(tag: &str) -> BinaryCopy {
        let dir = std::env::temp_dir().join(format!("lb-upgrade-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let copy = BinaryCopy { dir };
        copy.replace_with(Path::new(env!("CARGO_BIN_EXE_load_balancer")));
        copy
    }

    fn path(&self) -> PathBuf {
        self.dir.join("load_balancer")
    }

    /// Puts `source` at the binary's path the way package managers do:
    /// write a new file, rename it over the old one.
    fn replace_with(&self, source: &Path) {
        let tmp = self.dir.join("load_balancer.new");
        std::fs::copy(source, &tmp).expect("copy binary");
        std::fs::rename(&tmp, self.path()).expect("rename binary");
    }

    /// `replace_with`, but the new file stays open for writing until the
    /// returned handle is dropped.
    fn replace_keeping_open(&self, source: &Path) -> std::fs::File {
        let tmp = self.dir.join("load_balancer.new");
        std::fs::copy(source, &tmp).expect("copy binary");
        let writer = std::fs::OpenOptions::new()
            .append(true)
            .open(&tmp)
            .expect("open the new binary for writing");
        std::fs::rename(&tmp, self.path()).expect("rename binary");
        writer
    }

    fn replace_with_script(&self, script: &str) {
        let tmp = self.dir.join("load_balancer.new");
        let mut f = std::fs::File::create(&tmp).expect("script");
        f.write_all(script.as_bytes()).expect("write script");
        drop(f);
        let _ = std::process::Command::new("chmod")
            .args(["+x", tmp.to_str().unwrap()])
            .status();
        std::fs::rename(&tmp, self.path()).expect("rename script");
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("lb.pid")
    }

    /// Starts the balancer from this copy in mp mode with `workers` workers
    /// and a pid file, and waits until the pid file names it.
    fn start(&self, origin: &Origin, workers: &str) -> Lb {
        let pid_file = self.pid_file();
        let lb = Lb::start_binary(
            &self.path(),
            &[
                "--mode",
                "mp",
                "-w",
                workers,
                "-b",
                &backend_arg(origin),
                "--pid-file",
                pid_file.to_str().unwrap(),
            ],
        );
        assert!(wait_until(Duration::from_secs(5), || read_pid(&pid_file)
            == Some(lb.pid())));
        lb
    }
}

impl Drop for BinaryCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The inodes of the sockets listening on 127.0.0.1:`port`, one per
/// worker slot.
fn listen_inodes(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_string())
        })
        .collect()
}

#[derive(Default, Debug)]
struct Tally {
    ok: u32,
    failed: u32,
    /// A keep-alive request that met a closed connection and had to be sent
    /// again: the proxy must never cause one.
    resent: u32,
}

/// Sends requests until `stop`, on fresh connections or on one keep-alive
/// connection (reopened only after a `Connection: close` answer).
fn client_loop(port: u16, keep_alive: bool, stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut conn: Option<Client> = None;
    while !stop.load(Ordering::Relaxed) {
        if !keep_alive || conn.is_none() {
            match Client::try_connect(port) {
                Ok(c) => conn = Some(c),
                Err(_) => {
                    tally.failed += 1;
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        match c.try_request("GET", "/", &[], b"") {
            Ok(r) if r.status == 200 => {
                tally.ok += 1;
                if r.header("Connection") == Some("close") {
                    conn = None;
                }
            }
            Ok(_) => tally.failed += 1,
            Err(_) if keep_alive => {
                tally.resent += 1;
                conn = None;
            }
            Err(_) => tally.failed += 1,
        }
    }
    tally
}

/// What sits at the binary's path when SIGUSR2 arrives.
#[derive(Clone, Copy, PartialEq)]
enum NewBinary {
    /// The file the master was started from.
    Same,
    /// A fresh copy renamed over it, as a package upgrade does.
    Copy,
    /// A wrapper that starts the binary with `-w 2` instead of `-w 1`.
    MoreWorkers,
    /// A wrapper that starts the binary with `-w 1` instead of `-w 2`: the
    /// new master keeps a worker per handed-over socket.
    FewerWorkers,
}

fn upgrade_under_load(new_binary: NewBinary) {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let (tag, workers, new_workers) = match new_binary {
        NewBinary::Same => ("same", "2", "2"),
        NewBinary::Copy => ("replaced", "2", "2"),
        NewBinary::MoreWorkers => ("more-workers", "1", "2"),
        NewBinary::FewerWorkers => ("fewer-workers", "2", "1"),
    };
    let copy = BinaryCopy::new(tag);
    let pid_file = copy.pid_file();
    let mut lb = copy.start(&origin, workers);
    let port = lb.port();
    let inodes = listen_inodes(port);
    assert_eq!(
        inodes.len(),
        workers.parse::<usize>().unwrap(),
        "one socket per worker"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [false, true, true]
        .into_iter()
        .map(|keep_alive| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || client_loop(port, keep_alive, stop))
        })
        .collect();
    assert!(wait_until(Duration::from_secs(5), || origin.requests() > 100));

    match new_binary {
        NewBinary::Same => {}
        NewBinary::Copy => copy.replace_with(Path::new(env!("CARGO_BIN_EXE_load_balancer"))),
        NewBinary::MoreWorkers | NewBinary::FewerWorkers => copy.replace_with_script(&format!(
            "#!/bin/sh\n\
             for a; do shift; [ \"$prev\" = -w ] && a={new_workers}; set -- \"$@\" \"$a\"; prev=$a; done\n\
             exec '{}' \"$@\"\n",
            env!("CARGO_BIN_EXE_load_balancer")
        )),
    }
    let old = lb.pid();
    lb.signal("USR2");
    assert!(
        wait_until(Duration::from_secs(10), || read_pid(&pid_file)
            .is_some_and(|p| p != old)),
        "the pid file names the new master"
    );
    let new = read_pid(&pid_file).expect("new pid");
    if new_binary == NewBinary::FewerWorkers {
        assert!(lb.wait_for_log(
            "keeping 2 workers (one per handed-over socket) instead of 1",
            Duration::from_secs(5)
        ));
    }
    // More workers: one more socket bound beside the handed-over one. Fewer:
    // every handed-over socket may hold queued connections, so each keeps
    // its worker.
    assert!(
        wait_until(Duration::from_secs(5), || children(new).len() == 2),
        "the new master runs two workers"
    );
    assert!(lb.wait_for_log("upgrade: new master", Duration::from_secs(5)));
    // The old master leaves after its rollback window.
    let status = lb
        .wait_exit(Duration::from_secs(30))
        .expect("old master exits");
    assert_eq!(status.code(), Some(0));
    let served = origin.requests();
    assert!(wait_until(Duration::from_secs(5), || origin.requests() > served + 100));
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let tally = client.join().expect("client");
        assert_eq!((tally.failed, tally.resent), (0, 0), "{tally:?}");
        assert!(tally.ok > 0);
    }
    let after = listen_inodes(port);
    assert!(
        inodes.iter().all(|i| after.contains(i)),
        "the same sockets, handed over, never re-bound: {inodes:?} -> {after:?}"
    );
    assert_eq!(get(port, "/").status, 200, "the new master {new} serves");
}

#[test]
fn sigusr2_upgrades_without_a_failed_request() {
    upgrade_under_load(NewBinary::Same);
}

#[test]
fn sigusr2_runs_the_replaced_binary_without_a_failed_request() {
    upgrade_under_load(NewBinary::Copy);
}

#[test]
fn sigusr2_with_more_workers_adds_sockets_without_a_failed_request() {
    upgrade_under_load(NewBinary::MoreWorkers);
}

#[test]
fn sigusr2_with_fewer_workers_keeps_every_socket_served() {
    upgrade_under_load(NewBinary::FewerWorkers);
}

#[test]
fn a_new_binary_that_fails_leaves_the_old_one_serving() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let copy = BinaryCopy::new("broken");
    let pid_file = copy.pid_file();
    let lb = copy.start(&origin, "2");
    copy.replace_with_script("#!/bin/sh\nexit 1\n");
    lb.signal("USR2");
    assert!(
        lb.wait_for_log("upgrade failed", Duration::from_secs(10)),
        "{:?}",
        lb.stderr_lines()
    );
    assert_eq!(read_pid(&pid_file), Some(lb.pid()));
    for _ in 0..20 {
        assert_eq!(get(lb.port(), "/").status, 200);
    }
}

#[test]
fn a_binary_still_open_for_writing_is_retried_while_the_master_supervises() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let copy = BinaryCopy::new("busy");
    let pid_file = copy.pid_file();
    let lb = copy.start(&origin, "2");
    // A new binary put in place while still open for writing cannot be
    // executed (ETXTBSY), as while a package manager is finishing it.
    let writer = copy.replace_keeping_open(Path::new(env!("CARGO_BIN_EXE_load_balancer")));
    let old = lb.pid();
    let workers = children(old);
    assert_eq!(workers.len(), 2);
    lb.signal("USR2");
    // Meanwhile the master still supervises: a killed worker is replaced
    // while the upgrade waits for the file.
    let _ = std::process::Command::new("kill")
        .args(["-9", &workers[0].to_string()])
        .status();
    assert!(
        wait_until(Duration::from_millis(1500), || {
            let now = children(old);
            now.len() == 2 && !now.contains(&workers[0])
        }),
        "no replacement worker while the upgrade waited: {:?}",
        lb.stderr_lines()
    );
    assert!(lb.wait_for_log("still open for writing", Duration::from_secs(1)));
    drop(writer);
    assert!(
        wait_until(Duration::from_secs(10), || read_pid(&pid_file)
            .is_some_and(|p| p != old)),
        "the upgrade went ahead once the file was closed: {:?}",
        lb.stderr_lines()
    );
    assert!(lb.wait_for_log("upgrade: new master", Duration::from_secs(5)));
    assert_eq!(get(lb.port(), "/").status, 200);
}

/// A balancer at `-w 2` upgraded to the same binary: returns once the new
/// master serves, with its pid, inside the old master's rollback window.
fn upgraded(tag: &str, origin: &Origin) -> (BinaryCopy, Lb, u32) {
    let copy = BinaryCopy::new(tag);
    let lb = copy.start(origin, "2");
    let old = lb.pid();
    lb.signal("USR2");
    assert!(
        wait_until(Duration::from_secs(10), || read_pid(&copy.pid_file())
            .is_some_and(|p| p != old)),
        "the pid file names the new master: {:?}",
        lb.stderr_lines()
    );
    assert!(lb.wait_for_log("upgrade: new master", Duration::from_secs(5)));
    let new = read_pid(&copy.pid_file()).expect("new pid");
    // Well inside the 10 s window, with the old workers retired.
    thread::sleep(Duration::from_secs(1));
    (copy, lb, new)
}

fn kill(signal: &str, pid: u32) {
    let _ = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
}

fn refuses(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
}

/// Both masters and all workers gone within the stop deadline (SPEC §4:
/// 30 s), the port refusing, and still so after the rollback window.
fn assert_the_service_stopped(mut lb: Lb) {
    let (pgid, port) = (lb.pid(), lb.port());
    let status = lb.wait_exit(Duration::from_secs(35));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the old master exits 0: {:?}",
        lb.stderr_lines()
    );
    assert!(
        wait_until(Duration::from_secs(35), || common::process_group(pgid)
            .is_empty()),
        "every master and worker is gone: {:?}",
        common::process_group(pgid)
    );
    assert!(refuses(port), "the port refuses connections");
    // Past the 10 s rollback window: nothing comes back.
    thread::sleep(Duration::from_secs(12));
    assert!(common::process_group(pgid).is_empty());
    assert!(refuses(port), "the port still refuses connections");
    let log = lb.stderr_lines().join("\n");
    assert!(!log.contains("rolled back"), "{log}");
}

#[test]
fn sigterm_to_the_new_master_in_the_rollback_window_stops_the_service() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let (_copy, lb, new) = upgraded("stop-new", &origin);
    kill("-TERM", new);
    assert_the_service_stopped(lb);
}

#[test]
fn sigterm_to_the_old_master_in_the_rollback_window_stops_the_service() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let (_copy, lb, _new) = upgraded("stop-old", &origin);
    lb.signal("TERM");
    assert_the_service_stopped(lb);
}

#[test]
fn a_new_master_killed_in_the_rollback_window_is_rolled_back() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let (copy, lb, new) = upgraded("killed-new", &origin);
    kill("-KILL", new);
    assert!(
        lb.wait_for_log("upgrade rolled back", Duration::from_secs(5)),
        "{:?}",
        lb.stderr_lines()
    );
    assert!(
        wait_until(Duration::from_secs(5), || read_pid(&copy.pid_file())
            == Some(lb.pid())),
        "the pid file names the old master again"
    );
    assert!(
        wait_until(Duration::from_secs(5), || Client::try_connect(lb.port())
            .and_then(|mut c| c.try_request("GET", "/", &[], b""))
            .is_ok_and(|r| r.status == 200)),
        "the old master serves again"
    );
    // Past the rollback window the old master stays: it is the service.
    thread::sleep(Duration::from_secs(10));
    assert_eq!(get(lb.port(), "/").status, 200);
    assert_eq!(read_pid(&copy.pid_file()), Some(lb.pid()));
    let mut lb = lb;
    assert!(lb.wait_exit(Duration::from_millis(10)).is_none());
}
