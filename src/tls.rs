//! TLS to backends (SPEC §7): the worker's rustls client configurations
//! (trust roots, `--ca-file`, `-k`, a backend's own `ca_file` and client
//! certificate, session resumption) and one `ClientConnection` driven over
//! a non-blocking socket with the event loop's edge-triggered discipline.
//! Never blocks; `pool::Upstream` calls these for its TLS connections, the
//! plain ones go straight to `net`.
//!
//! rustls can hold decrypted bytes the kernel will never signal again, so a
//! read asks rustls for plaintext first and goes to the socket only when it
//! has none; readiness is cleared only when both are empty.

use std::collections::HashMap;
use std::io::{self, IoSlice, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::WantsClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, ConfigBuilder,
    DigitallySignedStruct, InconsistentKeys, RootCertStore,
};

use crate::buffer::Buf;
use crate::net::{RawSocket, Read};
use crate::upstream::{Backend, ClientCert, TlsOptions};
use crate::x509;

use rustls::crypto::ring::kx_group::{
    SECP256R1 as KX_P256, SECP384R1 as KX_P384, X25519 as KX_X25519,
};

/// A client configuration TLS backend connections of a worker share; its
/// session cache (rustls' default, 256 entries) is what resumes
/// handshakes, so it is per worker as SPEC §7 asks. `own` is a backend's
/// config-file options: its `ca_file` replaces webpki-roots and `--ca-file`
/// (HAProxy's `ca-file` semantics), its client certificate is presented
/// when the backend asks for one. `-k` turns verification off for every
/// backend, those with a `ca_file` included.
pub fn client_config(
    insecure: bool,
    ca_file: Option<&Path>,
    own: &TlsOptions,
) -> Result<Arc<ClientConfig>, String> {
    // ring has no post-quantum key exchange (hence the deprecation); it is
    // the provider that builds with just a C compiler.
    #[allow(deprecated)]
    let mut provider = rustls::crypto::ring::default_provider();
    // Its default order offers P-384 first, whose ring arithmetic has no
    // assembly: 19 M instructions per handshake (TLS 1.2 and 1.3 alike,
    // the key share goes in the ClientHello), 4x nginx's CPU per new
    // backend connection. X25519 first, as OpenSSL and browsers do.
    provider.kx_groups = vec![KX_X25519, KX_P256, KX_P384];
    let provider = Arc::new(provider);
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
    } else {
        builder.with_root_certificates(roots(ca_file, own)?)
    };
    let mut config = match &own.client_cert {
        None => builder.with_no_client_auth(),
        Some(client) => with_client_cert(builder, client)?,
    };
    // Health probes and tunnels speak HTTP/1.1 whatever the backend
    // prefers; `offering_h2` makes the configuration for everything else.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `config` with ALPN offering `h2` first (SPEC §7). A clone shares the
/// original's session store, so either resumes the other's sessions.
pub fn offering_h2(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A worker's configurations, one per backend (`None` for plain ones):
/// backends whose options build the same configuration share one, and so
/// share its session cache; a backend with its own `ca_file` or client
/// certificate gets its own. `sni` is not part of a configuration (it is
/// the per-connection server name).
pub fn backend_configs(
    backends: &[Backend],
    insecure: bool,
    ca_file: Option<&Path>,
) -> Result<Vec<Option<Arc<ClientConfig>>>, String> {
    let mut built: HashMap<(Option<&Path>, Option<&ClientCert>), Arc<ClientConfig>> =
        HashMap::new();
    backends
        .iter()
        .map(|b| {
            if !b.tls {
                return Ok(None);
            }
            let own = &b.tls_options;
            // Under -k no certificate is verified: trust makes no difference.
            let trust = own.ca_file.as_deref().filter(|_| !insecure);
            let key = (trust, own.client_cert.as_ref());
            if let Some(config) = built.get(&key) {
                return Ok(Some(Arc::clone(config)));
            }
            let config = client_config(insecure, ca_file, own)
                .map_err(|e| format!("backend {}: {e}", b.label))?;
            built.insert(key, Arc::clone(&config));
            Ok(Some(config))
        })
        .collect()
}

/// Start-up check of a backend's own options: every file is read and the
/// configuration built, so what the worker builds later cannot fail on
/// their content. The error names the option and the file.
pub fn check_options(own: &TlsOptions) -> Result<(), String> {
    client_config(false, None, own).map(drop)
}

/// The certificates of a `--ca-file` PEM bundle; an unreadable file or one
/// without a certificate is an error naming it.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    load_certs(path, "--ca-file")
}

/// The certificates of a PEM file; `what` names the option it came from.
fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let name = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{what} {name}: {}", pem_error(&e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {name}: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("{what} {name}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// The trust anchors for a backend: its own `ca_file` alone, else
/// webpki-roots plus `--ca-file`.
fn roots(ca_file: Option<&Path>, own: &TlsOptions) -> Result<RootCertStore, String> {
    let (mut roots, path, what) = match (&own.ca_file, ca_file) {
        (Some(path), _) => (RootCertStore::empty(), Some(path.as_path()), "ca_file"),
        (None, path) => (
            RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
            path,
            "--ca-file",
        ),
    };
    if let Some(path) = path {
        for (i, cert) in load_certs(path, what)?.into_iter().enumerate() {
            roots.add(cert).map_err(|_| {
                format!(
                    "{what} {}: certificate {} in it is not a usable CA certificate",
                    path.display(),
                    i + 1
                )
            })?;
        }
    }
    Ok(roots)
}

/// Mutual TLS: the chain and key we present. rustls checks that the key
/// is the certificate's.
fn with_client_cert(
    builder: ConfigBuilder<ClientConfig, WantsClientCert>,
    client: &ClientCert,
) -> Result<ClientConfig, String> {
    let chain = load_certs(&client.cert, "client_cert")?;
    let key_name = client.key.display();
    let key = PrivateKeyDer::from_pem_file(&client.key).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "client_key {key_name}: no private key in it (PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ),
        e => format!("client_key {key_name}: {}", pem_error(&e)),
    })?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => format!(
                "client_key {key_name} is not the key of client_cert {}",
                client.cert.display()
            ),
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => {
                format!(
                    "client_cert {}: its first certificate cannot be read",
                    client.cert.display()
                )
            }
            _ => format!(
                "client_key {key_name}: not a usable private key (RSA, ECDSA P-256/P-384 or Ed25519)"
            ),
        })
}

/// A PEM reading error in words (the library's own text quotes bytes).
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => {
            let text = e.to_string();
            let text = text.split(" (os error ").next().unwrap_or(&text);
            format!("cannot read: {text}")
        }
        pem::Error::NoItemsFound => "nothing usable in it".into(),
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line".into(),
        pem::Error::Base64Decode(_) => "bad base64 in a PEM section".into(),
        _ => "not a usable PEM file".into(),
    }
}

/// The name a backend's certificate must carry and that goes out as SNI:
/// none is sent for an IP literal, whose certificate must carry the IP.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("'{host}' is not a valid TLS server name"))
}

pub fn connection(
    config: &Arc<ClientConfig>,
    name: &ServerName<'static>,
) -> io::Result<ClientConnection> {
    ClientConnection::new(Arc::clone(config), name.clone()).map_err(io::Error::other)
}

/// Why a handshake failed, said in words for the operator's log line.
#[derive(Debug)]
pub enum HandshakeError {
    Io(io::Error),
    Closed,
    Tls(rustls::Error),
}

impl HandshakeError {
    /// `host` is the backend's host, for errors that do not carry the name
    /// that was checked (which is its `sni` when it has one).
    pub fn describe(&self, host: &str) -> String {
        use rustls::Error as E;
        let cert = |e: &CertificateError| match e {
            CertificateError::UnknownIssuer => "certificate signed by an unknown issuer \
                 (--ca-file or the backend's \"ca_file\" trusts a CA, -k skips verification)"
                .to_string(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "certificate expired".to_string()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".to_string()
            }
            CertificateError::NotValidForNameContext { expected, .. } => {
                format!("certificate not valid for name {}", expected.to_str())
            }
            CertificateError::NotValidForName => {
                format!("certificate not valid for name {host}")
            }
            CertificateError::BadSignature => "certificate with a bad signature".to_string(),
            CertificateError::Revoked => "certificate revoked".to_string(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "certificate not valid for a TLS server".to_string()
            }
            other => {
                // rustls shows some variants only by their Rust name.
                let shown = other.to_string();
                match shown == format!("{other:?}") {
                    true => {
                        let name: String = shown
                            .chars()
                            .take_while(char::is_ascii_alphanumeric)
                            .collect();
                        let name = name.strip_suffix("Context").unwrap_or(&name);
                        format!("invalid certificate: {}", split_camel(name, ' '))
                    }
                    false => format!("invalid certificate: {shown}"),
                }
            }
        };
        match self {
            HandshakeError::Io(e) => format!("TLS handshake failed: {e}"),
            HandshakeError::Closed => {
                "backend closed the connection during the TLS handshake".to_string()
            }
            HandshakeError::Tls(E::InvalidCertificate(e)) => {
                format!("TLS handshake failed: {}", cert(e))
            }
            HandshakeError::Tls(E::AlertReceived(alert)) => {
                format!("TLS handshake failed: {}", alert_words(*alert))
            }
            HandshakeError::Tls(e) => format!("TLS handshake failed: {e}"),
        }
    }
}

/// What a backend that wants a client certificate and got none is told.
const CLIENT_CERT_REQUIRED: &str = "the backend requires a client certificate \
     (\"client_cert\" and \"client_key\" of the backend in the config file)";

/// Alerts with which a backend refuses the client certificate we sent.
fn rejects_client_cert(alert: AlertDescription) -> bool {
    use AlertDescription as A;
    matches!(
        alert,
        A::BadCertificate
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::CertificateUnknown
            | A::UnknownCA
            | A::AccessDenied
    )
}

/// What an alert the backend sent means, in words. A backend that wants a
/// client certificate says so only after our side of the handshake is
/// done in TLS 1.3, so this also explains the first read's failure.
pub fn alert_words(alert: AlertDescription) -> String {
    match alert {
        AlertDescription::CertificateRequired => CLIENT_CERT_REQUIRED.to_string(),
        a if rejects_client_cert(a) => format!(
            "the backend rejected the client certificate (alert {})",
            alert_name(a)
        ),
        other => format!("the backend sent alert {}", alert_name(other)),
    }
}

/// Why reading from an established TLS connection failed, for the 502's
/// log line: in TLS 1.3 a backend refuses our client certificate only
/// after the handshake is done on our side, so that refusal arrives here.
pub fn read_failure(e: &io::Error) -> &'static str {
    match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(AlertDescription::CertificateRequired)) => {
            CLIENT_CERT_REQUIRED
        }
        Some(rustls::Error::AlertReceived(a)) if rejects_client_cert(*a) => {
            "the backend rejected the client certificate"
        }
        Some(rustls::Error::AlertReceived(_)) => "the backend sent a TLS alert",
        Some(_) => "TLS error on the backend connection",
        None => "read from backend failed",
    }
}

/// An alert by its RFC 8446 name (`handshake_failure`, `unknown_ca`), not
/// rustls' Rust spelling (`HandshakeFailure`, `UnknownCA`).
fn alert_name(alert: rustls::AlertDescription) -> String {
    match alert.as_str() {
        Some(camel) => split_camel(camel, '_'),
        None => u8::from(alert).to_string(),
    }
}

/// `UnknownCA` → `unknown_ca` (with `sep` '_'): lower case, a separator
/// before each word.
fn split_camel(camel: &str, sep: char) -> String {
    let chars: Vec<char> = camel.chars().collect();
    let mut name = String::new();
    for (i, &c) in chars.iter().enumerate() {
        // A word starts at an upper-case letter after a lower-case one, or
        // at the last capital of a run followed by lower case (`CAFoo`).
        let starts = i > 0
            && c.is_ascii_uppercase()
            && (chars[i - 1].is_ascii_lowercase()
                || chars.get(i + 1).is_some_and(char::is_ascii_lowercase));
        if starts {
            name.push(sep);
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

/// `--tls-trace`: what a finished handshake agreed on and the peer's
/// certificate, as one line (the only caller is behind the flag, so
/// reading the certificate costs nothing otherwise).
pub fn summary(conn: &ClientConnection) -> String {
    // OpenSSL's spelling (`TLSv1.3`), which nginx logs too.
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .map_or("?".to_string(), |v| v.replace('_', "."));
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|c| c.suite().as_str())
        .unwrap_or("?");
    let alpn = conn.alpn_protocol().map_or("none".to_string(), |p| {
        x509::escape(&String::from_utf8_lossy(p))
    });
    let kind = match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => "resumed",
        _ => "full",
    };
    let peer = match conn.peer_certificates() {
        Some(chain @ [leaf, ..]) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let leaf = x509::parse(leaf).map_or_else(
                || "peer certificate not readable".to_string(),
                |c| format!("peer certificate: {}", c.describe(now)),
            );
            format!("{leaf}; chain of {}", chain.len())
        }
        _ => "no peer certificate".to_string(),
    };
    format!("{version}, {cipher}, ALPN {alpn}, {kind} handshake; {peer}")
}

/// Drives the handshake as far as the socket allows. `Ok(true)` once it is
/// complete (what it still has to send leaves with the first write).
pub fn handshake(
    conn: &mut ClientConnection,
    stream: &TcpStream,
    readable: &mut bool,
    writable: &mut bool,
) -> Result<bool, HandshakeError> {
    loop {
        flush(conn, stream, writable).map_err(HandshakeError::Io)?;
        if !conn.is_handshaking() {
            return Ok(true);
        }
        if !*readable {
            return Ok(false);
        }
        match conn.read_tls(&mut RawSocket(stream)) {
            Ok(0) => return Err(HandshakeError::Closed),
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    // Tell the backend why (the alert rustls queued).
                    let _ = flush(conn, stream, writable);
                    return Err(HandshakeError::Tls(e));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HandshakeError::Io(e)),
        }
    }
}

/// One read of plaintext into `buf`, reading and decrypting from the socket
/// only when rustls has nothing buffered.
#[inline(never)]
pub fn read(
    conn: &mut ClientConnection,
    stream: &TcpStream,
    buf: &mut Buf,
    readable: &mut bool,
) -> io::Result<Read> {
    if buf.is_full() {
        return Ok(Read::Blocked);
    }
    loop {
        match buf.read_from(&mut conn.reader()) {
            // close_notify: the backend ended the stream cleanly.
            Ok((0, _)) => return Ok(Read::Eof),
            // What rustls still holds is found by the next call: `readable`
            // turns false only when the socket said WouldBlock while rustls
            // had no plaintext, so no decrypted byte waits for an edge.
            Ok(_) => return Ok(Read::Data),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // The socket closed without close_notify: the end of the stream
            // all the same (HTTP framing says whether anything was cut).
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Read::Eof),
            Err(e) => return Err(e),
        }
        if !*readable {
            return Ok(Read::Blocked);
        }
        match conn.read_tls(&mut RawSocket(stream)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *readable = false;
                return Ok(Read::Blocked);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        conn.process_new_packets().map_err(io::Error::other)?;
        if conn.wants_write() {
            // A key update or an alert to answer; best effort, a later write
            // flushes what is left.
            let mut writable = true;
            flush(conn, stream, &mut writable)?;
        }
    }
}

/// Hands `a` then `b` to rustls as plaintext and sends what it can of the
/// records. `Ok(None)`: nothing taken, the socket is full (wait for the
/// writable edge, when [`flush`] sends the rest).
#[inline(never)]
pub fn write(
    conn: &mut ClientConnection,
    stream: &TcpStream,
    a: &[u8],
    b: &[u8],
    writable: &mut bool,
) -> io::Result<Option<usize>> {
    flush(conn, stream, writable)?;
    if conn.wants_write() || (a.is_empty() && b.is_empty()) {
        return Ok(None);
    }
    let n = conn
        .writer()
        .write_vectored(&[IoSlice::new(a), IoSlice::new(b)])?;
    flush(conn, stream, writable)?;
    Ok((n > 0).then_some(n))
}

/// Sends the TLS records rustls holds, until they are out or the socket is
/// full.
pub fn flush(
    conn: &mut ClientConnection,
    stream: &TcpStream,
    writable: &mut bool,
) -> io::Result<()> {
    while conn.wants_write() && *writable {
        match conn.write_tls(&mut RawSocket(stream)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => *writable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Queues close_notify and sends it if the socket takes it now; a backend
/// that misses it sees the TCP close all the same.
pub fn close(conn: &mut ClientConnection, stream: &TcpStream) {
    conn.send_close_notify();
    let mut writable = true;
    let _ = flush(conn, stream, &mut writable);
}

/// A pooled idle connection became readable: `true` if it can still carry
/// a request (what arrived was TLS housekeeping, e.g. a session ticket),
/// `false` if the backend closed it or sent bytes nobody asked for.
pub fn still_idle(conn: &mut ClientConnection, stream: &TcpStream) -> bool {
    loop {
        match conn.read_tls(&mut RawSocket(stream)) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
        match conn.process_new_packets() {
            Ok(state) if state.peer_has_closed() || state.plaintext_bytes_to_read() > 0 => {
                return false;
            }
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    true
}

/// `-k`: any certificate is accepted, but the handshake's signatures are
/// still checked against the one presented (as nginx without
/// `proxy_ssl_verify`): the peer holds the key of what it shows.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_exchange_offers_x25519_first() {
        for insecure in [false, true] {
            let config = client_config(insecure, None, &TlsOptions::default()).expect("config");
            let groups: Vec<_> = config
                .crypto_provider()
                .kx_groups
                .iter()
                .map(|g| g.name())
                .collect();
            use rustls::NamedGroup as G;
            assert_eq!(groups, [G::X25519, G::secp256r1, G::secp384r1]);
        }
    }

    #[test]
    fn handshake_failures_are_said_in_words() {
        let tls = |e: CertificateError| HandshakeError::Tls(rustls::Error::InvalidCertificate(e));
        let cases = [
            (
                tls(CertificateError::UnknownIssuer),
                "certificate signed by an unknown issuer",
            ),
            (tls(CertificateError::Expired), "certificate expired"),
            (
                tls(CertificateError::NotValidForName),
                "certificate not valid for name api.test",
            ),
            (
                HandshakeError::Closed,
                "closed the connection during the TLS handshake",
            ),
            (
                tls(CertificateError::UnknownRevocationStatus),
                "invalid certificate: unknown revocation status",
            ),
            (
                tls(CertificateError::UnhandledCriticalExtension),
                "invalid certificate: unhandled critical extension",
            ),
            (
                HandshakeError::Tls(rustls::Error::AlertReceived(
                    rustls::AlertDescription::HandshakeFailure,
                )),
                "the backend sent alert handshake_failure",
            ),
        ];
        for (e, words) in cases {
            let said = e.describe("api.test");
            assert!(said.contains(words), "{said}");
        }
    }

    #[test]
    fn the_name_checked_and_what_alerts_mean_are_said_in_words() {
        let e = HandshakeError::Tls(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForNameContext {
                expected: server_name("api.internal").unwrap(),
                presented: vec![],
            },
        ));
        assert_eq!(
            e.describe("10.0.0.5"),
            "TLS handshake failed: certificate not valid for name api.internal"
        );
        let alert = |a| HandshakeError::Tls(rustls::Error::AlertReceived(a)).describe("x");
        assert!(
            alert(AlertDescription::CertificateRequired)
                .contains("requires a client certificate (\"client_cert\" and \"client_key\""),
        );
        assert_eq!(
            alert(AlertDescription::UnknownCA),
            "TLS handshake failed: the backend rejected the client certificate (alert unknown_ca)"
        );
        assert_eq!(
            alert(AlertDescription::HandshakeFailure),
            "TLS handshake failed: the backend sent alert handshake_failure"
        );
    }

    fn backend(host: &str, port: u16, own: TlsOptions) -> Backend {
        let mut b = crate::upstream::backend_from_parts(
            host,
            port,
            1,
            crate::upstream::HostHeader::Auto,
            crate::upstream::BackendId(0),
        )
        .unwrap();
        b.tls_options = own;
        b
    }

    #[test]
    fn backends_with_the_same_options_share_one_configuration() {
        let dir = std::env::temp_dir().join(format!("lb-tls-configs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["c.test".into()]).unwrap();
        let (ca, cert, key) = (dir.join("ca.pem"), dir.join("c.pem"), dir.join("k.pem"));
        std::fs::write(&ca, made.cert.pem()).unwrap();
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let with_ca = TlsOptions {
            ca_file: Some(ca.clone()),
            ..TlsOptions::default()
        };
        let sni_only = TlsOptions {
            sni: Some("api.test".into()),
            ..TlsOptions::default()
        };
        let mtls = TlsOptions {
            ca_file: Some(ca.clone()),
            client_cert: Some(ClientCert { cert, key }),
            ..TlsOptions::default()
        };
        let backends = [
            backend("127.0.0.1", 443, TlsOptions::default()),
            backend("127.0.0.1", 80, TlsOptions::default()),
            backend("127.0.0.2", 443, sni_only),
            backend("127.0.0.3", 443, with_ca.clone()),
            backend("127.0.0.4", 443, with_ca),
            backend("127.0.0.5", 443, mtls),
        ];
        let same = |a: &Option<Arc<ClientConfig>>, b: &Option<Arc<ClientConfig>>| {
            Arc::ptr_eq(a.as_ref().unwrap(), b.as_ref().unwrap())
        };
        let c = backend_configs(&backends, false, None).unwrap();
        assert!(c[1].is_none(), "plain backend");
        assert!(
            same(&c[0], &c[2]),
            "sni is per connection, not per configuration"
        );
        assert!(!same(&c[0], &c[3]), "own ca_file, own configuration");
        assert!(same(&c[3], &c[4]));
        assert!(
            !same(&c[3], &c[5]),
            "a client certificate, another configuration"
        );
        assert!(c[5].as_ref().unwrap().client_auth_cert_resolver.has_certs());
        assert!(!c[3].as_ref().unwrap().client_auth_cert_resolver.has_certs());
        // Under -k trust makes no difference; a client certificate still does.
        let k = backend_configs(&backends, true, None).unwrap();
        assert!(same(&k[0], &k[3]) && same(&k[0], &k[2]));
        assert!(!same(&k[0], &k[5]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn alerts_by_their_rfc_names() {
        use rustls::AlertDescription as A;
        for (alert, name) in [
            (A::HandshakeFailure, "handshake_failure"),
            (A::UnknownCA, "unknown_ca"),
            (A::BadCertificate, "bad_certificate"),
            (A::NoApplicationProtocol, "no_application_protocol"),
            (A::CloseNotify, "close_notify"),
            (A::Unknown(222), "222"),
        ] {
            assert_eq!(alert_name(alert), name);
        }
    }

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("api.test"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(matches!(
            server_name("10.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(server_name("bad name").is_err());
    }
}
