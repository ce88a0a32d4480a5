//! Bodies through an h2 backend: whole both ways, flow control holding a
//! slow client to one stream window, and 50 MiB each way with the
//! balancer's memory flat.

use super::*;

#[test]
fn bodies_cross_whole_both_ways_with_flow_control() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let mut client = Client::connect(lb.port());
    // 3 MiB request body with a length: far past every h2 window.
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let r = client.request("POST", "/echo", &[], &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("3145728"));
    assert!(r.body == body, "echoed body differs");
    // Chunked request body: sent as DATA, length known only at the end.
    let chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let r = client.request(
        "POST",
        "/other",
        &[("Transfer-Encoding", "chunked")],
        chunked,
    );
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("body=11\n"), "{}", r.body_str());
    // Its trailers end the stream as a HEADERS frame; framing ones do not
    // travel.
    let with_trailers = b"5\r\nhello\r\n0\r\nX-Sum: abc\r\nContent-Length: 9\r\n\r\n";
    let r = client.request(
        "POST",
        "/other",
        &[("Transfer-Encoding", "chunked")],
        with_trailers,
    );
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("body=5\n"), "{}", r.body_str());
    let trailers = origin.trailers().pop().expect("the request's trailers");
    assert_eq!(
        trailers.get("x-sum").map(|v| v.to_str().unwrap()),
        Some("abc")
    );
    assert_eq!(trailers.len(), 1, "{trailers:?}");
    // 5 MiB response without a length: chunked to the client.
    let r = client.request("GET", "/bytes/5242880", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.body.len(), 5 << 20);
    assert!(
        r.body
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8)
    );
}

#[test]
fn a_client_that_stops_reading_holds_one_stream_window_not_the_body() {
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    assert_eq!(
        Client::connect(lb.port())
            .request("GET", "/bytes/1000000", &[], b"")
            .status,
        200
    );
    let baseline = lb.rss_kb();
    // 64 MiB asked for, then nothing read: only what the windows let the
    // backend send may pile up (the socket buffers, a 256 KiB stream window).
    let mut client = Client::connect(lb.port());
    client
        .send_request("GET", "/bytes/67108864", &[], b"")
        .expect("send");
    let mut peak = baseline;
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_millis(1500) {
        peak = peak.max(lb.rss_kb());
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("RSS baseline {baseline} kB, peak while stalled {peak} kB");
    assert!(peak < baseline + 16 * 1024, "{baseline} -> {peak} kB");
    // Reading on gets the whole body.
    let r = client.read_response(false);
    assert_eq!(r.body.len(), 64 << 20);
}

#[test]
fn fifty_mib_up_and_down_through_h2_leave_the_balancers_rss_flat() {
    // 50 MiB posted to an origin that echoes each DATA as it arrives: the
    // upload and the echo cross the balancer at once. The client stops
    // reading for a while on the way: with the windows the bound, that
    // stops the echo, hence the origin's reading, hence the upload; the
    // balancer's RSS stays near its baseline, far below the body.
    const PIECE: usize = 1 << 20;
    let ca = Ca::new();
    let origin = origin(&ca, 100);
    let lb = balancer(&ca, &origin, &[]);
    let warm: Vec<u8> = (0..PIECE).map(pattern).collect();
    let r = Client::connect(lb.port()).request("POST", "/echo-stream", &[], &warm);
    assert_eq!(r.status, 200);
    assert!(r.body == warm, "the warm-up echo differs");
    let baseline = lb.rss_kb();
    assert!(baseline > 0, "RSS readable");

    let stop = AtomicBool::new(false);
    let (peak, elapsed) = thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(lb.rss_kb());
                thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        let elapsed = echo_fifty_mib(&lb);
        stop.store(true, Ordering::SeqCst);
        (sampler.join().expect("sampler"), elapsed)
    });
    eprintln!("50 MiB each way in {elapsed:?}; RSS baseline {baseline} kB, peak {peak} kB");
    assert!(peak < baseline + 16 * 1024, "{baseline} -> {peak} kB");
    assert_eq!(origin.h2_connections(), 1);
}

/// Posts `SIZE` bytes of `pattern` to `/echo-stream` while reading the
/// echo (stopping once for 500 ms at 8 MiB) and checks it byte by byte.
fn echo_fifty_mib(lb: &Lb) -> Duration {
    const SIZE: usize = 50 << 20;
    const PIECE: usize = 1 << 20;
    let started = Instant::now();
    let down = TcpStream::connect(lb.addr()).expect("connect");
    down.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut up = down.try_clone().expect("clone");
    let uploader = thread::spawn(move || -> std::io::Result<()> {
        let head = format!(
            "POST /echo-stream HTTP/1.1\r\nHost: localhost\r\nContent-Length: {SIZE}\r\n\r\n"
        );
        up.write_all(head.as_bytes())?;
        let mut piece = vec![0u8; PIECE];
        for at in (0..SIZE).step_by(PIECE) {
            for (i, b) in piece.iter_mut().enumerate() {
                *b = pattern(at + i);
            }
            up.write_all(&piece)?;
        }
        Ok(())
    });
    let mut reader = BufReader::new(down);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        assert!(reader.read_line(&mut head).expect("head") > 0, "{head}");
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {SIZE}\r\n")),
        "{head}"
    );
    let mut buf = vec![0u8; 64 * 1024];
    let (mut got, mut stalled) = (0, false);
    while got < SIZE {
        if !stalled && got >= 8 << 20 {
            // Everything upstream must stop, not pile up in the balancer.
            stalled = true;
            thread::sleep(Duration::from_millis(500));
        }
        let want = buf.len().min(SIZE - got);
        let n = reader.read(&mut buf[..want]).expect("echo");
        assert!(n > 0, "echo cut at {got}");
        if let Some(bad) = (0..n).find(|&i| buf[i] != pattern(got + i)) {
            panic!("echo differs at byte {}", got + bad);
        }
        got += n;
    }
    uploader.join().expect("uploader").expect("upload");
    started.elapsed()
}
