//! What an operator sees around the proxy (issue "Operator experience"):
//! log lines that stay whole when master and workers write at once, journal
//! priorities under systemd, process names, `--version` build details, and
//! the generated man page and shell completions.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Client, Lb, backend_arg, children, free_port, run_lb, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

/// One stderr line, taken apart as README "Logs" documents it.
#[derive(Debug)]
struct LogLine {
    level: String,
    /// `master` or `worker N`.
    role: String,
    pid: u32,
    message: String,
}

/// `2025-06-01T10:00:00.123Z info  worker 1 (pid 4242): message`.
fn parse_line(line: &str) -> Option<LogLine> {
    const STAMP: &str = "0000-00-00T00:00:00.000Z";
    let (stamp, rest) = line.split_at_checked(STAMP.len())?;
    let stamp_ok = stamp.bytes().zip(STAMP.bytes()).all(|(b, t)| match t {
        b'0' => b.is_ascii_digit(),
        _ => b == t,
    });
    if !stamp_ok {
        return None;
    }
    parse_after_stamp(rest.strip_prefix(' ')?)
}

/// What follows the time (or the journal's `<N>`): level padded to five,
/// role, pid, message.
fn parse_after_stamp(rest: &str) -> Option<LogLine> {
    let (level, rest) = rest.split_at_checked(5)?;
    let level = level.trim_end();
    if !["error", "warn", "info", "debug"].contains(&level) {
        return None;
    }
    let (role, rest) = rest.strip_prefix(' ')?.split_once(" (pid ")?;
    let role_ok = role == "master"
        || role
            .strip_prefix("worker ")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    let (pid, message) = rest.split_once("): ")?;
    if !role_ok || message.is_empty() {
        return None;
    }
    Some(LogLine {
        level: level.to_string(),
        role: role.to_string(),
        pid: pid.parse().ok()?,
        message: message.to_string(),
    })
}

/// The lines `parse` rejects, each cut to 160 characters for the report.
fn unparsed(lines: &[String], parse: impl Fn(&str) -> Option<LogLine>) -> Vec<String> {
    lines
        .iter()
        .filter(|l| parse(l).is_none())
        .map(|l| l.chars().take(160).collect())
        .collect()
}

#[test]
fn master_and_worker_lines_never_interleave_on_one_pipe() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let backend = backend_arg(&origin);
    // -t: every request's and response's head lines are logged by the
    // worker that serves it; a 3,000-byte field makes a long line, which
    // a writer that is not one write(2) per line would tear.
    let mut lb = Lb::start(&["--mode", "mp", "-w", "2", "-t", "-b", &backend]);
    assert!(wait_until(Duration::from_secs(5), || children(lb.pid())
        .len()
        == 2));
    let workers = children(lb.pid());
    let port = lb.port();
    let long = "x".repeat(3000);
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let long = long.clone();
            thread::spawn(move || {
                for i in 0..150 {
                    // A new connection each time, so both workers serve.
                    if let Ok(mut client) = Client::try_connect(port) {
                        let path = format!("/{c}/{i}");
                        let _ = client.try_request("GET", &path, &[("X-Long", &long)], b"");
                    }
                }
            })
        })
        .collect();
    // Meanwhile the master logs too: one line per SIGHUP it reads.
    while !clients.iter().all(|c| c.is_finished()) {
        lb.signal("HUP");
    }
    for c in clients {
        c.join().expect("client");
    }
    lb.signal("TERM");
    assert!(lb.wait_exit(Duration::from_secs(10)).is_some(), "stops");
    let lines = lb.stderr_lines();
    let bad = unparsed(&lines, parse_line);
    assert!(
        bad.is_empty(),
        "{} of {} lines do not parse, e.g. {:?}",
        bad.len(),
        lines.len(),
        &bad[..bad.len().min(3)]
    );
    let parsed: Vec<LogLine> = lines.iter().filter_map(|l| parse_line(l)).collect();
    let from = |role: &str| parsed.iter().filter(|l| l.role == role).count();
    assert!(from("master") >= 3, "master lines: {}", from("master"));
    for role in ["worker 0", "worker 1"] {
        assert!(from(role) >= 100, "{role}: {} lines", from(role));
    }
    for l in &parsed {
        match l.role.as_str() {
            "master" => assert_eq!(l.pid, lb.pid(), "{l:?}"),
            _ => assert!(workers.contains(&l.pid), "{l:?} not of {workers:?}"),
        }
    }
    let long_lines = parsed
        .iter()
        .filter(|l| l.message.contains("X-Long"))
        .inspect(|l| assert!(l.message.ends_with(&format!("X-Long: {long}")), "{l:?}"))
        .count();
    assert!(long_lines >= 500, "{long_lines} traced long fields");
    assert!(lines.len() >= 3000, "{} lines", lines.len());
}

/// Kills the process group of a balancer a test spawned itself.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// Runs the balancer with `args` and its stderr on a pipe whose
/// `(device, inode)` `journal_stream` turns into `JOURNAL_STREAM`, waits
/// until it serves, stops it with SIGTERM and returns its stderr lines.
fn lines_with_journal_stream(args: &[&str], journal_stream: fn(u64, u64) -> String) -> Vec<String> {
    let mut last = Vec::new();
    // A port taken between free_port and the bind is retried.
    for _ in 0..3 {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let writer = File::from(OwnedFd::from(writer));
        let stat = writer.metadata().expect("fstat the pipe");
        let port = free_port().to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_load_balancer"))
            .args(["-H", "127.0.0.1", "-p", &port])
            .args(args)
            .env("JOURNAL_STREAM", journal_stream(stat.dev(), stat.ino()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(writer)
            .process_group(0)
            .spawn()
            .expect("spawn the load_balancer binary");
        let mut group = Group(child);
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = Arc::clone(&lines);
        let collector = thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let has = |needle: &str| lines.lock().unwrap().iter().any(|l| l.contains(needle));
        let serving = wait_until(Duration::from_secs(10), || {
            has("serving on") || group.0.try_wait().ok().flatten().is_some()
        }) && has("serving on");
        if serving {
            let _ = Command::new("kill")
                .args(["-s", "TERM", &group.0.id().to_string()])
                .status();
            let exited = wait_until(Duration::from_secs(10), || {
                group.0.try_wait().ok().flatten().is_some()
            });
            assert!(exited, "stops on SIGTERM: {:?}", lines.lock().unwrap());
            // EOF once every process of the group has closed the pipe.
            assert!(wait_until(Duration::from_secs(5), || collector.is_finished()));
            drop(group);
            return lines.lock().unwrap().clone();
        }
        drop(group);
        last = lines.lock().unwrap().clone();
        if !last.iter().any(|l| l.contains("in use")) {
            break;
        }
    }
    panic!("the balancer did not serve: {last:?}");
}

#[test]
fn under_the_journal_lines_start_with_the_syslog_priority_instead_of_the_time() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let backend = backend_arg(&origin);
    let args = ["--mode", "mp", "-w", "1", "-b", backend.as_str()];
    let lines = lines_with_journal_stream(&args, |dev, ino| format!("{dev}:{ino}"));
    let mut roles = Vec::new();
    for line in &lines {
        let (priority, rest) = line
            .strip_prefix('<')
            .and_then(|l| l.split_once('>'))
            .unwrap_or_else(|| panic!("no <N> prefix: {line:?}"));
        let parsed = parse_after_stamp(rest).unwrap_or_else(|| panic!("{line:?}"));
        let expected = match parsed.level.as_str() {
            "error" => "3",
            "warn" => "4",
            "info" => "6",
            _ => "7",
        };
        assert_eq!(priority, expected, "{line:?}");
        roles.push(parsed.role);
    }
    // Workers inherit the stream and find it too.
    assert!(roles.iter().any(|r| r == "master"), "{lines:?}");
    assert!(roles.iter().any(|r| r == "worker 0"), "{lines:?}");
}

#[test]
fn a_journal_stream_that_is_not_our_stderr_is_ignored() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let backend = backend_arg(&origin);
    // Inherited from a parent whose stderr was the journal, ours is not.
    let lines = lines_with_journal_stream(&["--mode", "sp", "-b", &backend], |dev, ino| {
        format!("{dev}:{}", ino + 1)
    });
    assert!(!lines.is_empty());
    let bad = unparsed(&lines, parse_line);
    assert!(bad.is_empty(), "{bad:?}");
    let roles: Vec<String> = lines
        .iter()
        .filter_map(|l| parse_line(l))
        .map(|l| l.role)
        .collect();
    assert!(
        roles.iter().all(|r| r == "worker 0"),
        "sp mode is worker 0: {roles:?}"
    );
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

#[test]
fn master_and_workers_are_named_load_balancer_for_pgrep_and_top() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let backend = backend_arg(&origin);
    let lb = Lb::start(&["--mode", "mp", "-w", "2", "-b", &backend]);
    assert!(wait_until(Duration::from_secs(5), || children(lb.pid())
        .len()
        == 2));
    assert_eq!(comm(lb.pid()), "load_balancer");
    for worker in children(lb.pid()) {
        assert_eq!(comm(worker), "load_balancer", "worker {worker}");
        // The titles `ps` shows stay as they were.
        assert!(common::cmdline(worker).starts_with("load_balancer: worker "));
    }
    assert!(common::cmdline(lb.pid()).starts_with("load_balancer: master "));
}

#[test]
fn version_names_the_commit_target_and_tls_stack() {
    let (code, out, err) = run_lb(&["--version"], Duration::from_secs(10));
    assert_eq!(code, Some(0), "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("load_balancer ", env!("CARGO_PKG_VERSION")))
    );
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("no {name} in {out}"))
            .to_string()
    };
    let commit = field("commit:");
    let id = commit.split_whitespace().next().unwrap_or_default();
    assert!(
        id == "unknown" || (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())),
        "{commit}"
    );
    // Built from a git checkout: the commit it was built at.
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(head) = head {
        assert_eq!(id, head);
    }
    assert!(field("target:").contains("linux"), "{out}");
    assert!(field("rustls:").starts_with("0."), "{out}");
    // -V stays short.
    let (code, out, _) = run_lb(&["-V"], Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert_eq!(
        out.trim_end(),
        concat!("load_balancer ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_man_page_and_completions_are_generated_from_the_flags() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "man",
            &[
                ".TH LOAD_BALANCER 8",
                "\\-\\-backend",
                "\\-\\-loglevel",
                "SIGUSR2",
                "JOURNAL_STREAM",
            ],
        ),
        (
            "bash",
            &["complete", "--backend", "--loglevel", "--health-path"],
        ),
        (
            "zsh",
            &["#compdef load_balancer", "--backend", "--loglevel"],
        ),
        (
            "fish",
            &["complete -c load_balancer", "-l backend", "-l loglevel"],
        ),
    ];
    for (what, needles) in cases {
        let (code, out, err) = run_lb(&["--generate", what], Duration::from_secs(10));
        assert_eq!(code, Some(0), "{what}: {err}");
        assert_eq!(err, "", "{what}");
        for needle in needles {
            assert!(out.contains(needle), "{what} lacks {needle:?}");
        }
    }
    let (code, out, err) = run_lb(&["--generate", "tcsh"], Duration::from_secs(10));
    assert_eq!(code, Some(1));
    assert_eq!(out, "");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("man, bash, zsh or fish"), "{err}");
}

/// A script that runs the balancer under `ulimit ARGS` (its own process:
/// the test binary's limits stay as they are).
fn under_ulimit(args: &str) -> std::path::PathBuf {
    let script = common::scratch_file(
        "lb-ulimit.sh",
        &format!(
            "#!/bin/sh\nulimit {args} || exit 1\nexec {} \"$@\"\n",
            env!("CARGO_BIN_EXE_load_balancer")
        ),
    );
    let mut mode = std::fs::metadata(&script).expect("script").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&script, mode).expect("make the script executable");
    script
}

/// Started under a soft limit of 256 open files (the hard one higher), the
/// balancer raises its own soft limit and serves more clients at once than
/// the limit it was given would allow.
#[test]
fn the_open_files_limit_is_raised_to_the_hard_one() {
    const CLIENTS: usize = 320;
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(4)?.parse::<u64>().ok()
        })
        .unwrap_or(u64::MAX);
    assert!(
        hard >= 2 * CLIENTS as u64,
        "this test needs a hard open files limit of at least {}",
        2 * CLIENTS
    );
    let wrapper = under_ulimit("-Sn 256");
    let o = Origin::start(OriginConfig::new("a")).expect("origin");
    let lb = Lb::start_binary(&wrapper, &["-b", &backend_arg(&o)]);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| lb.client()).collect();
    // The first client not served ends the test (each waits out a timeout).
    let unserved = clients.iter_mut().position(|c| {
        c.try_request("GET", "/", &[], b"")
            .map_or(true, |r| r.status != 200)
    });
    assert_eq!(
        unserved,
        None,
        "a client of {CLIENTS} not served\n{}",
        lb.stderr_lines().join("\n")
    );
}

/// With 64 descriptors in all, the balancer cannot accept 100 clients at
/// once; the ones it could not accept wait in the kernel's queue, which
/// raises no new event. Once most clients have gone, those queued must be
/// accepted and served without any new connection arriving.
#[test]
fn clients_queued_while_out_of_descriptors_are_served_once_some_close() {
    let wrapper = under_ulimit("-n 64");
    let o = Origin::start(OriginConfig::new("a")).expect("origin");
    let lb = Lb::start_binary(&wrapper, &["-b", &backend_arg(&o)]);
    let mut clients: Vec<Client> = (0..100).map(|_| lb.client()).collect();
    assert!(
        lb.wait_for_log("Too many open files", Duration::from_secs(5)),
        "the balancer never ran out: {}",
        lb.stderr_lines().join("\n")
    );
    // The first 80 leave; the last 20 were queued, not accepted.
    let rest = clients.split_off(80);
    drop(clients);
    for (i, mut c) in rest.into_iter().enumerate() {
        let r = c.try_request("GET", "/", &[], b"");
        assert!(
            r.as_ref().is_ok_and(|r| r.status == 200),
            "queued client {i}: {:?}\n{}",
            r.map(|r| r.status),
            lb.stderr_lines().join("\n")
        );
    }
    assert!(lb.wait_for_log("accepting connections again", Duration::from_secs(2)));
}

/// A worker out of descriptors cannot open probe connections either. That
/// says nothing about the backend: it stays up, and is served again as
/// soon as descriptors are free, without a 503 or a "down" line.
#[test]
fn probes_not_made_for_want_of_descriptors_leave_the_backend_up() {
    let wrapper = under_ulimit("-n 64");
    let o = Origin::start(OriginConfig::new("a")).expect("origin");
    let lb = Lb::start_binary(
        &wrapper,
        &["-b", &backend_arg(&o), "--health-interval-ms", "20"],
    );
    let clients: Vec<Client> = (0..100).map(|_| lb.client()).collect();
    assert!(
        lb.wait_for_log("not made", Duration::from_secs(5)),
        "no probe ran into the limit: {}",
        lb.stderr_lines().join("\n")
    );
    // Many probe intervals pass while descriptors are short; unhealthy
    // thresholds are a few probes.
    assert!(
        !lb.wait_for_log("is down", Duration::from_millis(500)),
        "{}",
        lb.stderr_lines().join("\n")
    );
    drop(clients);
    let r = lb.client().try_request("GET", "/", &[], b"");
    assert_eq!(
        r.map(|r| r.status).ok(),
        Some(200),
        "{}",
        lb.stderr_lines().join("\n")
    );
    assert!(lb.wait_for_log("health probes run again", Duration::from_secs(2)));
}
