//! Checks the "no heap allocation per request in steady state" promise: runs
//! a worker in-process under a counting global allocator that counts only on
//! the worker's thread, sends keep-alive requests of several kinds, and
//! prints allocations per request after warm-up (expected: 0.00).
//! `cargo bench --bench alloc [-- REQUESTS]`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use load_balancer::config::cli;
use load_balancer::metrics::Metrics;
use load_balancer::origin::{Origin, OriginConfig};
use load_balancer::worker::{self, Worker};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ON_WORKER: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter and the const-initialised thread-local never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON_WORKER.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours, passed through.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON_WORKER.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUESTS: [&[u8]; 3] = [
    b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: alloc-bench\r\nAccept: */*\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /chunked/5000 HTTP/1.1\r\nHost: bench\r\n\r\n",
];

fn main() {
    let requests: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30_000);
    let origin = Origin::start(OriginConfig::new("bench")).expect("origin");
    let listener = worker::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    let backend = origin.addr().to_string();
    let args = ["load_balancer", "--mode", "sp", "-l", "err", "-b", &backend];
    let config = Arc::new(cli::parse_from(args).expect("config"));
    std::thread::spawn(move || {
        let metrics = Metrics::create(1).expect("metrics");
        let mut worker = Worker::new(config, listener, None, metrics).expect("worker");
        ON_WORKER.with(|c| c.set(true));
        let _ = worker.run();
    });

    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut buf = vec![0u8; 64 * 1024];
    let warmup = requests / 10;
    for i in 0..warmup {
        exchange(&mut conn, REQUESTS[i as usize % 3], &mut buf);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for i in 0..requests {
        exchange(&mut conn, REQUESTS[i as usize % 3], &mut buf);
    }
    let after = ALLOCATIONS.load(Ordering::Relaxed);
    // The warm-up count proves the counter sees the worker's allocations
    // (the connection's buffers, the pool's first connection).
    println!("warm-up ({warmup} requests): {before} allocations on the worker thread");
    println!(
        "steady state ({requests} keep-alive requests): {} allocations ({:.3} per request)",
        after - before,
        (after - before) as f64 / requests as f64
    );
}

/// Sends one request and reads until the response is complete (the test
/// origin's answers here end with a known tail).
fn exchange(conn: &mut TcpStream, request: &[u8], buf: &mut [u8]) {
    conn.write_all(request).expect("write");
    let chunked = request.starts_with(b"GET /chunked");
    let mut seen = Vec::new();
    loop {
        let n = conn.read(buf).expect("read");
        assert!(n > 0, "proxy closed the connection");
        seen.extend_from_slice(&buf[..n]);
        if response_complete(&seen, chunked) {
            return;
        }
    }
}

fn response_complete(seen: &[u8], chunked: bool) -> bool {
    let Some(head_end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    if chunked {
        return seen.ends_with(b"\r\n\r\n") && seen.len() > head_end + 4;
    }
    let head = String::from_utf8_lossy(&seen[..head_end]).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    seen.len() >= head_end + 4 + length
}
