//! A TLS test origin and the certificates it needs, made at test time:
//! a CA (rcgen), leaves signed by it for any names, expired or not, and a
//! blocking rustls server that records what each handshake looked like
//! (SNI, full or resumed, client certificate), may require a client
//! certificate of a given CA, and answers every request with its path and
//! Host. Test-only.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{HandshakeKind, RootCertStore, ServerConfig, ServerConnection, StreamOwned};

/// A certificate authority for one test.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
}

impl Ca {
    pub fn new() -> Ca {
        Ca::named("load_balancer test CA")
    }

    /// A CA with its own name: two CAs of one name look like one issuer to
    /// a verifier (a bad signature rather than an unknown issuer).
    pub fn named(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Ca {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// The CA certificate as a PEM file, for `--ca-file`.
    pub fn pem_file(&self) -> PathBuf {
        super::scratch_file("ca.pem", &self.pem)
    }

    /// A leaf certificate for `names` (DNS names or IP literals; the first
    /// is also its CN) and its key; `expired` puts its validity in the past.
    pub fn leaf(&self, names: &[&str], expired: bool) -> Leaf {
        let owned: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(owned).expect("leaf params");
        if let Some(first) = names.first() {
            params.distinguished_name = rcgen::DistinguishedName::new();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, *first);
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        Leaf {
            chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    cert_pem: String,
    key_pem: String,
}

impl Leaf {
    /// The certificate and its key as PEM files, for `client_cert` and
    /// `client_key`.
    pub fn pem_files(&self) -> (PathBuf, PathBuf) {
        (
            super::scratch_file("cert.pem", &self.cert_pem),
            super::scratch_file("key.pem", &self.key_pem),
        )
    }
}

/// What the origin saw.
#[derive(Default)]
pub struct Seen {
    pub handshakes: AtomicUsize,
    pub resumed: AtomicUsize,
    pub requests: AtomicUsize,
    /// Health probes (told apart by their User-Agent), not in the others.
    pub probes: AtomicUsize,
    pub sni: Mutex<Vec<Option<String>>>,
    /// Counted connections on which the client presented a certificate.
    pub client_certs: AtomicUsize,
}

pub struct TlsOrigin {
    addr: SocketAddr,
    pub seen: Arc<Seen>,
}

impl TlsOrigin {
    /// Serves on 127.0.0.1 with `leaf`. With `close_each`, every response
    /// says `Connection: close` (each request then needs a new connection).
    pub fn start(leaf: Leaf, close_each: bool) -> TlsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        TlsOrigin::serve_with(listener, leaf, close_each, None)
    }

    /// As `start`, on 127.0.0.1:`port` (e.g. 443, which a test without the
    /// privilege to bind it skips: hence the error, not a panic).
    pub fn start_on(leaf: Leaf, port: u16) -> io::Result<TlsOrigin> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        Ok(TlsOrigin::serve_with(listener, leaf, false, None))
    }

    /// As `start`, but the handshake requires a client certificate issued
    /// by `client_ca` (mutual TLS).
    pub fn requiring_client_cert(leaf: Leaf, client_ca: &Ca) -> TlsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        TlsOrigin::serve_with(listener, leaf, false, Some(client_ca))
    }

    fn serve_with(
        listener: TcpListener,
        leaf: Leaf,
        close_each: bool,
        client_ca: Option<&Ca>,
    ) -> TlsOrigin {
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("protocol versions");
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                roots.add(ca.der.clone()).expect("client CA");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .expect("client verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let config = builder
            .with_single_cert(leaf.chain, leaf.key)
            .expect("server certificate");
        let config = Arc::new(config);
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let shared = Arc::clone(&seen);
        thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, seen) = (Arc::clone(&config), Arc::clone(&shared));
                thread::spawn(move || {
                    let _ = serve(tcp, config, &seen, close_each);
                });
            }
        });
        TlsOrigin { addr, seen }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn handshakes(&self) -> usize {
        self.seen.handshakes.load(Ordering::SeqCst)
    }

    pub fn resumed(&self) -> usize {
        self.seen.resumed.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> usize {
        self.seen.requests.load(Ordering::SeqCst)
    }

    pub fn probes(&self) -> usize {
        self.seen.probes.load(Ordering::SeqCst)
    }

    pub fn client_certs(&self) -> usize {
        self.seen.client_certs.load(Ordering::SeqCst)
    }

    pub fn sni(&self) -> Vec<Option<String>> {
        self.seen.sni.lock().expect("lock").clone()
    }
}

fn serve(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    seen: &Seen,
    close_each: bool,
) -> io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let mut tcp = tcp;
    while conn.is_handshaking() {
        if let Err(e) = conn.complete_io(&mut tcp) {
            // The alert saying why is sent; closing with the client's
            // unread bytes (TLS 1.3 sends its request before it learns its
            // certificate was refused) would reset the connection and could
            // destroy the alert, so close gracefully, as servers do.
            let _ = tcp.shutdown(std::net::Shutdown::Write);
            tcp.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut sink = [0u8; 4096];
            while matches!(tcp.read(&mut sink), Ok(n) if n > 0) {}
            return Err(e);
        }
    }
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let sni = conn.server_name().map(str::to_string);
    let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
    // Counted at the first request, so that the health prober's
    // connections (and their requests) are left out.
    let mut counted = false;
    let mut stream = BufReader::new(StreamOwned::new(conn, tcp));
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let (mut host, mut length, mut probe) = (String::new(), 0usize, false);
        loop {
            let mut field = String::new();
            stream.read_line(&mut field)?;
            let field = field.trim_end();
            if field.is_empty() {
                break;
            }
            if let Some((name, value)) = field.split_once(':') {
                match name.to_ascii_lowercase().as_str() {
                    "host" => host = value.trim().to_string(),
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "user-agent" => probe = value.trim() == "load_balancer-health",
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if path.starts_with("/slow") {
            // A slow reader: the proxy's socket fills and TLS records wait.
            for piece in body.chunks_mut(64 * 1024) {
                thread::sleep(Duration::from_millis(3));
                stream.read_exact(piece)?;
            }
        } else {
            stream.read_exact(&mut body)?;
        }
        if probe {
            seen.probes.fetch_add(1, Ordering::SeqCst);
        } else {
            seen.requests.fetch_add(1, Ordering::SeqCst);
            if !counted {
                counted = true;
                seen.handshakes.fetch_add(1, Ordering::SeqCst);
                seen.resumed
                    .fetch_add(usize::from(resumed), Ordering::SeqCst);
                seen.sni.lock().expect("lock").push(sni.clone());
                seen.client_certs
                    .fetch_add(usize::from(client_cert), Ordering::SeqCst);
            }
        }
        // `/bytes/N`: N bytes of `b'a' + i % 26`, for large responses.
        let text = match path
            .strip_prefix("/bytes/")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect(),
            None => format!("tls {path} host={host} body={}\n", body.len()),
        };
        let close = if close_each {
            "Connection: close\r\n"
        } else {
            ""
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{close}\r\n{text}",
            text.len()
        );
        let inner = stream.get_mut();
        inner.write_all(answer.as_bytes())?;
        inner.flush()?;
        if close_each {
            inner.conn.send_close_notify();
            inner.flush()?;
            return Ok(());
        }
    }
}
