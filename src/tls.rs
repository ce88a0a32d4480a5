//! TLS to backends (SPEC §7): the worker's rustls client configuration
//! (trust roots, `--ca-file`, `-k`, session resumption) and one
//! `ClientConnection` driven over a non-blocking socket with the event
//! loop's edge-triggered discipline. Never blocks; `pool::Upstream` calls
//! these for its TLS connections, the plain ones go straight to `net`.
//!
//! rustls can hold decrypted bytes the kernel will never signal again, so a
//! read asks rustls for plaintext first and goes to the socket only when it
//! has none; readiness is cleared only when both are empty.

use std::io::{self, IoSlice, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore,
};

use crate::buffer::Buf;
use crate::net::{RawSocket, Read};

/// The client configuration every TLS backend connection of a worker
/// shares; its session cache (rustls' default, 256 entries) is what
/// resumes handshakes, so it is per worker as SPEC §7 asks.
pub fn client_config(insecure: bool, ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    // ring has no post-quantum key exchange (hence the deprecation); it is
    // the provider that builds with just a C compiler.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = ca_file {
            for cert in load_ca_file(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // HTTP/2 is not spoken to backends yet: offering only http/1.1 keeps an
    // h2-capable backend on HTTP/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a PEM bundle; an unreadable file or one without a
/// certificate is an error naming it.
pub fn load_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let name = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("--ca-file {name}: cannot read: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--ca-file {name}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("--ca-file {name}: no PEM certificate in it"));
    }
    Ok(certs)
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
    pub fn describe(&self, host: &str) -> String {
        use rustls::Error as E;
        let cert = |e: &CertificateError| {
            match e {
            CertificateError::UnknownIssuer => {
                "certificate signed by an unknown issuer (--ca-file adds a CA, -k skips verification)".to_string()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate expired".to_string(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not valid yet".to_string()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
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
                        let name: String =
                            shown.chars().take_while(char::is_ascii_alphanumeric).collect();
                        let name = name.strip_suffix("Context").unwrap_or(&name);
                        format!("invalid certificate: {}", split_camel(name, ' '))
                    }
                    false => format!("invalid certificate: {shown}"),
                }
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
                format!(
                    "TLS handshake failed: the backend sent alert {}",
                    alert_name(*alert)
                )
            }
            HandshakeError::Tls(e) => format!("TLS handshake failed: {e}"),
        }
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

/// `--tls-trace`: what a finished handshake agreed on, as one line.
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
        String::from_utf8_lossy(p).into_owned()
    });
    let kind = match conn.handshake_kind() {
        Some(rustls::HandshakeKind::Resumed) => "resumed",
        _ => "full",
    };
    let chain = conn.peer_certificates().map_or(0, <[_]>::len);
    format!("{version}, {cipher}, ALPN {alpn}, {kind} handshake, {chain} peer certificate(s)")
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
                    rustls::AlertDescription::UnknownCA,
                )),
                "the backend sent alert unknown_ca",
            ),
        ];
        for (e, words) in cases {
            let said = e.describe("api.test");
            assert!(said.contains(words), "{said}");
        }
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
