//! The access log (`--access-log`, README "Access log"): one line per
//! request with the right status, backend and byte counts, for proxied
//! requests and for the answers the proxy gives itself; JSON lines; the
//! reopen on SIGUSR1 (logrotate) in sp and mp mode; whole lines from two
//! workers under load; and the error log's info line for a rejection.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::{IO_TIMEOUT, Lb, backend_arg, raw_exchange, scratch_file, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

/// Lines are flushed at the worker's one-second tick.
const FLUSHED_WITHIN: Duration = Duration::from_secs(5);

fn origin(name: &str) -> Origin {
    Origin::start(OriginConfig::new(name)).expect("origin starts")
}

/// A fresh path for a log file (the file itself does not exist yet).
fn log_path(tag: &str) -> PathBuf {
    let path = scratch_file(tag, "");
    std::fs::remove_file(&path).expect("remove the scratch file");
    path
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `path` has at least `n` lines, and returns them.
fn wait_lines(path: &Path, n: usize) -> Vec<String> {
    wait_until(FLUSHED_WITHIN, || lines(path).len() >= n);
    let got = lines(path);
    assert!(got.len() >= n, "want {n} lines in {path:?}, got {got:#?}");
    got
}

/// The value of ` key=value` in a combined line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(&format!(" {key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"));
    let rest = &line[at + key.len() + 2..];
    rest.split(' ').next().unwrap_or("")
}

/// Status and byte count after the quoted request line.
fn status_and_sent(line: &str) -> (u16, u64) {
    let after = line.split("\" ").nth(1).expect("a quoted request line");
    let mut words = after.split(' ');
    let status = words.next().unwrap().parse().expect("status");
    let sent = words.next().unwrap().parse().expect("bytes sent");
    (status, sent)
}

/// One GET on a connection of its own, answered 200.
fn get_ok(port: u16, target: &str) {
    let req = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(
        status_of(&raw_exchange(port, req.as_bytes(), IO_TIMEOUT)),
        200
    );
}

fn status_of(reply: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(reply);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// A balancer in front of `backend` writing its access log to `path`.
fn logging_to(backend: &str, path: &std::path::Path, extra: &[&str]) -> Lb {
    let path = path.to_str().expect("a UTF-8 path");
    let mut args = vec!["-b", backend, "--access-log", path];
    args.extend_from_slice(extra);
    Lb::start(&args)
}

#[test]
fn one_line_per_proxied_request_with_status_backend_and_bytes() {
    let o = origin("a");
    let path = log_path("access-proxied");
    let lb = logging_to(&backend_arg(&o), &path, &[]);
    let request = b"GET /bytes/100 HTTP/1.1\r\nHost: x\r\nUser-Agent: probe/1\r\nReferer: http://r/\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(lb.port(), request, IO_TIMEOUT);
    assert_eq!(status_of(&reply), 200);
    let body = b"hello";
    let post = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut post = post.into_bytes();
    post.extend_from_slice(body);
    let reply2 = raw_exchange(lb.port(), &post, IO_TIMEOUT);
    assert_eq!(status_of(&reply2), 200);

    let got = wait_lines(&path, 2);
    assert_eq!(got.len(), 2, "{got:#?}");
    let line = &got[0];
    assert!(
        line.starts_with("127.0.0.1 - - ["),
        "combined format: {line}"
    );
    assert!(
        line.contains("] \"GET /bytes/100 HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(line.contains(" \"http://r/\" \"probe/1\" "), "{line}");
    assert_eq!(status_and_sent(line), (200, reply.len() as u64), "{line}");
    assert_eq!(field(line, "received"), request.len().to_string(), "{line}");
    assert_eq!(field(line, "backend"), backend_arg(&o), "{line}");
    assert_eq!(field(line, "retries"), "0");
    assert_ne!(field(line, "upstream"), "-", "{line}");
    assert_ne!(field(line, "total"), "-", "{line}");
    let line = &got[1];
    assert!(line.contains("\"POST /echo HTTP/1.1\" 200 "), "{line}");
    assert_eq!(status_and_sent(line).1, reply2.len() as u64, "{line}");
    assert_eq!(field(line, "received"), post.len().to_string(), "{line}");
    assert!(
        line.contains(" \"-\" \"-\" "),
        "no referer, no agent: {line}"
    );
}

#[test]
fn rejected_requests_have_lines_too_400_408_504() {
    let o = origin("a");
    let path = log_path("access-rejected");
    let lb = logging_to(
        &backend_arg(&o),
        &path,
        &["--head-timeout-ms", "300", "--response-timeout-ms", "300"],
    );
    let bad = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n";
    let r400 = raw_exchange(lb.port(), bad, IO_TIMEOUT);
    assert_eq!(status_of(&r400), 400);
    let got = wait_lines(&path, 1);
    let r408 = raw_exchange(lb.port(), b"GET /slow HTTP/1.1\r\nHost", IO_TIMEOUT);
    assert_eq!(status_of(&r408), 408);
    let got2 = wait_lines(&path, 2);
    let r504 = raw_exchange(
        lb.port(),
        b"GET /delay/3000 HTTP/1.1\r\nHost: x\r\n\r\n",
        IO_TIMEOUT,
    );
    assert_eq!(status_of(&r504), 504);
    let got3 = wait_lines(&path, 3);
    assert_eq!(got3.len(), 3, "{got3:#?}");

    let line = &got[0];
    assert_eq!(status_and_sent(line), (400, r400.len() as u64), "{line}");
    assert!(line.contains("\"GET / HTTP/1.1\""), "{line}");
    assert_eq!(field(line, "backend"), "-", "rejected before a backend");
    assert_eq!(field(line, "received"), bad.len().to_string(), "{line}");
    let line = &got2[1];
    assert_eq!(status_and_sent(line), (408, r408.len() as u64), "{line}");
    assert!(line.contains("\"GET /slow HTTP/1.1\""), "{line}");
    let line = &got3[2];
    assert_eq!(status_and_sent(line), (504, r504.len() as u64), "{line}");
    assert_eq!(field(line, "backend"), backend_arg(&o), "{line}");
    assert_eq!(field(line, "upstream"), "-", "no response head: {line}");
}

/// A backend that answers its health probes and closes every other
/// connection without a word: a POST to it is a 502 (not retried), and a
/// few of those mark it down, so the next request is a 503.
fn rude_backend() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
            let n = conn.read(&mut head).unwrap_or(0);
            if head[..n].starts_with(b"GET /health") {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    addr
}

#[test]
fn a_failing_backend_gives_a_502_line() {
    let rude = rude_backend();
    let path = log_path("access-502");
    let lb = logging_to(&rude, &path, &["--health-path", "/health"]);
    let r = raw_exchange(
        lb.port(),
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        IO_TIMEOUT,
    );
    assert_eq!(status_of(&r), 502);
    let got = wait_lines(&path, 1);
    assert_eq!(
        status_and_sent(&got[0]),
        (502, r.len() as u64),
        "{}",
        got[0]
    );
    assert_eq!(field(&got[0], "backend"), rude, "{}", got[0]);
    assert!(got[0].contains("\"POST /x HTTP/1.1\""), "{}", got[0]);
}

/// A port bound but not listening: connects are refused.
fn dead_port() -> (socket2::Socket, String) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&addr.into()).expect("bind without listening");
    let arg = socket
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .to_string();
    (socket, arg)
}

#[test]
fn a_dead_backend_gives_503_lines() {
    let (_held, dead) = dead_port();
    let path = log_path("access-503");
    let lb = logging_to(&dead, &path, &[]);
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = raw_exchange(lb.port(), b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n", IO_TIMEOUT);
        statuses.push(status_of(&r));
        if statuses.last() == Some(&503) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(statuses.last(), Some(&503), "{statuses:?}");
    let got = wait_lines(&path, statuses.len());
    let logged: Vec<u16> = got.iter().map(|l| status_and_sent(l).0).collect();
    assert_eq!(logged, statuses, "{got:#?}");
}

#[test]
fn json_lines_parse() {
    let o = origin("a");
    let path = log_path("access-json");
    let lb = logging_to(&backend_arg(&o), &path, &["--access-log-format", "json"]);
    let request = b"GET /bytes/10?q=\"x\" HTTP/1.1\r\nHost: x\r\nUser-Agent: a\\b\"c\r\nConnection: close\r\n\r\n";
    let reply = raw_exchange(lb.port(), request, IO_TIMEOUT);
    assert_eq!(status_of(&reply), 200);
    let bad = raw_exchange(lb.port(), b"BAD\x01 / HTTP/1.1\r\n\r\n", IO_TIMEOUT);
    assert_eq!(status_of(&bad), 400);
    let got = wait_lines(&path, 2);
    let v: serde_json::Value = serde_json::from_str(&got[0]).expect("a JSON line");
    assert_eq!(v["request"], "GET /bytes/10?q=\"x\" HTTP/1.1");
    assert_eq!(v["user_agent"], "a\\b\"c");
    assert_eq!(v["status"], 200);
    assert_eq!(v["sent"], reply.len() as u64);
    assert_eq!(v["received"], request.len() as u64);
    assert_eq!(v["backend"], backend_arg(&o));
    assert_eq!(v["client"], "127.0.0.1");
    assert_eq!(v["rejected"], false);
    assert!(v["total"].is_number() && v["upstream"].is_number(), "{v}");
    let v: serde_json::Value = serde_json::from_str(&got[1]).expect("a JSON line");
    assert_eq!(v["status"], 400);
    assert_eq!(v["request"], "BAD\u{1} / HTTP/1.1");
    assert_eq!(v["backend"], serde_json::Value::Null);
    assert_eq!(v["rejected"], true);
}

/// Renames the log, sends SIGUSR1 to the main process, and shows that new
/// lines go to a new file at the path while the renamed one keeps the old.
fn reopen_on_usr1(mode: &str) {
    let o = origin("a");
    let path = log_path(&format!("access-reopen-{mode}"));
    let mut args = vec![
        "-b".to_string(),
        backend_arg(&o),
        "--access-log".into(),
        path.to_str().unwrap().into(),
        "--mode".into(),
        mode.into(),
    ];
    if mode == "mp" {
        args.extend(["-w".into(), "2".into()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let lb = Lb::start(&args);
    if mode == "mp" {
        assert!(lb.wait_for_log("serving", Duration::from_secs(10)));
    }
    let get = |target: &str| get_ok(lb.port(), target);
    get("/bytes/1?before");
    wait_lines(&path, 1);
    let rotated = path.with_extension("1");
    std::fs::rename(&path, &rotated).expect("rename the log");
    lb.signal("USR1");
    // Until the reopen reached every worker, a line may still land in the
    // renamed file: keep asking until one is in the new file.
    let mut n = 0;
    let reopened = wait_until(Duration::from_secs(10), || {
        n += 1;
        get(&format!("/bytes/1?after={n}"));
        thread::sleep(Duration::from_millis(50));
        path.exists() && !lines(&path).is_empty()
    });
    assert!(
        reopened,
        "no new file after SIGUSR1; old: {:#?}",
        lines(&rotated)
    );
    let old = lines(&rotated);
    assert!(old[0].contains("GET /bytes/1?before "), "{old:#?}");
    assert!(
        lines(&path)
            .iter()
            .all(|l| l.contains("GET /bytes/1?after="))
    );
    assert!(
        lb.stderr_lines().iter().all(|l| !l.contains("error")),
        "{:#?}",
        lb.stderr_lines()
    );
    assert!(std::fs::metadata(&path).unwrap().len() > 0);
}

#[test]
fn usr1_reopens_the_log_in_sp_mode() {
    reopen_on_usr1("sp");
}

#[test]
fn usr1_reopens_the_log_in_mp_mode() {
    reopen_on_usr1("mp");
}

/// A reload that changes `access_log` and its format moves every
/// worker's log: new lines go to the new path in the new format, and the
/// old file keeps what was written before.
fn a_reload_moves_the_log(mode: &str) {
    let o = origin("a");
    let (old, new) = (
        log_path(&format!("access-follow-{mode}-old")),
        log_path(&format!("access-follow-{mode}-new")),
    );
    let config = |log: &Path, format: &str| {
        format!(
            r#"{{"backends": [{{"host": "127.0.0.1", "port": {}}}], "access_log": "{}", "access_log_format": "{format}"}}"#,
            o.addr().port(),
            log.display()
        )
    };
    let file = scratch_file(
        &format!("access-follow-{mode}.json"),
        &config(&old, "combined"),
    );
    let lb = Lb::start(&["--mode", mode, "-w", "2", "-c", file.to_str().unwrap()]);
    if mode == "mp" {
        assert!(lb.wait_for_log("serving", Duration::from_secs(10)));
    }
    let get = |target: &str| get_ok(lb.port(), target);
    get("/bytes/1?before");
    wait_lines(&old, 1);
    std::fs::write(&file, config(&new, "json")).expect("rewrite the config");
    lb.signal("HUP");
    // Until the generation reached every worker, a line may still land in
    // the old file: keep asking until one is in the new file.
    let mut n = 0;
    let moved = wait_until(Duration::from_secs(10), || {
        n += 1;
        get(&format!("/bytes/1?after={n}"));
        thread::sleep(Duration::from_millis(50));
        !lines(&new).is_empty()
    });
    assert!(moved, "no line in the new log; old: {:#?}", lines(&old));
    for line in lines(&new) {
        let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert!(v["request"].as_str().unwrap().contains("?after="), "{line}");
    }
    let before = lines(&old);
    assert!(before[0].contains("GET /bytes/1?before "), "{before:#?}");
    assert!(before.iter().all(|l| !l.starts_with('{')), "{before:#?}");
    assert!(
        lb.stderr_lines().iter().all(|l| !l.contains("error")),
        "{:#?}",
        lb.stderr_lines()
    );
}

#[test]
fn a_reload_moves_the_log_in_sp_mode() {
    a_reload_moves_the_log("sp");
}

#[test]
fn a_reload_moves_the_log_in_mp_mode() {
    a_reload_moves_the_log("mp");
}

#[test]
fn two_workers_under_load_write_whole_lines() {
    let o = origin("a");
    let path = log_path("access-load");
    let lb = logging_to(&backend_arg(&o), &path, &["--mode", "mp", "-w", "2"]);
    assert!(lb.wait_for_log("serving", Duration::from_secs(10)));
    const THREADS: usize = 8;
    const PER_THREAD: usize = 250;
    let port = lb.port();
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // A new connection each time, so both workers take some.
                    let mut c = common::Client::connect(port);
                    let r = c.request("GET", &format!("/bytes/{}?t={t}&i={i}", i % 50), &[], b"");
                    assert_eq!(r.status, 200);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let total = THREADS * PER_THREAD;
    let got = wait_lines(&path, total);
    assert_eq!(got.len(), total);
    for line in &got {
        assert!(
            line.starts_with("127.0.0.1 - - [") && line.contains(" received="),
            "broken line: {line:?}"
        );
        assert_eq!(status_and_sent(line).0, 200, "{line}");
        let retries = field(line, "retries");
        assert_eq!(retries, "0", "{line}");
    }
}

#[test]
fn a_rejection_is_logged_at_info_with_client_and_reason() {
    let o = origin("a");
    let lb = Lb::start(&["-b", &backend_arg(&o)]);
    let mut s = TcpStream::connect(lb.addr()).expect("connect");
    let me = s.local_addr().unwrap();
    s.write_all(b"GET /x\"y HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut reply = Vec::new();
    let _ = s.read_to_end(&mut reply);
    assert_eq!(status_of(&reply), 400);
    let needle = format!("rejected 400 for {me} (client: ");
    assert!(
        lb.wait_for_log(&needle, Duration::from_secs(5)),
        "{:#?}",
        lb.stderr_lines()
    );
    let line = lb
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains(&needle))
        .unwrap();
    assert!(line.contains(" info "), "{line}");
    assert!(line.ends_with(": \"GET /x\\x22y HTTP/1.1\""), "{line}");
}

#[test]
fn an_unopenable_log_is_a_start_up_error_in_both_modes() {
    let o = origin("a");
    let dir = log_path("access-dir");
    std::fs::create_dir_all(&dir).expect("a directory where the file would be");
    for mode in ["sp", "mp"] {
        let (code, _, stderr) = common::run_lb(
            &[
                "-H",
                "127.0.0.1",
                "-p",
                &common::free_port().to_string(),
                "-b",
                &backend_arg(&o),
                "--mode",
                mode,
                "--access-log",
                dir.to_str().unwrap(),
            ],
            Duration::from_secs(10),
        );
        assert_eq!(code, Some(1), "{mode}: {stderr}");
        assert!(
            stderr.contains("cannot open access log"),
            "{mode}: {stderr}"
        );
    }
}
