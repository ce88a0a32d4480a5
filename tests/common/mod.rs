//! Shared integration-test harness: the load balancer as a child process
//! ([`Lb`], [`run_lb`]), a blocking HTTP/1.1 [`Client`], raw-socket and
//! WebSocket helpers. Test-only; every test file includes it with
//! `mod common;`, so nothing here may depend on a particular test.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use load_balancer::origin::Origin;

pub mod h2;
pub mod load;
pub mod relay;
pub mod tls;

/// Read/write timeout of [`Client`] and of the raw helpers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`Lb::start`] waits for the port to accept connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(5);
/// Larger response heads mean a broken peer, not a big test.
const MAX_RESPONSE_HEAD: usize = 1024 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;
/// RFC 6455's sample key and its accept value (§1.3).
pub const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// PIDs of the direct children of `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    processes_where(|fields| fields.get(1) == Some(&pid.to_string().as_str()))
}

/// Live processes whose `/proc/PID/stat` fields after `(comm)` (state,
/// ppid, pgrp, ...) satisfy `keep`; comm may contain spaces.
fn processes_where(keep: impl Fn(&[&str]) -> bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                    Some(keep(&fields))
                })
                .unwrap_or(false)
        })
        .collect()
}

pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Polls `check` every few ms until it holds (true) or `timeout` passes
/// (false); `check` runs at least once, and once more at the deadline.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return check();
        }
        thread::sleep(left.min(POLL_EVERY));
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// `host:port` of an origin, as `-b` wants it.
pub fn backend_arg(o: &Origin) -> String {
    o.addr().to_string()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

// ---------------------------------------------------------------------------
// The load balancer process

/// A running load balancer. Dropping it kills its whole process group
/// (master and workers) and reaps it.
pub struct Lb {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<Vec<String>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Lb {
    /// Runs the binary with `-H 127.0.0.1 -p <free port> --mode sp` plus
    /// `args` (`--mode` is left out if `args` has one) and waits until the
    /// port accepts connections. Panics with the captured stderr if the
    /// process exits or never listens.
    pub fn start(args: &[&str]) -> Lb {
        Lb::start_binary(Path::new(env!("CARGO_BIN_EXE_load_balancer")), args)
    }

    /// As `start`, running `binary` (e.g. a copy an upgrade test replaces).
    pub fn start_binary(binary: &Path, args: &[&str]) -> Lb {
        Lb::start_env(binary, args, &[])
    }

    /// As `start_binary`, with `env` added to the balancer's environment.
    pub fn start_env(binary: &Path, args: &[&str], env: &[(&str, &str)]) -> Lb {
        let mut last_log = String::new();
        // free_port can race with another test; a port taken in between is
        // retried, any other failure is the test's business.
        for _ in 0..3 {
            let port = free_port();
            match Lb::spawn(binary, port, args, env) {
                Ok(lb) => return lb,
                Err(log) if log.contains("in use") => last_log = log,
                Err(log) => panic!("load balancer {args:?} failed to start:\n{log}"),
            }
        }
        panic!("load balancer {args:?} found no free port:\n{last_log}");
    }

    /// Runs the binary with exactly `args`, which must make it listen on
    /// `port` (through a config file, say), and waits as `start` does. The
    /// error is the reason with the captured stderr.
    pub fn start_exact(args: &[&str], port: u16) -> Result<Lb, String> {
        let binary = Path::new(env!("CARGO_BIN_EXE_load_balancer"));
        Lb::spawn_exact(binary, port, args, &[])
    }

    fn spawn(binary: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Result<Lb, String> {
        let port_text = port.to_string();
        let mut full = vec!["-H", "127.0.0.1", "-p", port_text.as_str()];
        if !args.iter().any(|a| a.starts_with("--mode")) {
            full.extend(["--mode", "sp"]);
        }
        full.extend_from_slice(args);
        Lb::spawn_exact(binary, port, &full, env)
    }

    fn spawn_exact(
        binary: &Path,
        port: u16,
        full: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Lb, String> {
        let mut child = spawn_retrying_busy(|| {
            lb_command(binary, full)
                .envs(env.iter().copied())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        })
        .expect("spawn the load_balancer binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let reader = collect_lines(pipe, Arc::clone(&stderr));
        let mut lb = Lb {
            child,
            port,
            stderr,
            stderr_reader: Some(reader),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            // Taken before the checks, so that they run once more after the
            // deadline: a test process paused past it (a loaded or frozen
            // machine) must not fail a balancer that is listening by then.
            let expired = Instant::now() >= deadline;
            if let Ok(Some(status)) = lb.child.try_wait() {
                lb.finish_stderr();
                return Err(format!(
                    "exited with {status}; stderr:\n{}",
                    lb.stderr_text()
                ));
            }
            // Not "the port accepts a connection": between `free_port` and
            // the child's bind another thread's `bind(0)` may get the same
            // port (Linux hands a just-released port out again often), and
            // a connect would then reach that listener, not the balancer.
            if owns_listener(lb.child.id(), port) {
                return Ok(lb);
            }
            if expired {
                return Err(format!(
                    "not listening on {port} after {START_TIMEOUT:?}; stderr:\n{}",
                    lb.stderr_text()
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        loopback(self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new keep-alive client connection to the balancer.
    pub fn client(&self) -> Client {
        Client::connect(self.port)
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stderr_text(&self) -> String {
        self.stderr_lines().join("\n")
    }

    /// Waits until some stderr line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.stderr
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|line| line.contains(needle))
        })
    }

    /// Resident set size of the main process in kB (0 if unreadable).
    pub fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()));
        status
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sends a signal by name (`"TERM"`, `"HUP"`, ...) to the main process.
    pub fn signal(&self, name: &str) {
        send_signal(name, &self.pid().to_string());
    }

    /// Waits for the main process to exit (e.g. after `signal("TERM")`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        if status.is_some() {
            self.finish_stderr();
        }
        status
    }

    /// After exit, lets the reader pick up the last lines (bounded: workers
    /// may still hold the pipe).
    fn finish_stderr(&mut self) {
        let done = wait_until(Duration::from_millis(500), || {
            self.stderr_reader.as_ref().is_none_or(|r| r.is_finished())
        });
        if done && let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Whether the process group led by `pid` (the balancer, and in mp mode
/// its workers) holds the socket listening on `port`: the socket's inode,
/// from /proc/net/tcp{,6}, is among the group's open files.
fn owns_listener(pid: u32, port: u16) -> bool {
    const LISTEN: &str = "0A";
    let suffix = format!(":{port:04X}");
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[1].ends_with(&suffix) && f[3] == LISTEN {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let holds = |member: u32| {
        std::fs::read_dir(format!("/proc/{member}/fd"))
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    };
    // The leader first: in sp mode it is the only member.
    !inodes.is_empty() && (holds(pid) || group_members(pid).into_iter().any(holds))
}

/// Live processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let pgid = pgid.to_string();
    processes_where(|fields| fields.get(2) == Some(&pgid.as_str()) && fields.first() != Some(&"Z"))
}

/// Spawns, retrying "text file busy": a binary a test just wrote (a copy
/// for an upgrade test) can still be open for writing in a child another
/// test thread forked meanwhile, until that child execs. Bounded.
fn spawn_retrying_busy(mut spawn: impl FnMut() -> io::Result<Child>) -> io::Result<Child> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match spawn() {
            Err(e)
                if e.kind() == io::ErrorKind::ExecutableFileBusy && Instant::now() < deadline =>
            {
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The binary under test in its own process group, so one kill reaches
/// the workers of a multi-process run too.
fn lb_command(binary: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command.args(args).stdin(Stdio::null()).process_group(0);
    command
}

fn send_signal(name: &str, target: &str) {
    // `kill(1)` rather than libc: keeps the harness free of `unsafe`.
    let _ = Command::new("kill")
        .args(["-s", name, "--", target])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Kills the balancer and everything in its process group, which after a
/// binary upgrade includes the new master (a child of the old one, which
/// may be gone by now) and its workers.
fn kill_group(child: &mut Child) {
    if matches!(child.try_wait(), Ok(None)) || !group_members(child.id()).is_empty() {
        send_signal("KILL", &format!("-{}", child.id()));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn collect_lines(pipe: ChildStderr, sink: Arc<Mutex<Vec<String>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        // Ends at EOF, i.e. when the process (group) has exited.
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(text);
            line.clear();
        }
    })
}

/// Runs the binary with exactly `args` and waits for it to exit; kills it
/// (exit code `None`) if it is still running after `timeout`. For CLI tests.
pub fn run_lb(args: &[&str], timeout: Duration) -> (Option<i32>, String, String) {
    let mut child = lb_command(Path::new(env!("CARGO_BIN_EXE_load_balancer")), args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the load_balancer binary");
    let stdout = read_all_in_background(child.stdout.take());
    let stderr = read_all_in_background(child.stderr.take());
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if status.is_none() {
        kill_group(&mut child);
    }
    let grace = Duration::from_secs(1);
    let out = stdout.recv_timeout(grace).unwrap_or_default();
    let err = stderr.recv_timeout(grace).unwrap_or_default();
    (status.and_then(|s| s.code()), out, err)
}

fn read_all_in_background(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });
    rx
}

// ---------------------------------------------------------------------------
// HTTP client

/// One parsed HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// First value of a header, name case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn trailer(&self, name: &str) -> Option<&str> {
        find_header(&self.trailers, name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A blocking HTTP/1.1 client on one connection. Bytes read past a response
/// stay buffered for the next one (pipelining), and for `Read` after a 101.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to 127.0.0.1:`port`; panics if it cannot.
    pub fn connect(port: u16) -> Client {
        Client::try_connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
    }

    pub fn try_connect(port: u16) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&loopback(port), IO_TIMEOUT)?;
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> io::Result<Client> {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// Changes the read timeout (e.g. for `/delay` tests).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set read timeout");
    }

    /// The socket, e.g. to half-close it or clone it for a writer thread.
    /// Reading from it directly skips bytes already buffered here.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Sends one request and reads its response; panics on I/O errors.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        self.try_request(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Response> {
        self.send_request(method, path, headers, body)?;
        self.try_read_response(method == "HEAD")
    }

    /// Writes one request without reading (for pipelining). Adds
    /// `Host: localhost` unless given, and `Content-Length` when there is a
    /// body or the method is POST/PUT, unless a length or transfer coding is
    /// given (then `body` goes out as is, e.g. pre-encoded chunks).
    pub fn send_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let mut head = format!("{method} {path} HTTP/1.1\r\n");
        if !has("host") {
            head.push_str("Host: localhost\r\n");
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let framed = has("content-length") || has("transfer-encoding");
        if !framed && (!body.is_empty() || method == "POST" || method == "PUT") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes)
    }

    /// Writes bytes as they are; panics on error.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send raw bytes");
    }

    /// Reads one response (1xx included); panics on I/O or framing errors.
    /// `head_request`: the response to a HEAD has no body whatever it says.
    pub fn read_response(&mut self, head_request: bool) -> Response {
        self.try_read_response(head_request)
            .unwrap_or_else(|e| panic!("read response: {e}"))
    }

    pub fn try_read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let (status, headers) = self.read_head()?;
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        let bodiless =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        if bodiless {
            return Ok(response);
        }
        let chunked = response
            .header_all("transfer-encoding")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        if chunked {
            self.read_chunked(&mut response)?;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .trim()
                .parse()
                .map_err(|_| bad_data(format!("bad Content-Length {length:?}")))?;
            response.body = self.read_exact_bytes(length)?;
        } else {
            response.body = self.read_to_close()?;
        }
        Ok(response)
    }

    /// True if the peer closes (EOF or reset) within `timeout` with no
    /// further data; false if data arrives or it stays open.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let _ = self.stream.set_read_timeout(Some(timeout));
        let mut byte = [0u8; 1];
        let closed = match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => {
                self.buf.push(byte[0]);
                false
            }
            Err(e) => !matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        closed
    }

    /// Half-closes the sending side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        // A read with SO_RCVTIMEO is not restarted after a signal handler
        // (glibc's internal ones included): EINTR is not the peer's doing.
        let n = loop {
            match self.stream.read(&mut chunk) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn fill_or_eof(&mut self, what: &str) -> io::Result<()> {
        if self.fill()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("connection closed in {what}"),
            ));
        }
        Ok(())
    }

    fn read_head(&mut self) -> io::Result<(u16, Vec<(String, String)>)> {
        loop {
            let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = parsed.code.unwrap_or(0);
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    self.buf.drain(..len);
                    return Ok((status, headers));
                }
                Ok(httparse::Status::Partial) if self.buf.len() > MAX_RESPONSE_HEAD => {
                    return Err(bad_data("response head too large".into()));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => {
                    let seen =
                        String::from_utf8_lossy(&self.buf[..self.buf.len().min(200)]).into_owned();
                    return Err(bad_data(format!("bad response head ({e}): {seen:?}")));
                }
            }
            self.fill_or_eof("response head")?;
        }
    }

    fn read_exact_bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.fill_or_eof("response body")?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    fn read_line(&mut self) -> io::Result<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string());
            }
            if self.buf.len() > MAX_RESPONSE_HEAD {
                return Err(bad_data("line too long".into()));
            }
            self.fill_or_eof("chunked body")?;
        }
    }

    fn read_chunked(&mut self, response: &mut Response) -> io::Result<()> {
        loop {
            let line = self.read_line()?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad_data(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                break;
            }
            let data = self.read_exact_bytes(size)?;
            response.body.extend_from_slice(&data);
            if !self.read_line()?.is_empty() {
                return Err(bad_data("chunk data longer than its size".into()));
            }
        }
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                return Ok(());
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| bad_data(format!("bad trailer {line:?}")))?;
            response
                .trailers
                .push((name.trim().to_string(), value.trim().to_string()));
        }
    }

    fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }
}

/// Buffered bytes first, then the socket: after a 101 the client is the
/// WebSocket stream.
impl Read for Client {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.buf.is_empty() {
            return self.stream.read(out);
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf.drain(..n);
        Ok(n)
    }
}

impl Write for Client {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.stream.write(data)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

fn bad_data(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// `GET path` on a new connection.
pub fn get(port: u16, path: &str) -> Response {
    Client::connect(port).request("GET", path, &[], b"")
}

/// Writes `bytes`, then returns everything read until the peer closes or
/// `timeout` passes. Write errors are ignored: the peer may close early.
pub fn raw_exchange(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&loopback(port), IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let _ = stream.write_all(bytes);
    let mut out = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return out;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------------------
// WebSocket

/// A masked client frame with FIN set (RFC 6455 §5.2).
pub fn ws_client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    // Varying, never-zero masks so a relay that forgets to pass the mask
    // through cannot go unnoticed.
    let mask = (NEXT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_mul(0x9e37_79b9)
        | 1)
    .to_be_bytes();
    let mut frame = vec![0x80 | (opcode & 0x0f)];
    let len = payload.len();
    if len <= 125 {
        frame.push(0x80 | len as u8);
    } else if len <= 0xffff {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(len as u64).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// Reads one unmasked server frame: (opcode, payload).
pub fn ws_read_frame(stream: &mut impl Read) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head)?;
    if head[1] & 0x80 != 0 {
        return Err(bad_data("server frame is masked".into()));
    }
    let len = match head[1] & 0x7f {
        126 => {
            let mut ext = [0u8; 2];
            stream.read_exact(&mut ext)?;
            u64::from(u16::from_be_bytes(ext))
        }
        127 => {
            let mut ext = [0u8; 8];
            stream.read_exact(&mut ext)?;
            u64::from_be_bytes(ext)
        }
        n => u64::from(n),
    };
    let len = usize::try_from(len).map_err(|_| bad_data("frame too large".into()))?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok((head[0] & 0x0f, payload))
}

/// Sends a WebSocket upgrade for `path` with [`WS_KEY`] and reads the
/// response; on a 101 the client then carries frames.
pub fn ws_upgrade(client: &mut Client, path: &str) -> Response {
    let headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", WS_KEY),
        ("Sec-WebSocket-Version", "13"),
    ];
    client.request("GET", path, &headers, b"")
}

// ---------------------------------------------------------------------------
// An origin whose health probe answers follow a script

/// What a [`ScriptedOrigin`] answers one `GET /health` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeAnswer {
    Status(u16),
    /// Reads the probe and never answers: the prober times out.
    Silent,
}

impl ProbeAnswer {
    /// What the balancer's prober counts as healthy.
    pub fn is_good(self) -> bool {
        self == ProbeAnswer::Status(200)
    }
}

struct ProbeScript {
    queue: std::collections::VecDeque<ProbeAnswer>,
    default: ProbeAnswer,
    /// Every probe answered (or left silent) so far, in order.
    answered: Vec<ProbeAnswer>,
}

/// A backend whose answers to `GET /health` are queued by the test (then a
/// default, 200 unless changed), so a test decides exactly which probe
/// fails. Every other request gets `200 hello from NAME` on a keep-alive
/// connection. Stops accepting when dropped.
pub struct ScriptedOrigin {
    addr: SocketAddr,
    script: Arc<Mutex<ProbeScript>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl ScriptedOrigin {
    pub fn start(name: &str) -> ScriptedOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a scripted origin");
        let addr = listener.local_addr().expect("local addr");
        let script = Arc::new(Mutex::new(ProbeScript {
            queue: Default::default(),
            default: ProbeAnswer::Status(200),
            answered: Vec::new(),
        }));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, halt, hello) = (Arc::clone(&script), Arc::clone(&stop), name.to_string());
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, hello) = (Arc::clone(&s), hello.clone());
                thread::spawn(move || serve_scripted(conn, &s, &hello));
            }
        });
        ScriptedOrigin {
            addr,
            script,
            stop,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers for the next probes, before the default applies again.
    pub fn push(&self, answers: &[ProbeAnswer]) {
        self.lock().queue.extend(answers.iter().copied());
    }

    /// The answer once the queue is empty.
    pub fn set_default(&self, answer: ProbeAnswer) {
        self.lock().default = answer;
    }

    /// Every probe so far, in order.
    pub fn probes(&self) -> Vec<ProbeAnswer> {
        self.lock().answered.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProbeScript> {
        self.script
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept so the thread sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

/// One connection of a [`ScriptedOrigin`]: requests until the peer closes,
/// a probe (which is answered and closed), or `IO_TIMEOUT` of silence.
fn serve_scripted(mut conn: TcpStream, script: &Mutex<ProbeScript>, name: &str) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head: Vec<u8> = buf.drain(..end + 4).collect();
        if !head.starts_with(b"GET /health ") {
            let body = format!("hello from {name}\n");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Origin: {name}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(answer.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        let answer = {
            let mut s = script
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let a = s.queue.pop_front().unwrap_or(s.default);
            s.answered.push(a);
            a
        };
        match answer {
            ProbeAnswer::Status(code) => {
                let _ = write!(
                    conn,
                    "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
            // Until the prober gives up and closes (or IO_TIMEOUT).
            ProbeAnswer::Silent => while matches!(conn.read(&mut chunk), Ok(n) if n > 0) {},
        }
        return;
    }
}

/// A fresh file under cargo's per-target scratch directory, e.g. a `-c`
/// config.
pub fn scratch_file(tag: &str, contents: &str) -> std::path::PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("common");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("write a scratch file");
    path
}

/// Live processes of the process group `pgid`: an [`Lb`]'s whole tree
/// (masters and workers, also across a binary upgrade).
pub fn process_group(pgid: u32) -> Vec<u32> {
    group_members(pgid)
}
