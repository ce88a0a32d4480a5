//! Differential test of the proxy's framing (issue 11, SPEC §5): a few
//! hundred malformed and borderline requests and responses go through the
//! balancer to a raw origin that records exactly what it received. Each case
//! must either be refused (4xx and close, nothing complete reaching the
//! origin) or reach the other side as a message that any strict reader reads
//! one way: one framing header, canonical chunk lines, valid trailers, the
//! body the sender meant, origin-form target, and not one request more than
//! the client sent. Every failing case is listed, grouped by cause.

mod common;
#[path = "common/diff_cases.rs"]
mod diff_cases;
#[path = "common/diff_cases_head.rs"]
mod diff_cases_head;
#[path = "common/diff_responses.rs"]
mod diff_responses;
#[path = "common/raw.rs"]
mod raw;
#[path = "common/strict.rs"]
mod strict;

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::Lb;
use diff_cases::{Case, Expect};
use diff_responses::{RespCase, Want, response_cases};
use raw::{ConnReport, PROBE_PATH, REJECTED_STATUS, RawOrigin, Step};
use strict::{Kind, Message, Parsed, show};

/// Loopback answers take microseconds; this only bounds a proxy that hangs.
const ANSWER_WAIT: Duration = Duration::from_millis(1000);
/// How long a refused connection may stay open after the refusal.
const CLOSE_WAIT: Duration = Duration::from_millis(1000);
/// How long the origin waits for the proxy to close a half-sent request.
const EOF_WAIT: Duration = Duration::from_millis(500);
const SHARDS: usize = 4;
const MARKER_PATH: &str = "/__marker";
const MARKER: &[u8] = b"GET /__marker HTTP/1.1\r\nHost: a.test\r\n\r\n";

/// One balancer in front of one raw origin.
struct Shard {
    origin: RawOrigin,
    lb: Lb,
}

impl Shard {
    fn start(scripts: Vec<Vec<Step>>) -> Shard {
        let origin = RawOrigin::start(scripts).expect("raw origin starts");
        let backend = origin.addr().to_string();
        let lb = Lb::start(&[
            "-b",
            &backend,
            "--health-path",
            PROBE_PATH,
            "--health-interval-ms",
            "600000",
        ]);
        Shard { origin, lb }
    }
}

/// The client side of one case.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

enum Got {
    Message(Message),
    /// Closed; the bytes that came first (a prefix of a valid message).
    Closed(Vec<u8>),
    Malformed(String),
    Timeout(Vec<u8>),
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect_timeout(&addr, common::IO_TIMEOUT).expect("connect");
        let _ = stream.set_write_timeout(Some(common::IO_TIMEOUT));
        Peer {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    /// Errors are ignored: a proxy that refuses may close before all is read.
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads once; false when `deadline` passed first.
    fn fill(&mut self, deadline: Instant) -> bool {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => self.eof = true,
        }
        true
    }

    fn message(&mut self, head_request: bool, deadline: Instant) -> Got {
        loop {
            match strict::parse(&self.buf, Kind::Response { head_request }, self.eof) {
                Parsed::Complete(m) => {
                    self.buf.drain(..m.len);
                    return Got::Message(m);
                }
                Parsed::Malformed(e) => return Got::Malformed(e),
                Parsed::Partial if self.eof => return Got::Closed(std::mem::take(&mut self.buf)),
                Parsed::Partial => {}
            }
            if !self.fill(deadline) {
                return Got::Timeout(self.buf.clone());
            }
        }
    }

    /// Bytes until the peer closes; `None` if it stays open.
    fn until_close(&mut self, deadline: Instant) -> Option<Vec<u8>> {
        while !self.eof {
            if !self.fill(deadline) {
                return None;
            }
        }
        Some(std::mem::take(&mut self.buf))
    }
}

/// A problem with a case: a short cause (for grouping) and the details.
struct Problem {
    cause: String,
    detail: String,
}

fn problem(cause: &str, detail: impl Into<String>) -> Problem {
    Problem {
        cause: cause.to_string(),
        detail: detail.into(),
    }
}

/// What the client saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Refused,
    Forwarded,
    /// Forwarded, and the origin's strict reader refused it.
    OriginRejected,
    Unclear,
}

fn run_request_case(shard: &Shard, case: &Case) -> Vec<Problem> {
    shard.origin.begin();
    let mut p = Vec::new();
    let mut peer = Peer::connect(shard.lb.addr());
    if case.trickle {
        let _ = peer.stream.set_nodelay(true);
        for byte in case.bytes.chunks(1) {
            peer.send(byte);
        }
    } else {
        peer.send(&case.bytes);
    }
    if case.client_eof {
        let _ = peer.stream.shutdown(Shutdown::Write);
    }
    let seen = match peer.message(case.head, Instant::now() + ANSWER_WAIT) {
        Got::Message(m) if (400..500).contains(&m.status()) => {
            check_closed_after(&mut peer, &m, case.head, &mut p);
            Seen::Refused
        }
        // The origin's strict reader refused what it got (details below).
        Got::Message(m) if m.status() == REJECTED_STATUS => Seen::OriginRejected,
        Got::Message(m) if m.status() == 200 => {
            if case.keep_alive {
                peer.send(MARKER);
                match peer.message(false, Instant::now() + ANSWER_WAIT) {
                    Got::Message(m) if m.status() == 200 => {}
                    other => p.push(problem(
                        "marker after a forwarded request failed",
                        describe(&other),
                    )),
                }
            }
            Seen::Forwarded
        }
        Got::Message(m) => {
            p.push(problem(&format!("answered {}", m.status()), m.summary()));
            Seen::Unclear
        }
        Got::Closed(bytes) if bytes.is_empty() && case.client_eof => Seen::Refused,
        other => {
            let d = describe(&other);
            p.push(problem(d.split(':').next().unwrap_or_default(), d.clone()));
            Seen::Unclear
        }
    };
    match (case.expect, &seen) {
        (Expect::Refuse, Seen::Forwarded | Seen::OriginRejected) => {
            p.push(problem("forwarded; SPEC §5 refuses", ""));
        }
        (Expect::Forward, Seen::Refused) => {
            p.push(problem("refused; SPEC §5 forwards", ""));
        }
        _ => {}
    }
    let reports = shard.origin.finish(EOF_WAIT);
    drop(peer);
    check_origin(case, &seen, &reports, &mut p);
    if !p.is_empty() {
        // Nothing a failed case left in the proxy's pool may reach the next.
        shard.origin.reset(CLOSE_WAIT);
    }
    p
}

fn describe(got: &Got) -> String {
    match got {
        Got::Message(m) => format!("answered {}: {}", m.status(), m.summary()),
        Got::Closed(b) if b.is_empty() => "closed without an answer".into(),
        Got::Closed(b) => format!("closed mid-answer: after {:?}", show(b)),
        Got::Malformed(e) => format!("answer not strict HTTP: {e}"),
        Got::Timeout(b) if b.is_empty() => "no answer in time: nothing".into(),
        Got::Timeout(b) => format!("no complete answer in time: after {:?}", show(b)),
    }
}

/// After a refusal: no body for HEAD, nothing else, then a close.
fn check_closed_after(peer: &mut Peer, m: &Message, head: bool, p: &mut Vec<Problem>) {
    if head && !m.body.is_empty() {
        p.push(problem("the answer to HEAD carries a body", show(&m.body)));
    }
    match peer.until_close(Instant::now() + CLOSE_WAIT) {
        None => p.push(problem(
            "connection left open after a 4xx",
            format!("{}", m.status()),
        )),
        Some(rest) if rest.is_empty() => {}
        Some(rest) if head => p.push(problem("the answer to HEAD carries a body", show(&rest))),
        Some(rest) => p.push(problem("bytes after the 4xx", show(&rest))),
    }
}

fn check_origin(case: &Case, seen: &Seen, reports: &[ConnReport], p: &mut Vec<Problem>) {
    let mut requests = Vec::new();
    let mut markers = 0;
    for r in reports {
        if let Some(e) = &r.error {
            p.push(problem(
                "origin's strict reader refused what the proxy sent",
                format!("{e}; origin got {:?}", show(&r.received)),
            ));
        }
        if r.pending > 0 && !r.closed && r.error.is_none() {
            p.push(problem(
                "origin left with half a request on an open connection",
                show(&r.received),
            ));
        }
        for m in &r.requests {
            // Exactly the marker: bytes of the case before it would turn
            // its method into something else.
            if m.method() == "GET" && m.target() == MARKER_PATH && m.body.is_empty() {
                markers += 1;
            } else {
                requests.push(m);
            }
        }
    }
    let summaries = || {
        requests
            .iter()
            .map(|m| m.summary())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    match seen {
        Seen::Refused if !requests.is_empty() => p.push(problem(
            "origin got a complete request although the client was refused",
            summaries(),
        )),
        Seen::Refused if !case.mid_body && !reports.is_empty() => p.push(problem(
            "origin got bytes of a request refused for its head",
            show(&reports[0].received),
        )),
        Seen::Refused => {}
        _ if requests.len() > 1 => p.push(problem(
            "origin got more requests than the client sent",
            summaries(),
        )),
        Seen::Forwarded if requests.is_empty() => {
            p.push(problem("answered 200 but the origin got no request", ""));
        }
        Seen::Forwarded | Seen::OriginRejected | Seen::Unclear => {}
    }
    if *seen == Seen::Forwarded && case.keep_alive && markers != 1 {
        p.push(problem(
            "origin did not get exactly one marker",
            format!("{markers}"),
        ));
    }
    if let Some(m) = requests.first() {
        check_forwarded(case, m, p);
    }
}

/// The forwarded request reads one way and says what the client meant.
fn check_forwarded(case: &Case, m: &Message, p: &mut Vec<Problem>) {
    for v in &m.violations {
        p.push(problem("forwarded head not normalised", v.clone()));
    }
    let target = m.target();
    let origin_form = target.starts_with('/') || (m.method() == "OPTIONS" && target == "*");
    if !origin_form {
        p.push(problem(
            "forwarded target not in origin-form",
            target.to_string(),
        ));
    } else if !case.targets.is_empty() && !case.targets.iter().any(|t| t == target) {
        p.push(problem(
            "forwarded target differs",
            format!("{target:?}, meant {:?}", case.targets),
        ));
    }
    if let Some(host) = &case.host {
        let got: Vec<String> = m.all("host").iter().map(|h| show(h)).collect();
        if got.len() != 1 || !got[0].eq_ignore_ascii_case(host) {
            p.push(problem(
                "forwarded Host differs",
                format!("{got:?}, meant {host:?}"),
            ));
        }
    }
    if m.body != case.body {
        p.push(problem(
            "forwarded body differs",
            format!("{:?}, meant {:?}", show(&m.body), show(&case.body)),
        ));
    }
    for (name, value) in &m.trailers {
        let allowed = case
            .trailers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.as_bytes() == value.as_slice());
        if !allowed {
            p.push(problem(
                "forwarded a trailer it should not",
                format!("{name}: {}", show(value)),
            ));
        }
    }
}

/// Runs `cases` over `SHARDS` balancer+origin pairs; returns the failures
/// as (case index, problems).
fn run_sharded<C: Sync>(
    cases: &[C],
    scripts: impl Fn() -> Vec<Vec<Step>> + Sync,
    run: impl Fn(&Shard, usize, &C) -> Vec<Problem> + Sync,
) -> Vec<(usize, Vec<Problem>)> {
    let mut failures: Vec<(usize, Vec<Problem>)> = thread::scope(|s| {
        let handles: Vec<_> = (0..SHARDS)
            .map(|k| {
                let (scripts, run) = (&scripts, &run);
                s.spawn(move || {
                    let shard = Shard::start(scripts());
                    (k..cases.len())
                        .step_by(SHARDS)
                        .map(|i| (i, run(&shard, i, &cases[i])))
                        .filter(|(_, p)| !p.is_empty())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("shard thread"))
            .collect()
    });
    failures.sort_by_key(|(i, _)| *i);
    failures
}

/// Panics with every failing case, grouped by the cause of its first
/// problem, if any failed.
fn report(what: &str, total: usize, failures: Vec<(String, Vec<Problem>)>) {
    if failures.is_empty() {
        return;
    }
    let mut by_cause: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, problems) in &failures {
        let details: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}{}",
                    p.cause,
                    if p.detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.detail)
                    }
                )
            })
            .collect();
        by_cause
            .entry(problems[0].cause.clone())
            .or_default()
            .push(format!("    {name} — {}", details.join("; ")));
    }
    let mut text = format!("{} of {total} {what} cases failed:\n", failures.len());
    for (cause, lines) in by_cause {
        text.push_str(&format!("  [{}] {cause}\n", lines.len()));
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
    }
    panic!("{text}");
}

/// `DIFFERENTIAL_CASE=<text>` runs only the cases whose name contains it
/// (to debug one).
fn filtered() -> bool {
    std::env::var_os("DIFFERENTIAL_CASE").is_some()
}

fn only<C>(cases: Vec<C>, name: impl Fn(&C) -> &String) -> Vec<C> {
    match std::env::var("DIFFERENTIAL_CASE") {
        Ok(part) => cases
            .into_iter()
            .filter(|c| name(c).contains(&part))
            .collect(),
        Err(_) => cases,
    }
}

#[test]
fn malformed_and_borderline_requests_are_refused_or_forwarded_unambiguously() {
    let cases = only(diff_cases::all(), |c| &c.name);
    assert!(
        cases.len() >= 300 || filtered(),
        "only {} cases",
        cases.len()
    );
    let failures = run_sharded(&cases, Vec::new, |shard, _, case| {
        run_request_case(shard, case)
    });
    let named = failures
        .into_iter()
        .map(|(i, p)| (format!("#{i} [{}] {}", cases[i].group, cases[i].name), p))
        .collect();
    report("request", cases.len(), named);
}

fn run_response_case(shard: &Shard, index: usize, case: &RespCase) -> Vec<Problem> {
    shard.origin.begin();
    let mut p = Vec::new();
    let mut peer = Peer::connect(shard.lb.addr());
    let method = if case.head { "HEAD" } else { "GET" };
    peer.send(format!("{method} /r/{index} HTTP/1.1\r\nHost: a.test\r\n\r\n").as_bytes());
    if let Want::CutAfter = case.want {
        let deadline = Instant::now() + ANSWER_WAIT;
        let relayed = loop {
            if peer.buf.windows(3).any(|w| w == b"abc") {
                break true;
            }
            if peer.eof || !peer.fill(deadline) {
                break false;
            }
        };
        shard.origin.release();
        match peer.message(false, Instant::now() + ANSWER_WAIT) {
            Got::Closed(_) if relayed => {}
            Got::Message(m) if m.status() == 502 && !relayed => {}
            other => p.push(problem(
                "malformed chunk after relayed bytes: connection not cut",
                describe(&other),
            )),
        }
    } else {
        let got = peer.message(case.head, Instant::now() + ANSWER_WAIT);
        match (&case.want, got) {
            (Want::BadGateway | Want::BadGatewayOrCut | Want::Either { .. }, Got::Message(m))
                if m.status() == 502 =>
            {
                if case.head && !m.body.is_empty() {
                    p.push(problem("the answer to HEAD carries a body", show(&m.body)));
                }
            }
            (Want::BadGateway, other) => {
                p.push(problem(
                    "malformed response not answered 502",
                    describe(&other),
                ));
            }
            (Want::Either { .. } | Want::BadGatewayOrCut, Got::Closed(b)) if !b.is_empty() => {}
            (Want::BadGatewayOrCut, other) => {
                p.push(problem(
                    "malformed response neither 502 nor cut",
                    describe(&other),
                ));
            }
            (Want::Relay { .. } | Want::Either { .. }, Got::Message(m)) if m.status() == 200 => {
                check_relayed(&case.want, &m, &mut p);
                if let Want::Relay { marker: true, .. } = case.want {
                    peer.send(MARKER);
                    match peer.message(false, Instant::now() + ANSWER_WAIT) {
                        Got::Message(m) if m.status() == 200 => {}
                        other => p.push(problem(
                            "marker after a relayed response failed",
                            describe(&other),
                        )),
                    }
                }
            }
            (_, other) => {
                let d = describe(&other);
                p.push(problem(
                    &format!(
                        "response not relayed strictly ({})",
                        d.split(':').next().unwrap_or_default()
                    ),
                    d.clone(),
                ));
            }
        }
    }
    let _ = shard.origin.finish(Duration::ZERO);
    if !p.is_empty() {
        shard.origin.reset(CLOSE_WAIT);
    }
    p
}

fn check_relayed(want: &Want, m: &Message, p: &mut Vec<Problem>) {
    let (body, trailers) = match want {
        Want::Relay { body, trailers, .. } => (body, trailers.clone()),
        Want::Either { body } => (body, Vec::new()),
        _ => return,
    };
    for v in &m.violations {
        p.push(problem("relayed head not normalised", v.clone()));
    }
    if &m.body != body {
        p.push(problem(
            "relayed body differs",
            format!("{:?}, meant {:?}", show(&m.body), show(body)),
        ));
    }
    for (name, value) in &m.trailers {
        let allowed = trailers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.as_bytes() == value.as_slice());
        if !allowed {
            p.push(problem(
                "relayed a trailer it should not",
                format!("{name}: {}", show(value)),
            ));
        }
    }
}

#[test]
fn odd_responses_are_refused_or_relayed_unambiguously() {
    let cases = only(response_cases(), |c| &c.name);
    let scripts = || cases.iter().map(|c| c.script.clone()).collect();
    let failures = run_sharded(&cases, scripts, run_response_case);
    let named = failures
        .into_iter()
        .map(|(i, p)| (format!("#{i} {}", cases[i].name), p))
        .collect();
    report("response", cases.len(), named);
}
