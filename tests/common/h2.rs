//! An HTTP/2 test origin over TLS: a tokio runtime on its own thread, with
//! tokio-rustls and h2's server side (dev-dependencies only). ALPN `h2`
//! gets HTTP/2; `http/1.1` (health probes, tunnels) gets a one-request
//! HTTP/1.1 answer. It records connections, streams and what each request
//! looked like. Test-only.
//!
//! Paths: `/bytes/N` N bytes without content-length; `/echo` the request
//! body back with its length; `/trailers` a body then trailers;
//! `/refuse-once` RST_STREAM(REFUSED_STREAM) the first time; `/reset`
//! RST_STREAM(INTERNAL_ERROR) always; `/status/N` an empty N answer;
//! `/goaway` answers, then the connection sends GOAWAY and closes once its
//! streams are done; `/goaway-below` answers, but the connection stops
//! reading and holds until the test calls [`H2Origin::send_goaway`], then
//! (its streams done) sends GOAWAY(NO_ERROR) whose last stream id is the
//! highest it read and closes: streams the client sent meanwhile are above
//! that id and were never handled (RFC 9113 §6.8); `/echo-stream` sends
//! each request DATA back as it arrives (the request's length, if any, as
//! the response's), taking more only as the client takes the echo;
//! `/reject-early` takes one stream window of the request body without
//! releasing it, then answers 413 and resets the stream with NO_ERROR;
//! `/slow-head` answers after 300 ms; anything else a line naming method,
//! path, authority and body length. Over HTTP/1.1 a WebSocket upgrade is
//! answered 101 and echoed, anything else 200.
//!
//! h2's `graceful_shutdown` cannot leave a stream above the last id: its
//! final GOAWAY names every stream read before the client's PING ack, and
//! the client opens none after the first GOAWAY. `abrupt_shutdown` can, but
//! it also fails the streams still being answered; hence the hold.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, Request, Response};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::tls::Leaf;

#[derive(Default)]
pub struct H2Seen {
    /// TLS connections that chose h2.
    pub h2_connections: AtomicUsize,
    /// Of those, the ones open now.
    pub h2_open: AtomicUsize,
    /// TLS connections that chose HTTP/1.1 (probes, tunnels).
    pub http1_connections: AtomicUsize,
    /// WebSocket upgrades received over HTTP/1.1.
    pub tunnels: AtomicUsize,
    pub streams: AtomicUsize,
    /// Most streams open at once on one connection.
    pub max_concurrent: AtomicUsize,
    refused: AtomicBool,
    /// `/goaway-below` connections that stopped reading and are not closed
    /// yet (a count: one may close as the next one starts holding).
    holding: AtomicUsize,
    /// Set by `send_goaway`, taken by the holding connection.
    release: AtomicBool,
    /// `METHOD path authority` of each stream, in order.
    pub requests: Mutex<Vec<String>>,
    /// Each request's header fields, lowercase names.
    pub headers: Mutex<Vec<HeaderMap>>,
    /// The trailers of each request body that ended with some.
    pub trailers: Mutex<Vec<HeaderMap>>,
}

pub struct H2Origin {
    addr: SocketAddr,
    pub seen: Arc<H2Seen>,
}

impl H2Origin {
    /// Serves on 127.0.0.1 with `leaf`; `max_streams` is its
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub fn start(leaf: Leaf, max_streams: u32) -> H2Origin {
        let mut config = ServerConfig::builder_with_provider(Arc::new(
            #[allow(deprecated)]
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(leaf.chain, leaf.key)
        .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let seen = Arc::new(H2Seen::default());
        let shared = Arc::clone(&seen);
        thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, seen) = (acceptor.clone(), Arc::clone(&shared));
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        if h2 {
                            seen.h2_connections.fetch_add(1, Ordering::SeqCst);
                            seen.h2_open.fetch_add(1, Ordering::SeqCst);
                            serve_h2(tls, Arc::clone(&seen), max_streams).await;
                            seen.h2_open.fetch_sub(1, Ordering::SeqCst);
                        } else {
                            seen.http1_connections.fetch_add(1, Ordering::SeqCst);
                            serve_http1(tls, &seen).await;
                        }
                    });
                }
            });
        });
        H2Origin { addr, seen }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn h2_connections(&self) -> usize {
        self.seen.h2_connections.load(Ordering::SeqCst)
    }

    /// h2 connections open now.
    pub fn h2_open(&self) -> usize {
        self.seen.h2_open.load(Ordering::SeqCst)
    }

    pub fn streams(&self) -> usize {
        self.seen.streams.load(Ordering::SeqCst)
    }

    pub fn max_concurrent(&self) -> usize {
        self.seen.max_concurrent.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.requests.lock().expect("lock").clone()
    }

    pub fn headers(&self) -> Vec<HeaderMap> {
        self.seen.headers.lock().expect("lock").clone()
    }

    pub fn trailers(&self) -> Vec<HeaderMap> {
        self.seen.trailers.lock().expect("lock").clone()
    }

    /// A connection that served `/goaway-below` has stopped reading and
    /// waits for `send_goaway`.
    pub fn holding_goaway(&self) -> bool {
        self.seen.holding.load(Ordering::SeqCst) > 0
    }

    /// Lets the holding connection send its GOAWAY (once its streams are
    /// answered) and close.
    pub fn send_goaway(&self) {
        self.seen.release.store(true, Ordering::SeqCst);
    }
}

/// The origin's h2 stream receive window.
const STREAM_WINDOW: u32 = 1 << 20;

/// How long a `/goaway-below` connection waits for `send_goaway` at most.
const GOAWAY_HOLD: Duration = Duration::from_secs(10);

/// The TLS stream under h2's server, able to stop reading (`/goaway-below`):
/// what the client sends then stays unread in the socket. On drop the
/// stream goes to `left`, so that it can be drained before it closes (a
/// close with unread bytes resets the connection, and the reset could
/// destroy the GOAWAY before the client read it).
struct Gate<T> {
    io: Option<T>,
    paused: Arc<AtomicBool>,
    left: Arc<Mutex<Option<T>>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Gate<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.paused.load(Ordering::SeqCst) {
            // Never resumed: the connection ends paused.
            return Poll::Pending;
        }
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Gate<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<T> Drop for Gate<T> {
    fn drop(&mut self) {
        if let Some(io) = self.io.take() {
            *self.left.lock().unwrap_or_else(|e| e.into_inner()) = Some(io);
        }
    }
}

async fn serve_h2<T>(io: T, seen: Arc<H2Seen>, max_streams: u32)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let paused = Arc::new(AtomicBool::new(false));
    let left = Arc::new(Mutex::new(None));
    let gate = Gate {
        io: Some(io),
        paused: Arc::clone(&paused),
        left: Arc::clone(&left),
    };
    let Ok(mut conn) = h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        // Past h2's 64 KiB default, so that uploads are not paced by round
        // trips between the processes sharing the test machine's cores.
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(8 << 20)
        .handshake::<_, Bytes>(gate)
        .await
    else {
        return;
    };
    let open = Arc::new(AtomicUsize::new(0));
    // Since when `/goaway-below` holds this connection.
    let mut holding: Option<Instant> = None;
    let (mut released, mut quiet) = (false, false);
    loop {
        let next = match holding {
            None => conn.accept().await,
            Some(since) => tokio::select! {
                // Polled first: it also writes what answers queued.
                biased;
                next = conn.accept() => next,
                () = tokio::time::sleep(Duration::from_millis(10)) => {
                    released |= seen.release.swap(false, Ordering::SeqCst)
                        || since.elapsed() > GOAWAY_HOLD;
                    // Answers done for a whole tick: their frames are out,
                    // and a GOAWAY now cuts none of them.
                    let idle = open.load(Ordering::SeqCst) == 0;
                    if released && idle && quiet {
                        break;
                    }
                    quiet = released && idle;
                    continue;
                }
            },
        };
        let Some(Ok((request, respond))) = next else {
            if holding.is_some() {
                seen.holding.fetch_sub(1, Ordering::SeqCst);
            }
            return;
        };
        match request.uri().path() {
            "/goaway" => conn.graceful_shutdown(),
            "/goaway-below" if holding.is_none() => {
                paused.store(true, Ordering::SeqCst);
                seen.holding.fetch_add(1, Ordering::SeqCst);
                holding = Some(Instant::now());
            }
            _ => {}
        }
        seen.streams.fetch_add(1, Ordering::SeqCst);
        let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
        seen.max_concurrent.fetch_max(now_open, Ordering::SeqCst);
        let (seen, open) = (Arc::clone(&seen), Arc::clone(&open));
        tokio::spawn(async move {
            answer(request, respond, &seen).await;
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
    // `/goaway-below`, released: GOAWAY with the last stream read, then
    // close; what the client sent since is drained unread.
    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
    let closed = std::future::poll_fn(|cx| conn.poll_closed(cx));
    let _ = tokio::time::timeout(Duration::from_secs(5), closed).await;
    seen.holding.fetch_sub(1, Ordering::SeqCst);
    drop(conn);
    let rest = left.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(mut io) = rest {
        let drain = async {
            let mut sink = [0u8; 16 * 1024];
            while let Ok(1..) = io.read(&mut sink).await {}
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    }
}

async fn answer(request: Request<h2::RecvStream>, mut respond: SendResponse<Bytes>, seen: &H2Seen) {
    let (parts, mut body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let authority = parts.uri.authority().map_or("", |a| a.as_str()).to_string();
    seen.requests
        .lock()
        .expect("lock")
        .push(format!("{} {path} {authority}", parts.method));
    seen.headers
        .lock()
        .expect("lock")
        .push(parts.headers.clone());
    if path == "/refuse-once" && !seen.refused.swap(true, Ordering::SeqCst) {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    if path == "/reset" {
        respond.send_reset(h2::Reason::INTERNAL_ERROR);
        return;
    }
    if path == "/reject-early" {
        // A whole stream window, none of it released: the client is left
        // with body it may not send. Then 413, and dropping the rest of the
        // body resets the stream with NO_ERROR (RFC 9113 §8.1).
        let mut taken = 0;
        while taken < STREAM_WINDOW as usize {
            match body.data().await {
                Some(Ok(data)) => taken += data.len(),
                _ => break,
            }
        }
        let head = Response::builder().status(413).body(()).expect("response");
        let _ = respond.send_response(head, true);
        return;
    }
    if path == "/echo-stream" {
        let length = parts.headers.get(http::header::CONTENT_LENGTH).cloned();
        echo_stream(length, body, respond).await;
        return;
    }
    if path == "/slow-head" {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    // The whole request body, releasing window as it is read.
    let mut received = Vec::new();
    while let Some(Ok(data)) = body.data().await {
        let _ = body.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
    }
    if let Ok(Some(trailers)) = body.trailers().await {
        seen.trailers.lock().expect("lock").push(trailers);
    }
    if let Some(n) = path
        .strip_prefix("/status/")
        .and_then(|n| n.parse::<u16>().ok())
    {
        let head = Response::builder().status(n).body(()).expect("response");
        let _ = respond.send_response(head, true);
        return;
    }
    let (length, text, trailers): (Option<usize>, Vec<u8>, bool) = match path.as_str() {
        p if p.starts_with("/bytes/") => {
            let n: usize = p["/bytes/".len()..].parse().unwrap_or(0);
            (None, (0..n).map(|i| b'a' + (i % 26) as u8).collect(), false)
        }
        "/echo" => (Some(received.len()), received.clone(), false),
        "/trailers" => (None, b"with trailers\n".to_vec(), true),
        _ => {
            let line = format!(
                "h2 {} {path} authority={authority} body={}\n",
                parts.method,
                received.len()
            );
            (Some(line.len()), line.into_bytes(), false)
        }
    };
    let mut head = Response::builder().status(200).header("x-origin", "h2");
    if let Some(n) = length {
        head = head.header("content-length", n);
    }
    let head_only = parts.method == http::Method::HEAD;
    let Ok(mut send) = respond.send_response(head.body(()).expect("response"), head_only) else {
        return;
    };
    if head_only {
        return;
    }
    // In pieces, honouring the client's flow control.
    let mut rest = Bytes::from(text);
    while !rest.is_empty() {
        send.reserve_capacity(rest.len().min(64 * 1024));
        let Some(Ok(room)) = std::future::poll_fn(|cx| send.poll_capacity(cx)).await else {
            return;
        };
        let piece = rest.split_to(room.min(rest.len()));
        if send.send_data(piece, false).is_err() {
            return;
        }
    }
    if trailers {
        let mut fields = HeaderMap::new();
        fields.insert("x-checksum", "abc123".parse().expect("value"));
        let _ = send.send_trailers(fields);
    } else {
        let _ = send.send_data(Bytes::new(), true);
    }
}

/// `/echo-stream`: each DATA goes back as it came. Its window is released
/// only once h2 took the echo, which it takes only as the client's window
/// allows: the client's reading paces the upload, nothing is buffered.
async fn echo_stream(
    length: Option<http::HeaderValue>,
    mut body: h2::RecvStream,
    mut respond: SendResponse<Bytes>,
) {
    let mut head = Response::builder().status(200).header("x-origin", "h2");
    if let Some(n) = length {
        head = head.header(http::header::CONTENT_LENGTH, n);
    }
    let Ok(mut send) = respond.send_response(head.body(()).expect("response"), false) else {
        return;
    };
    while let Some(Ok(mut data)) = body.data().await {
        let len = data.len();
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let Some(Ok(room)) = std::future::poll_fn(|cx| send.poll_capacity(cx)).await else {
                return;
            };
            let piece = data.split_to(room.min(data.len()));
            if send.send_data(piece, false).is_err() {
                return;
            }
        }
        let _ = body.flow_control().release_capacity(len);
    }
    let _ = send.send_data(Bytes::new(), true);
}

/// One HTTP/1.1 request: a WebSocket upgrade is answered 101 and what
/// follows echoed; anything else (a health probe) 200 and close.
async fn serve_http1<T>(mut io: T, seen: &H2Seen)
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match io.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    if text.contains("upgrade: websocket") {
        seen.tunnels.fetch_add(1, Ordering::SeqCst);
        let _ = io
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            if io.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
        return;
    }
    let _ = io
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhttp1\n")
        .await;
    let _ = io.shutdown().await;
}
