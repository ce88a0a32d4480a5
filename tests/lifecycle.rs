//! Process life in sp mode: graceful stop on SIGTERM/SIGINT (SPEC §4).

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Lb, backend_arg, wait_until};
use load_balancer::origin::{Origin, OriginConfig};

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let mut lb = Lb::start(&["-b", &backend_arg(&origin)]);
    let port = lb.port();
    let slow = thread::spawn(move || Client::connect(port).request("GET", "/delay/1500", &[], b""));
    // The slow request is in flight once the origin counts it as accepted.
    assert!(wait_until(Duration::from_secs(5), || origin.connections() == 1));
    let mut idle = Client::connect(port);
    assert_eq!(idle.request("GET", "/", &[], b"").status, 200);

    let stop_sent = Instant::now();
    lb.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(2), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "new connections are refused once the stop began"
    );
    assert!(
        !slow.is_finished(),
        "refused while the slow request was still in flight"
    );
    assert!(
        idle.is_closed(Duration::from_secs(2)),
        "idle keep-alive connections are closed"
    );
    let resp = slow.join().expect("slow client");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("Connection"), Some("close"));
    let status = lb
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert_eq!(status.code(), Some(0));
    assert!(
        stop_sent.elapsed() >= Duration::from_millis(1000),
        "it waited for the slow request"
    );
}

#[test]
fn second_sigint_stops_at_once() {
    let origin = Origin::start(OriginConfig::new("a")).expect("origin");
    let mut lb = Lb::start(&["-b", &backend_arg(&origin)]);
    let port = lb.port();
    let _slow =
        thread::spawn(move || Client::connect(port).try_request("GET", "/delay/20000", &[], b""));
    assert!(wait_until(Duration::from_secs(5), || origin.connections() == 1));
    lb.signal("INT");
    assert!(lb.wait_for_log("stopping", Duration::from_secs(5)));
    lb.signal("INT");
    let status = lb
        .wait_exit(Duration::from_secs(5))
        .expect("second signal stops now");
    assert_eq!(status.code(), Some(0));
}
