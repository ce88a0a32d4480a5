//! HTTPS backends (SPEC §7, HTTP/1.1 over TLS): certificate verification
//! against webpki-roots or `--ca-file`, `-k`, the reason a failed handshake
//! is logged with, SNI, the Host rule for TLS backends, pooled keep-alive
//! connections and resumed sessions, a backend's own `ca_file`, `sni` and
//! client certificate (config file), `--tls-trace`'s certificate details.
//! Certificates are made at test time.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::tls::{Ca, TlsOrigin};
use common::{Lb, get, run_lb};
use serde_json::{Value, json};

const LOG_WITHIN: Duration = Duration::from_secs(5);

/// A backend whose handshake fails: 502, or 503 once its first health probe
/// (over TLS too) has found it down (SPEC §5, §8).
fn refused(status: u16) -> bool {
    status == 502 || status == 503
}

/// A balancer in front of `origin` as `https://localhost:PORT`, trusting
/// `ca` through `--ca-file`.
fn trusting(ca: &Ca, origin: &TlsOrigin) -> Lb {
    let pem = ca.pem_file();
    Lb::start(&[
        "-b",
        &https(origin, "localhost"),
        "--ca-file",
        pem.to_str().expect("utf8"),
    ])
}

fn https(origin: &TlsOrigin, host: &str) -> String {
    format!("https://{host}:{}", origin.port())
}

/// A `-c` file listing `backends`.
fn config_file(backends: Value) -> PathBuf {
    common::scratch_file("lb.json", &json!({ "backends": backends }).to_string())
}

/// The config file entry for `origin` as `https://{host}`, with `extra` keys.
fn entry(origin: &TlsOrigin, host: &str, extra: Value) -> Value {
    let mut e = json!({"host": format!("https://{host}"), "port": origin.port()});
    if let (Some(e), Value::Object(extra)) = (e.as_object_mut(), extra) {
        e.extend(extra);
    }
    e
}

fn text(p: &std::path::Path) -> &str {
    p.to_str().expect("utf8 path")
}

#[test]
fn an_unknown_issuer_is_refused_and_the_log_says_so() {
    let ca = Ca::new();
    let origin = TlsOrigin::start(ca.leaf(&["localhost"], false), false);
    let lb = Lb::start(&["-b", &https(&origin, "localhost")]);
    let r = get(lb.port(), "/x");
    assert!(refused(r.status), "{}", r.status);
    assert!(
        lb.wait_for_log("certificate signed by an unknown issuer", LOG_WITHIN),
        "{:?}",
        lb.stderr_lines()
    );
    assert!(
        lb.stderr_lines()
            .iter()
            .any(|l| l.contains(&format!("localhost:{}", origin.port())))
    );
    assert_eq!(origin.requests(), 0);
}

#[test]
fn tls_trace_logs_version_cipher_alpn_and_resumption_and_no_alpn_means_http1() {
    let ca = Ca::new();
    let origin = TlsOrigin::start(ca.leaf(&["localhost"], false), false);
    let pem = ca.pem_file();
    let backend = https(&origin, "localhost");
    let lb = Lb::start(&[
        "-b",
        &backend,
        "--ca-file",
        pem.to_str().expect("utf8"),
        "--tls-trace",
    ]);
    assert_eq!(get(lb.port(), "/t").status, 200);
    let line = format!("tls localhost:{}: TLSv1.3, TLS13_", origin.port());
    assert!(
        lb.wait_for_log(&line, LOG_WITHIN),
        "{:?}",
        lb.stderr_lines()
    );
    // The peer certificate: subject, issuer, SANs and days until expiry
    // (rcgen's default notAfter).
    let cert = " handshake; peer certificate: subject CN=localhost; \
                issuer CN=load_balancer test CA; SAN DNS:localhost; expires 4096-01-01 (in ";
    let lines = lb.stderr_lines();
    let traced = lines.iter().find(|l| l.contains(cert));
    let days = traced
        .and_then(|l| l.split(cert).nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    // 4096-01-01 is 776,000 days from 1970; some of them have passed.
    assert!(
        days.is_some_and(|d| (700_000..776_000).contains(&d)),
        "{lines:?}"
    );
    assert!(
        traced.is_some_and(|l| l.ends_with("; chain of 1")),
        "{traced:?}"
    );
    // The test origin selects no protocol: HTTP/1.1 is spoken all the same.
    assert!(
        lb.wait_for_log("ALPN none", LOG_WITHIN),
        "{:?}",
        lb.stderr_lines()
    );
}

#[test]
fn with_k_any_certificate_is_accepted_after_a_loud_warning() {
    let ca = Ca::new();
    let origin = TlsOrigin::start(ca.leaf(&["localhost"], false), false);
    let lb = Lb::start(&["-b", &https(&origin, "localhost"), "-k"]);
    let r = get(lb.port(), "/k");
    assert_eq!(r.status, 200);
    assert!(r.body_str().starts_with("tls /k "), "{}", r.body_str());
    assert!(
        lb.wait_for_log("NOT verified", LOG_WITHIN),
        "{:?}",
        lb.stderr_lines()
    );
}

#[test]
fn ca_file_verifies_the_backend_which_sees_sni_and_its_own_host() {
    let ca = Ca::new();
    let origin = TlsOrigin::start(ca.leaf(&["localhost"], false), false);
    let pem = ca.pem_file();
    let backend = https(&origin, "localhost");
    let lb = Lb::start(&["-b", &backend, "--ca-file", pem.to_str().expect("utf8")]);
    let mut client = lb.client();
    for i in 0..5 {
        let r = client.request("GET", &format!("/n{i}"), &[("Host", "public.example")], b"");
        assert_eq!(r.status, 200, "{}", r.body_str());
        // A TLS backend gets its own name as Host (SPEC §5).
        assert_eq!(
            r.body_str(),
            format!("tls /n{i} host=localhost:{} body=0\n", origin.port())
        );
    }
    let r = client.request("POST", "/up", &[], b"0123456789");
    assert_eq!(
        r.body_str(),
        format!("tls /up host=localhost:{} body=10\n", origin.port())
    );
    assert_eq!(origin.sni(), [Some("localhost".to_string())]);
    assert_eq!(origin.handshakes(), 1, "one pooled keep-alive connection");
    assert_eq!(origin.requests(), 6);
}

#[test]
fn large_bodies_cross_a_tls_backend_whole_both_ways() {
    // More than the proxy's buffers hold at once each way: plaintext that
    // rustls keeps decrypted must be drained before waiting for an edge,
    // and records the socket could not take must leave on the next one.
    let ca = Ca::new();
    let origin = TlsOrigin::start(ca.leaf(&["localhost"], false), false);
    let lb = trusting(&ca, &origin);
    let mut client = lb.client();
    for n in [100_000usize, 3_000_000] {
        let r = client.request("GET", &format!("/bytes/{n}"), &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), n);
        assert!(
            r.body
                .iter()
                .enumerate()
                .all(|(i, &b)| b == b'a' + (i % 26) as u8)
        );
    }
    let upload = vec![b'x'; 5_000_000];
    for path in ["/up", "/slow-up"] {
        let r = client.request("POST", path, &[], &upload);
        let want = format!("tls {path} host=localhost:{} body=5000000\n", origin.port());
        assert_eq!(r.body_str(), want);
    }
    assert_eq!(origin.handshakes(), 1);
}

#[test]
fn an_ip_literal_backend_sends_no_sni_and_is_checked_against_its_ip() {
    let ca = Ca::new();
    let origin = TlsOrigin::start(ca.leaf(&["127.0.0.1"], false), false);
    let pem = ca.pem_file();
    let lb = Lb::start(&[
        "-b",
        &https(&origin, "127.0.0.1"),
        "--ca-file",
        pem.to_str().expect("utf8"),
        "--tls-trace",
    ]);
    assert_eq!(get(lb.port(), "/ip").status, 200);
    assert_eq!(origin.sni(), [None]);
    assert!(
        lb.wait_for_log(
            "subject CN=127.0.0.1; issuer CN=load_balancer test CA; SAN IP:127.0.0.1;",
            LOG_WITHIN
        ),
        "{:?}",
        lb.stderr_lines()
    );
}

#[test]
fn a_certificate_for_another_name_or_expired_is_refused_and_the_log_says_so() {
    let ca = Ca::new();
    for (names, expired, why) in [
        (["other.test"], false, "certificate not valid for"),
        (["localhost"], true, "certificate expired"),
    ] {
        let origin = TlsOrigin::start(ca.leaf(&names, expired), false);
        let lb = trusting(&ca, &origin);
        assert!(refused(get(lb.port(), "/").status), "{why}");
        assert!(lb.wait_for_log(why, LOG_WITHIN), "{:?}", lb.stderr_lines());
        assert_eq!(origin.requests(), 0);
    }
}

#[test]
fn new_connections_to_a_backend_resume_its_session() {
    let ca = Ca::new();
    // Every response closes its connection, so each request handshakes.
    let origin = TlsOrigin::start(ca.leaf(&["localhost"], false), true);
    let lb = trusting(&ca, &origin);
    let mut client = lb.client();
    for i in 0..4 {
        let r = client.request("GET", &format!("/r{i}"), &[], b"");
        assert_eq!(r.status, 200, "request {i}");
    }
    assert_eq!(origin.handshakes(), 4);
    // The health prober shares the worker's session cache: its handshake
    // may be the full one, and then every proxied one resumes.
    assert!(
        origin.resumed() >= 3,
        "{} of 4 handshakes resumed",
        origin.resumed()
    );
}

#[test]
fn an_unusable_ca_file_is_a_start_up_error_naming_it() {
    let bad = common::scratch_file("bad.pem", "not a certificate\n");
    let bad = bad.to_str().expect("utf8");
    let (code, _, err) = run_lb(
        &["-b", "https://127.0.0.1:9", "--ca-file", bad],
        Duration::from_secs(10),
    );
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--ca-file") && err.contains(bad), "{err}");
}

#[test]
fn probes_speak_tls_and_a_bad_certificate_takes_the_backend_out() {
    let ca = Ca::new();
    let good = TlsOrigin::start(ca.leaf(&["localhost"], false), false);
    let untrusted = TlsOrigin::start(Ca::named("someone else").leaf(&["localhost"], false), false);
    let pem = ca.pem_file();
    let lb = Lb::start(&[
        "-b",
        &https(&good, "localhost"),
        "-b",
        &https(&untrusted, "localhost"),
        "--ca-file",
        pem.to_str().expect("utf8"),
        "--health-interval-ms",
        "100",
    ]);
    assert!(
        lb.wait_for_log("certificate signed by an unknown issuer", LOG_WITHIN),
        "{:?}",
        lb.stderr_lines()
    );
    // The good backend answered its probes over TLS (a plain GET would
    // never have reached its HTTP parser).
    assert!(common::wait_until(LOG_WITHIN, || good.probes() >= 2));
    for i in 0..6 {
        let r = get(lb.port(), &format!("/p{i}"));
        assert_eq!(
            r.status, 200,
            "request {i}: the bad backend is out of rotation"
        );
    }
    assert_eq!(untrusted.requests(), 0);
}

#[test]
fn a_backends_own_ca_file_replaces_the_global_trust() {
    let internal_ca = Ca::named("internal CA");
    let public_ca = Ca::named("public CA");
    let internal = TlsOrigin::start(internal_ca.leaf(&["localhost"], false), false);
    let public = TlsOrigin::start(public_ca.leaf(&["localhost"], false), false);
    let (internal_pem, public_pem) = (internal_ca.pem_file(), public_ca.pem_file());
    // The internal backend is trusted through its own ca_file alone (the
    // global trust does not have its CA); the other through --ca-file.
    let config = config_file(json!([
        entry(&internal, "localhost", json!({"ca_file": internal_pem})),
        entry(&public, "localhost", json!({})),
    ]));
    let lb = Lb::start(&["-c", text(&config), "--ca-file", text(&public_pem)]);
    for i in 0..4 {
        let r = get(lb.port(), &format!("/o{i}"));
        assert_eq!(r.status, 200, "request {i}: {:?}", lb.stderr_lines());
    }
    assert!(internal.requests() >= 1 && public.requests() >= 1);
    assert_eq!(internal.requests() + public.requests(), 4);
    drop(lb);
    // Replaces, not adds: with the internal CA as its ca_file, a backend
    // refuses a certificate that --ca-file would trust.
    let before = public.requests();
    let config = config_file(json!([entry(
        &public,
        "localhost",
        json!({"ca_file": internal_pem})
    )]));
    let lb = Lb::start(&["-c", text(&config), "--ca-file", text(&public_pem)]);
    assert!(refused(get(lb.port(), "/x").status));
    assert!(
        lb.wait_for_log("certificate signed by an unknown issuer", LOG_WITHIN),
        "{:?}",
        lb.stderr_lines()
    );
    assert_eq!(public.requests(), before);
}

#[test]
fn sni_is_the_name_sent_and_verified_instead_of_the_host() {
    let ca = Ca::new();
    let origin = TlsOrigin::start(ca.leaf(&["api.internal"], false), false);
    let pem = ca.pem_file();
    let start = |sni: &str| {
        let config = config_file(json!([entry(&origin, "127.0.0.1", json!({"sni": sni}))]));
        Lb::start(&["-c", text(&config), "--ca-file", text(&pem)])
    };
    // An IP-literal host with sni set sends that name.
    let lb = start("api.internal");
    let r = get(lb.port(), "/s");
    assert_eq!(r.status, 200, "{:?}", lb.stderr_lines());
    // Host follows host_header, not sni: the backend's own host:port.
    assert_eq!(
        r.body_str(),
        format!("tls /s host=127.0.0.1:{} body=0\n", origin.port())
    );
    assert_eq!(origin.sni(), [Some("api.internal".to_string())]);
    drop(lb);
    // The certificate is checked against the sni, not against the IP.
    let lb = start("other.internal");
    assert!(refused(get(lb.port(), "/s").status));
    assert!(
        lb.wait_for_log("certificate not valid for name other.internal", LOG_WITHIN),
        "{:?}",
        lb.stderr_lines()
    );
    assert_eq!(origin.requests(), 1);
}

#[test]
fn mutual_tls_presents_the_client_certificate_and_says_why_a_backend_refused() {
    let server_ca = Ca::new();
    let client_ca = Ca::named("client CA");
    let origin =
        TlsOrigin::requiring_client_cert(server_ca.leaf(&["localhost"], false), &client_ca);
    let (cert, key) = client_ca.leaf(&["lb.client"], false).pem_files();
    let (stranger_cert, stranger_key) = Ca::named("stranger CA")
        .leaf(&["lb.client"], false)
        .pem_files();
    let pem = server_ca.pem_file();
    let start = |options: Value| {
        let config = config_file(json!([entry(&origin, "localhost", options)]));
        Lb::start(&["-c", text(&config), "--ca-file", text(&pem)])
    };
    let lb = start(json!({"client_cert": cert, "client_key": key}));
    let r = get(lb.port(), "/m");
    assert_eq!(r.status, 200, "{:?}", lb.stderr_lines());
    assert_eq!(origin.client_certs(), 1, "the origin saw our certificate");
    drop(lb);
    for (options, why) in [
        (json!({}), "the backend requires a client certificate"),
        (
            json!({"client_cert": stranger_cert, "client_key": stranger_key}),
            "the backend rejected the client certificate",
        ),
    ] {
        let lb = start(options);
        assert!(refused(get(lb.port(), "/m").status), "{why}");
        // Said by the proxied request's line, not only by the probe's.
        let proxied = |line: &String| line.contains(why) && !line.contains("probe");
        let said = common::wait_until(LOG_WITHIN, || lb.stderr_lines().iter().any(proxied));
        assert!(said, "{why}: {:?}", lb.stderr_lines());
    }
    assert_eq!(origin.requests(), 1);
}

#[test]
fn bad_backend_tls_keys_are_start_up_errors_naming_the_backend_and_file() {
    let ca = Ca::new();
    let leaf = ca.leaf(&["client.test"], false);
    let (cert, key) = leaf.pem_files();
    let (_, other_key) = ca.leaf(&["other.test"], false).pem_files();
    let junk = common::scratch_file("junk.pem", "not a certificate\n");
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such.pem");
    let plain = json!({"host": "127.0.0.1", "port": 9});
    let tls = |extra: Value| {
        let mut e = json!({"host": "https://127.0.0.1", "port": 9443});
        if let (Some(e), Value::Object(extra)) = (e.as_object_mut(), extra) {
            e.extend(extra);
        }
        e
    };
    let cases = [
        (
            tls(json!({"ca_file": missing})),
            format!(
                "ca_file {}: cannot read: No such file or directory",
                missing.display()
            ),
        ),
        (
            tls(json!({"ca_file": junk})),
            format!("ca_file {}: no PEM certificate in it", junk.display()),
        ),
        (
            tls(json!({"client_cert": cert})),
            "client_cert needs client_key".to_string(),
        ),
        (
            tls(json!({"client_cert": cert, "client_key": other_key})),
            format!(
                "client_key {} is not the key of client_cert {}",
                other_key.display(),
                cert.display()
            ),
        ),
        (
            tls(json!({"client_cert": cert, "client_key": cert})),
            format!("client_key {}: no private key in it", cert.display()),
        ),
        (
            tls(json!({"client_cert": key, "client_key": key})),
            format!("client_cert {}: no PEM certificate in it", key.display()),
        ),
        (
            json!({"host": "127.0.0.1", "port": 80, "ca_file": junk}),
            "ca_file needs a TLS backend (https:// or port 443)".to_string(),
        ),
    ];
    for (backend, want) in cases {
        let config = config_file(json!([plain, backend]));
        let (code, _, err) = run_lb(&["-c", text(&config)], Duration::from_secs(10));
        let want = format!(
            "load_balancer: config {}: backends[1]: {want}",
            config.display()
        );
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with(&want), "gave: {err}\nwant: {want}");
    }
}

/// The one test of the suite that binds port 443: no other may (it would
/// find the port taken, or take it from this one). Where 443 cannot be
/// bound (not root, say), it says so and passes.
#[test]
fn port_443_means_tls_without_https() {
    let ca = Ca::new();
    let origin = match TlsOrigin::start_on(ca.leaf(&["localhost"], false), 443) {
        Ok(origin) => origin,
        Err(e) => {
            eprintln!("skipped: cannot bind 127.0.0.1:443 ({e})");
            return;
        }
    };
    let pem = ca.pem_file();
    let lb = Lb::start(&["-b", "localhost:443", "--ca-file", text(&pem)]);
    let r = get(lb.port(), "/over-443");
    assert_eq!(r.status, 200, "{} {:#?}", r.body_str(), lb.stderr_lines());
    // The backend's name as Host, its default port left out.
    assert_eq!(r.body_str(), "tls /over-443 host=localhost body=0\n");
    assert!(origin.handshakes() >= 1, "{}", origin.handshakes());
    assert_eq!(origin.sni(), [Some("localhost".to_string())]);
}
