//! Bodies of any size stream through in bounded memory (SPEC §5): 100 MB up
//! and down, in both framings, while a second thread samples the load
//! balancer's resident set; a client that reads slowly must make the proxy
//! stop reading from the backend (backpressure), not buffer the response;
//! an idle keep-alive connection holds no buffers at all.

mod common;

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{Lb, backend_arg};
use load_balancer::origin::{Origin, OriginConfig};

const MB: u64 = 1024 * 1024;
const BIG: u64 = 100 * MB;
/// Whatever the body size, the balancer's RSS stays under this.
const RSS_CEILING_KB: u64 = 20 * 1024;
/// ... and grows by less than this over its idle baseline (its own buffers
/// are 16 KiB + 32 KiB per connection; the rest is allocator slack).
const RSS_GROWTH_KB: u64 = 8 * 1024;
/// Generous bound on one 100 MB transfer through loopback.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
const BLOCK: usize = 64 * 1024;
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut hash: u64, data: &[u8]) -> u64 {
    for &b in data {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// One `read`, retried on EINTR (a read with a timeout is not restarted
/// after a signal handler); panics on any other error.
fn read_some(r: &mut impl Read, buf: &mut [u8], what: &str) -> usize {
    loop {
        match r.read(buf) {
            Ok(n) => return n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's VmRSS every few ms from its own thread.
struct RssWatch {
    stop: Arc<AtomicBool>,
    sampler: JoinHandle<u64>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let sampler = thread::spawn(move || {
            let mut max = vm_rss_kb(pid);
            // Bounded even if the test forgets to stop it.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !flag.load(Ordering::Relaxed) && Instant::now() < deadline {
                max = max.max(vm_rss_kb(pid));
                thread::sleep(Duration::from_millis(5));
            }
            max.max(vm_rss_kb(pid))
        });
        RssWatch { stop, sampler }
    }

    /// The largest VmRSS seen, in kB.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("rss sampler")
    }
}

/// A balancer in front of one origin, warmed up by one request so the
/// baseline includes its first allocations.
fn setup(name: &str) -> (Origin, Lb, u64) {
    let origin = Origin::start(OriginConfig::new(name)).expect("origin");
    let lb = Lb::start(&["-b", &backend_arg(&origin)]);
    let mut warm = lb.client();
    assert_eq!(warm.request("GET", "/bytes/100000", &[], b"").status, 200);
    drop(warm);
    let baseline = lb.rss_kb();
    assert!(baseline > 0, "VmRSS of pid {} unreadable", lb.pid());
    (origin, lb, baseline)
}

fn assert_rss_flat(what: &str, baseline: u64, max: u64) {
    eprintln!("{what}: RSS baseline {baseline} kB, max {max} kB");
    assert!(
        max < RSS_CEILING_KB,
        "{what}: RSS reached {max} kB (ceiling {RSS_CEILING_KB} kB)"
    );
    assert!(
        max.saturating_sub(baseline) < RSS_GROWTH_KB,
        "{what}: RSS grew from {baseline} kB to {max} kB"
    );
}

/// A deterministic, non-periodic byte stream (xorshift64), so a lost,
/// doubled or reordered block changes the hash.
struct Noise(u64);

impl Noise {
    fn fill(&mut self, out: &mut [u8]) {
        for word in out.chunks_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
        }
    }
}

/// Writes `total` bytes of noise (as chunks of varying sizes when
/// `chunked`) and returns the FNV-1a of the payload.
fn write_body(out: &mut impl Write, total: u64, chunked: bool) -> io::Result<u64> {
    // Odd, tiny and large chunks, as a real client might send.
    const CHUNKS: [usize; 6] = [BLOCK, 1, 7000, BLOCK - 3, 100, 33_333];
    let mut noise = Noise(0x0123_4567_89ab_cdef);
    let mut block = vec![0u8; BLOCK];
    let mut hash = FNV_OFFSET;
    let mut sent = 0u64;
    let mut i = 0;
    while sent < total {
        let n = (CHUNKS[i % CHUNKS.len()] as u64).min(total - sent) as usize;
        i += 1;
        noise.fill(&mut block[..n]);
        hash = fnv1a(hash, &block[..n]);
        if chunked {
            out.write_all(format!("{n:x}\r\n").as_bytes())?;
            out.write_all(&block[..n])?;
            out.write_all(b"\r\n")?;
        } else {
            out.write_all(&block[..n])?;
        }
        sent += n as u64;
    }
    if chunked {
        out.write_all(b"0\r\n\r\n")?;
    }
    Ok(hash)
}

fn upload(chunked: bool) {
    let what = if chunked {
        "chunked upload"
    } else {
        "content-length upload"
    };
    let (origin, lb, baseline) = setup("up");
    let watch = RssWatch::start(lb.pid());
    let started = Instant::now();
    let mut client = lb.client();
    client.set_read_timeout(TRANSFER_TIMEOUT);
    let length = BIG.to_string();
    let framing = match chunked {
        true => ("Transfer-Encoding", "chunked"),
        false => ("Content-Length", length.as_str()),
    };
    client
        .send_request("POST", "/sink", &[framing], b"")
        .expect("send head");
    let hash = write_body(&mut client, BIG, chunked).expect("send body");
    let resp = client.read_response(false);
    let max = watch.stop();
    eprintln!("{what}: {BIG} bytes in {:?}", started.elapsed());
    assert_eq!(resp.status, 200, "{}", resp.body_str());
    assert_eq!(resp.body_str(), format!("{BIG} {hash:016x}\n"));
    assert_eq!(origin.requests(), 2);
    assert_rss_flat(what, baseline, max);
    // The connection is still good for another request.
    assert_eq!(client.request("GET", "/", &[], b"").status, 200);
}

#[test]
fn upload_100mb_content_length_in_flat_memory() {
    upload(false);
}

#[test]
fn upload_100mb_chunked_in_flat_memory() {
    upload(true);
}

/// Reads a response head from `r`; returns the status, the headers (names
/// lowercased) and the bytes read past the head.
fn read_head(r: &mut impl Read) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(buf.len() < 64 * 1024, "response head too large");
        let n = read_some(r, &mut chunk, "read response head");
        assert!(n > 0, "closed in response head: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, rest)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Checks body bytes against the origin's `abc..z` pattern as they come.
struct PatternCheck {
    offset: u64,
}

impl PatternCheck {
    fn feed(&mut self, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            let at = self.offset + i as u64;
            let want = b'a' + (at % 26) as u8;
            assert_eq!(b, want, "body byte {at} is {b:#x}, want {want:#x}");
        }
        self.offset += data.len() as u64;
    }
}

/// Reads a `Content-Length` body of `len` bytes, checking it on the fly.
fn stream_length_body(r: &mut impl Read, first: &[u8], len: u64) -> u64 {
    let mut check = PatternCheck { offset: 0 };
    assert!(first.len() as u64 <= len, "bytes past the body");
    check.feed(first);
    let mut buf = vec![0u8; 256 * 1024];
    while check.offset < len {
        let want = (len - check.offset).min(buf.len() as u64) as usize;
        let n = read_some(r, &mut buf[..want], "read body");
        assert!(n > 0, "closed after {} of {len} body bytes", check.offset);
        check.feed(&buf[..n]);
    }
    check.offset
}

/// Decodes a chunked body as it comes (no storing), checking the payload;
/// returns the payload length and the trailer lines.
fn stream_chunked_body(r: &mut impl Read, first: &[u8]) -> (u64, Vec<String>) {
    let mut check = PatternCheck { offset: 0 };
    let mut pending: Vec<u8> = first.to_vec();
    let mut buf = vec![0u8; 256 * 1024];
    let mut more = |pending: &mut Vec<u8>| {
        let n = read_some(r, &mut buf, "read chunked body");
        assert!(n > 0, "closed inside the chunked body");
        pending.extend_from_slice(&buf[..n]);
    };
    let line = |pending: &mut Vec<u8>, more: &mut dyn FnMut(&mut Vec<u8>)| loop {
        if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
            let text = String::from_utf8_lossy(&pending[..i]).into_owned();
            pending.drain(..i + 2);
            return text;
        }
        assert!(pending.len() < 8192, "chunk line too long");
        more(pending);
    };
    loop {
        let size_line = line(&mut pending, &mut more);
        let size = u64::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
        if size == 0 {
            break;
        }
        let mut left = size;
        while left > 0 {
            if pending.is_empty() {
                more(&mut pending);
            }
            let n = (pending.len() as u64).min(left) as usize;
            check.feed(&pending[..n]);
            pending.drain(..n);
            left -= n as u64;
        }
        assert_eq!(
            line(&mut pending, &mut more),
            "",
            "chunk longer than its size"
        );
    }
    let mut trailers = Vec::new();
    loop {
        let l = line(&mut pending, &mut more);
        if l.is_empty() {
            break;
        }
        trailers.push(l);
    }
    assert!(pending.is_empty(), "bytes past the chunked body");
    (check.offset, trailers)
}

#[test]
fn download_100mb_content_length_in_flat_memory() {
    let (_origin, lb, baseline) = setup("down");
    let watch = RssWatch::start(lb.pid());
    let started = Instant::now();
    let mut client = lb.client();
    client.set_read_timeout(TRANSFER_TIMEOUT);
    client
        .send_request("GET", &format!("/bytes/{BIG}"), &[], b"")
        .expect("send");
    let (status, headers, first) = read_head(&mut client);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-length"),
        Some(BIG.to_string().as_str())
    );
    let got = stream_length_body(&mut client, &first, BIG);
    let max = watch.stop();
    eprintln!("download: {got} bytes in {:?}", started.elapsed());
    assert_eq!(got, BIG);
    assert_rss_flat("content-length download", baseline, max);
    assert_eq!(client.request("GET", "/", &[], b"").status, 200);
}

#[test]
fn download_100mb_chunked_in_flat_memory() {
    let (_origin, lb, baseline) = setup("down");
    let watch = RssWatch::start(lb.pid());
    let mut client = lb.client();
    client.set_read_timeout(TRANSFER_TIMEOUT);
    client
        .send_request("GET", &format!("/chunked/{BIG}"), &[], b"")
        .expect("send");
    let (status, headers, first) = read_head(&mut client);
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
    let (got, trailers) = stream_chunked_body(&mut client, &first);
    let max = watch.stop();
    assert_eq!(got, BIG);
    assert_eq!(trailers, ["X-Trailer: done"]);
    assert_rss_flat("chunked download", baseline, max);
    assert_eq!(client.request("GET", "/", &[], b"").status, 200);
}

#[test]
fn slow_reader_applies_backpressure_instead_of_buffering() {
    const SIZE: u64 = BIG;
    const SLOW_FOR: Duration = Duration::from_secs(2);
    let (_origin, lb, baseline) = setup("slow");
    let watch = RssWatch::start(lb.pid());
    let mut client = lb.client();
    client.set_read_timeout(TRANSFER_TIMEOUT);
    client
        .send_request("GET", &format!("/bytes/{SIZE}"), &[], b"")
        .expect("send");
    let (status, _headers, first) = read_head(&mut client);
    assert_eq!(status, 200);
    let mut check = PatternCheck { offset: 0 };
    check.feed(&first);
    // 8 KiB every 20 ms (~400 KB/s): the origin could send 100 times that,
    // so whatever the proxy does not hold back ends up in its memory.
    let slow_until = Instant::now() + SLOW_FOR;
    let mut small = [0u8; 8192];
    while Instant::now() < slow_until {
        let n = read_some(&mut client, &mut small, "slow read");
        assert!(n > 0, "closed during the slow phase");
        check.feed(&small[..n]);
        thread::sleep(Duration::from_millis(20));
    }
    let slow_max = vm_rss_kb(lb.pid());
    let read_slowly = check.offset;
    assert!(
        read_slowly < 20 * MB,
        "the slow phase read {read_slowly} bytes: not slow"
    );
    // Now read the rest at full speed: nothing was lost or reordered.
    let mut buf = vec![0u8; 256 * 1024];
    while check.offset < SIZE {
        let want = (SIZE - check.offset).min(buf.len() as u64) as usize;
        let n = read_some(&mut client, &mut buf[..want], "fast read");
        assert!(n > 0, "closed after {} of {SIZE} bytes", check.offset);
        check.feed(&buf[..n]);
    }
    let max = watch.stop();
    eprintln!("slow reader: {read_slowly} bytes read slowly, RSS then {slow_max} kB");
    assert_rss_flat("slow reader", baseline, max);
    assert_eq!(client.request("GET", "/", &[], b"").status, 200);
}

/// A one-connection backend that reads the request head, then waits
/// `stall` before it drains the `Content-Length` body, and answers with the
/// FNV-1a of what it read.
fn stalling_backend(stall: Duration) -> (std::net::SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        listener.set_nonblocking(true).expect("nonblocking");
        let deadline = Instant::now() + Duration::from_secs(30);
        // The first connection that is not an active health probe.
        let (mut stream, length, mut first) = loop {
            let mut stream = match listener.accept() {
                Ok((s, _)) => s,
                Err(_) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) => panic!("no connection: {e}"),
            };
            stream.set_nonblocking(false).expect("blocking");
            stream
                .set_read_timeout(Some(TRANSFER_TIMEOUT))
                .expect("timeout");
            let (path, length, first) = read_request_head(&mut stream);
            if path == PROBE_PATH {
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            }
            break (stream, length, first);
        };
        thread::sleep(stall);
        let mut hash = fnv1a(FNV_OFFSET, &first);
        let mut count = first.len() as u64;
        first.clear();
        let mut buf = vec![0u8; BLOCK];
        while count < length {
            let want = (length - count).min(BLOCK as u64) as usize;
            let n = read_some(&mut stream, &mut buf[..want], "read body");
            assert!(n > 0, "client side closed after {count} bytes");
            hash = fnv1a(hash, &buf[..n]);
            count += n as u64;
        }
        let body = format!("{count} {hash:016x}\n");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("answer");
        stream.write_all(body.as_bytes()).expect("answer");
    });
    (addr, handle)
}

/// Reads a request head; returns its path, its Content-Length and the
/// body bytes read along with it.
fn read_request_head(stream: &mut TcpStream) -> (String, u64, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let path = head.split(' ').nth(1).unwrap_or_default().to_string();
            let length = head
                .to_ascii_lowercase()
                .split("\r\n")
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            return (path, length, buf[end + 4..].to_vec());
        }
        let n = read_some(stream, &mut chunk, "read request head");
        assert!(n > 0, "closed in request head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Active health probes of the balancer go here (`--health-path`), so a
/// raw backend can tell them from the request under test.
const PROBE_PATH: &str = "/health";

#[test]
fn stalled_backend_applies_backpressure_to_the_upload() {
    // The other direction: a client uploading fast to a backend that does
    // not read yet must be held back by the proxy, not buffered by it.
    const SIZE: u64 = 64 * MB;
    let (addr, backend) = stalling_backend(Duration::from_secs(2));
    let lb = Lb::start(&["--health-path", PROBE_PATH, "-b", &addr.to_string()]);
    let baseline = lb.rss_kb();
    let watch = RssWatch::start(lb.pid());
    let mut client = lb.client();
    client.set_read_timeout(TRANSFER_TIMEOUT);
    let length = SIZE.to_string();
    client
        .send_request("POST", "/up", &[("Content-Length", length.as_str())], b"")
        .expect("send head");
    let writer = client.stream().try_clone().expect("clone stream");
    let sender = thread::spawn(move || {
        let mut writer = writer;
        writer
            .set_write_timeout(Some(TRANSFER_TIMEOUT))
            .expect("write timeout");
        write_body(&mut writer, SIZE, false)
    });
    let resp = client.read_response(false);
    let hash = sender.join().expect("sender").expect("upload body");
    let max = watch.stop();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), format!("{SIZE} {hash:016x}\n"));
    assert_rss_flat("stalled backend", baseline, max);
    drop(client);
    backend.join().expect("backend thread");
}

/// An idle keep-alive connection holds no buffers: between requests the
/// storage of its read buffer and of the heads it wrote goes back to the
/// worker's pools (nginx frees its buffers on idle connections too).
/// Holding a read buffer would cost at least 16 KiB a connection, holding
/// the two heads about 3 KiB; the session itself is under 1 KiB.
#[test]
fn idle_keep_alive_connections_hold_no_buffers() {
    const CONNECTIONS: u64 = 400;
    const MAX_PER_CONNECTION: u64 = 2 * 1024;
    let (_origin, lb, baseline) = setup("idle");
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let mut client = lb.client();
            assert_eq!(client.request("GET", "/bytes/10", &[], b"").status, 200);
            client
        })
        .collect();
    let grown = lb.rss_kb().saturating_sub(baseline) * 1024;
    let per_connection = grown / CONNECTIONS;
    eprintln!("{CONNECTIONS} idle connections: RSS +{grown} B, {per_connection} B each");
    assert!(
        per_connection < MAX_PER_CONNECTION,
        "{per_connection} B of RSS per idle keep-alive connection"
    );
    drop(clients);
}

#[test]
fn memory_goes_back_to_the_system_after_a_peak_of_connections() {
    // A peak of open connections (each with a request served, so its heads
    // grew their field lists, or in the middle of a head, holding a read
    // buffer) must not pin the worker's RSS once they close: the sweep hands
    // freed memory back within a few seconds.
    const CONNECTIONS: usize = 3000;
    let (_origin, lb, baseline) = setup("peak");
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let mut client = lb.client();
            let fields: Vec<(String, String)> = (0..20)
                .map(|f| (format!("X-Field-{f}"), format!("value {i} {f}")))
                .collect();
            let fields: Vec<(&str, &str)> = fields
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            assert_eq!(client.request("GET", "/bytes/10", &fields, b"").status, 200);
            client
        })
        .collect();
    // Slow clients in the middle of a head hold a read buffer each.
    let slow: Vec<_> = (0..1000)
        .map(|_| {
            let mut client = lb.client();
            client.send_raw(b"GET /slow HTTP/1.1\r\nHost: a\r\n");
            client
        })
        .collect();
    let peak = common::wait_until(Duration::from_secs(5), || lb.rss_kb() > 16 * 1024);
    assert!(peak, "1000 slow heads should hold their buffers");
    let peak = lb.rss_kb();
    // One connection made last, still open: what it holds sits at the top
    // of the heap, so only handing back free pages below it helps.
    let mut last_client = lb.client();
    let fields = [("X-Late", "a value long enough to allocate a field list")];
    assert_eq!(
        last_client.request("GET", "/bytes/10", &fields, b"").status,
        200
    );
    last_client.send_raw(b"GET /late HTTP/1.1\r\nHost: a\r\n");
    drop(clients);
    drop(slow);
    let grown = peak.saturating_sub(baseline);
    eprintln!("{CONNECTIONS} connections: RSS {baseline} kB -> {peak} kB");
    assert!(grown > 2048, "the peak should cost memory: {grown} kB");
    let target = baseline + grown / 4;
    let mut last = peak;
    let released = common::wait_until(Duration::from_secs(5), || {
        last = lb.rss_kb();
        last <= target
    });
    eprintln!("after the peak: RSS {last} kB (target {target} kB)");
    assert!(
        released,
        "RSS still {last} kB 5 s after the peak ({baseline} kB before, {peak} kB at it)"
    );
    drop(last_client);
}
