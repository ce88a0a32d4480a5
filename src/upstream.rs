//! The backend set: what a backend is, and parsing of the `-b <SPEC>` grammar.
//!
//! Owns the immutable description of each backend (address, weight, TLS,
//! stable sticky id). It does no I/O: names are resolved by `dns`, which
//! makes one endpoint per address. Connections to backends live in `pool`.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// Index of a backend in `Config::backends` (and in every per-backend table).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct BackendId(pub usize);

/// Which `Host` header a backend receives (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HostHeader {
    /// Client's Host for plain HTTP backends, the backend's name for TLS ones.
    Auto,
    /// Always the client's Host.
    Preserve,
    /// Always the backend's own `host[:port]`.
    Backend,
}

/// A TLS backend's own settings from the config file (SPEC §7, as nginx's
/// `proxy_ssl_*` and HAProxy's `ca-file`/`sni`/`crt`); empty for `-b`
/// backends. Checked at start-up (`config::file`); `tls::client_config`
/// turns them into the connection settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct TlsOptions {
    /// PEM bundle trusted for this backend *instead of* webpki-roots and
    /// `--ca-file`: an internal CA's backend accepts no public certificate.
    pub ca_file: Option<PathBuf>,
    /// The name sent as SNI and verified, instead of `host` (lowercase DNS
    /// name). `Host` still follows `host_header`.
    pub sni: Option<String>,
    /// Mutual TLS: the certificate we present, with its key.
    pub client_cert: Option<ClientCert>,
}

/// A client certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsOptions {
    pub fn is_empty(&self) -> bool {
        *self == TlsOptions::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    pub id: BackendId,
    /// Host as configured: a DNS name or an IP literal (IPv6 without brackets).
    /// Used for SNI and for `Host` when the backend's name is sent.
    pub host: String,
    pub port: u16,
    /// The endpoint's address (`dns::endpoints`); unspecified in a named
    /// backend as parsed, before resolution.
    pub addr: SocketAddr,
    /// ≥ 1.
    pub weight: u32,
    pub tls: bool,
    pub host_header: HostHeader,
    /// Config-file TLS settings; empty unless `tls`.
    pub tls_options: TlsOptions,
    /// `host:port` (`[v6]:port`), for logs and metrics labels;
    /// `host:port@ip` for each endpoint of a name with several addresses.
    pub label: String,
    /// Stable id derived from `label` (not from a counter), so every worker and
    /// every instance with the same backends agrees on sticky cookies.
    pub sticky_id: u64,
}

/// Default weight of a backend that names none.
pub const DEFAULT_WEIGHT: u32 = 1;

/// The form every SPEC error quotes, so the operator sees what is accepted.
const FORMS: &str = "expected host:port, [v6addr]:port, http://host[:port] or https://host[:port], \
                     optionally followed by ,weight=N";

/// Parses one `-b <SPEC>` (SPEC §1); a host name is left for `dns` to
/// resolve.
///
/// The error is the single line to print; it quotes `spec`. Port 443 or an
/// `https://` prefix means TLS (even with an explicit `http://`, because §1
/// says port 443 means TLS).
pub fn parse_spec(spec: &str, id: BackendId) -> Result<Backend, String> {
    let bad = |why: &str| format!("bad backend '{spec}': {why}");
    let (address, options) = match spec.split_once(',') {
        Some((a, o)) => (a, Some(o)),
        None => (spec, None),
    };
    let mut weight = None;
    if let Some(options) = options {
        for option in options.split(',') {
            match option.split_once('=') {
                Some(("weight", value)) if weight.is_none() => {
                    weight = Some(parse_weight(value).map_err(|why| bad(&why))?);
                }
                Some(("weight", _)) => return Err(bad("weight given twice")),
                _ if option.is_empty() => return Err(bad("empty option after ','")),
                _ => {
                    return Err(bad(&format!(
                        "unknown option '{option}' (only weight=N is supported)"
                    )));
                }
            }
        }
    }
    let (scheme, rest) = split_scheme(address).map_err(|why| bad(&why))?;
    let authority = strip_root_path(rest).map_err(|why| bad(&why))?;
    if authority.is_empty() {
        return Err(bad(&format!("no host ({FORMS})")));
    }
    let (host, port) = split_authority(authority).map_err(|why| bad(&why))?;
    let port = match (port, scheme) {
        (Some(p), _) => parse_port(p).map_err(|why| bad(&why))?,
        (None, Scheme::Http) => 80,
        (None, Scheme::Https) => 443,
        (None, Scheme::None) => return Err(bad(&format!("no port ({FORMS})"))),
    };
    build(
        host,
        port,
        weight.unwrap_or(DEFAULT_WEIGHT),
        scheme == Scheme::Https,
        HostHeader::Auto,
        id,
        &bad,
    )
}

/// Builds a backend from the config file's `{host, port, weight, host_header}`
/// (SPEC §3). `host` may carry an `http://` or `https://` scheme and may be a
/// bare or bracketed IPv6 literal; the port always comes from `port`.
pub fn backend_from_parts(
    host: &str,
    port: u16,
    weight: u32,
    host_header: HostHeader,
    id: BackendId,
) -> Result<Backend, String> {
    let bad = |why: &str| format!("bad backend host '{host}' port {port}: {why}");
    let (scheme, rest) = split_scheme(host).map_err(|why| bad(&why))?;
    let rest = strip_root_path(rest).map_err(|why| bad(&why))?;
    let bare = match rest.strip_prefix('[') {
        Some(inner) => match inner.strip_suffix(']') {
            Some(v6) if v6.parse::<Ipv6Addr>().is_ok() => v6,
            Some(v6) => return Err(bad(&format!("'[{v6}]' is not an IPv6 address"))),
            None => return Err(bad("unbalanced '[' in host")),
        },
        // A bare IPv6 literal is unambiguous here because the port is separate.
        None if rest.parse::<Ipv6Addr>().is_ok() => rest,
        None if rest.contains(':') => {
            return Err(bad("put the port in \"port\", not in \"host\""));
        }
        None => rest,
    };
    if port == 0 {
        return Err(bad("port must be 1-65535"));
    }
    if weight == 0 {
        return Err(bad("weight must be at least 1"));
    }
    build(
        bare,
        port,
        weight,
        scheme == Scheme::Https,
        host_header,
        id,
        &bad,
    )
}

/// FNV-1a 64 of the label: stable across processes, builds and instances,
/// which a sticky cookie needs (std's `Hash` is randomly keyed per process).
pub fn sticky_id(label: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    label
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    None,
    Http,
    Https,
}

fn split_scheme(s: &str) -> Result<(Scheme, &str), String> {
    let Some((scheme, rest)) = s.split_once("://") else {
        return Ok((Scheme::None, s));
    };
    if scheme.eq_ignore_ascii_case("http") {
        Ok((Scheme::Http, rest))
    } else if scheme.eq_ignore_ascii_case("https") {
        Ok((Scheme::Https, rest))
    } else {
        Err(format!(
            "unsupported scheme '{scheme}://' (use http:// or https://)"
        ))
    }
}

/// Allows one trailing `/` (people paste URLs), rejects any real path: the
/// proxy forwards the client's path unchanged and has no prefix to add.
fn strip_root_path(s: &str) -> Result<&str, String> {
    let s = s.strip_suffix('/').unwrap_or(s);
    if s.contains(['/', '?', '#']) {
        return Err(
            "a backend has no path, query or fragment (only a trailing '/' is allowed)".into(),
        );
    }
    if s.contains('@') {
        return Err("user info ('user@') is not supported".into());
    }
    Ok(s)
}

/// Splits `host[:port]` / `[v6][:port]` into the bare host and the port text.
fn split_authority(a: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(inner) = a.strip_prefix('[') {
        let Some((v6, after)) = inner.split_once(']') else {
            return Err("unbalanced '[' in IPv6 address".into());
        };
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("'[{v6}]' is not an IPv6 address"));
        }
        return match after {
            "" => Ok((v6, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((v6, Some(port))),
                None => Err(format!("unexpected '{after}' after ']'")),
            },
        };
    }
    match a.split_once(':') {
        Some((_, port)) if port.contains(':') => {
            Err("an IPv6 address must be bracketed: [addr]:port".into())
        }
        Some((host, port)) => Ok((host, Some(port))),
        None => Ok((a, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) => Err("port must be 1-65535".into()),
        Ok(port) if p.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ if p.is_empty() => Err("empty port after ':'".into()),
        _ => Err(format!("port '{p}' is not a number in 1-65535")),
    }
}

fn parse_weight(w: &str) -> Result<u32, String> {
    match w.parse::<u32>() {
        Ok(0) => Err("weight must be at least 1".into()),
        Ok(n) if w.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!("weight '{w}' is not a whole number ≥ 1")),
    }
}

/// Common tail of both builders: validates and normalises the host so that
/// spellings of one address share a label (and thus a sticky id). A name's
/// `addr` is the unspecified address until `dns` resolves it.
fn build(
    host: &str,
    port: u16,
    weight: u32,
    https: bool,
    host_header: HostHeader,
    id: BackendId,
    bad: &dyn Fn(&str) -> String,
) -> Result<Backend, String> {
    let (host, addr, label) = if let Ok(v4) = host.parse::<Ipv4Addr>() {
        let addr = SocketAddr::from((v4, port));
        (v4.to_string(), addr, addr.to_string())
    } else if let Ok(v6) = host.parse::<Ipv6Addr>() {
        let addr = SocketAddr::from((v6, port));
        (v6.to_string(), addr, addr.to_string())
    } else {
        check_host_name(host).map_err(|why| bad(&why))?;
        let host = host.to_ascii_lowercase();
        let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
        let label = format!("{host}:{port}");
        (host, addr, label)
    };
    Ok(Backend {
        id,
        sticky_id: sticky_id(&label),
        host,
        port,
        addr,
        weight,
        tls: https || port == 443,
        host_header,
        tls_options: TlsOptions::default(),
        label,
    })
}

fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    let ok = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !ok || host.starts_with(['.', '-']) || host.len() > 253 {
        return Err(format!("'{host}' is not a host name or IP address"));
    }
    Ok(())
}

impl Backend {
    /// The TLS server name: sent as SNI (unless an IP literal) and what the
    /// certificate must be valid for.
    pub fn tls_name(&self) -> &str {
        self.tls_options.sni.as_deref().unwrap_or(&self.host)
    }

    /// The `Host` this backend gets when its own name is sent (TLS backends,
    /// `host_header: backend`, health probes, HTTP/1.0 requests without
    /// one): the port is left out when it is the scheme's default, as
    /// browsers do.
    pub fn host_value(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        let host = match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        };
        match self.port == default_port {
            true => host,
            false => format!("{host}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(spec: &str) -> Backend {
        parse_spec(spec, BackendId(7)).unwrap_or_else(|e| panic!("{spec}: {e}"))
    }

    #[test]
    fn good_specs() {
        // spec, host, port, weight, tls, label, resolved address
        let table: &[(&str, &str, u16, u32, bool, &str, &str)] = &[
            (
                "127.0.0.1:9001",
                "127.0.0.1",
                9001,
                1,
                false,
                "127.0.0.1:9001",
                "127.0.0.1:9001",
            ),
            (
                "127.0.0.1:9001,weight=3",
                "127.0.0.1",
                9001,
                3,
                false,
                "127.0.0.1:9001",
                "127.0.0.1:9001",
            ),
            (
                "10.0.0.1:443",
                "10.0.0.1",
                443,
                1,
                true,
                "10.0.0.1:443",
                "10.0.0.1:443",
            ),
            (
                "[::1]:8080",
                "::1",
                8080,
                1,
                false,
                "[::1]:8080",
                "[::1]:8080",
            ),
            (
                "[0:0::1]:8080,weight=2",
                "::1",
                8080,
                2,
                false,
                "[::1]:8080",
                "[::1]:8080",
            ),
            (
                "http://127.0.0.1",
                "127.0.0.1",
                80,
                1,
                false,
                "127.0.0.1:80",
                "127.0.0.1:80",
            ),
            (
                "http://127.0.0.1:81/",
                "127.0.0.1",
                81,
                1,
                false,
                "127.0.0.1:81",
                "127.0.0.1:81",
            ),
            (
                "https://127.0.0.1",
                "127.0.0.1",
                443,
                1,
                true,
                "127.0.0.1:443",
                "127.0.0.1:443",
            ),
            (
                "https://127.0.0.1:8443,weight=10",
                "127.0.0.1",
                8443,
                10,
                true,
                "127.0.0.1:8443",
                "127.0.0.1:8443",
            ),
            (
                "HTTPS://[::1]/",
                "::1",
                443,
                1,
                true,
                "[::1]:443",
                "[::1]:443",
            ),
            (
                "http://[::1]:8000",
                "::1",
                8000,
                1,
                false,
                "[::1]:8000",
                "[::1]:8000",
            ),
            (
                "127.0.0.1:80/",
                "127.0.0.1",
                80,
                1,
                false,
                "127.0.0.1:80",
                "127.0.0.1:80",
            ),
        ];
        for &(spec, host, port, weight, tls, label, addr) in table {
            let b = ok(spec);
            assert_eq!(b.id, BackendId(7), "{spec}");
            assert_eq!(b.host, host, "{spec}");
            assert_eq!(b.port, port, "{spec}");
            assert_eq!(b.weight, weight, "{spec}");
            assert_eq!(b.tls, tls, "{spec}");
            assert_eq!(b.label, label, "{spec}");
            assert_eq!(b.addr, addr.parse::<SocketAddr>().unwrap(), "{spec}");
            assert_eq!(b.sticky_id, sticky_id(label), "{spec}");
            assert_eq!(b.host_header, HostHeader::Auto, "{spec}");
        }
    }

    #[test]
    fn names_are_lowercased_and_left_unresolved() {
        let b = ok("LocalHost:9000");
        assert_eq!(b.host, "localhost");
        assert_eq!(b.label, "localhost:9000");
        assert!(b.addr.ip().is_unspecified(), "dns resolves it");
        assert!(ok("https://localhost").tls);
    }

    #[test]
    fn bad_specs() {
        // spec, a fragment the error must contain
        let table: &[(&str, &str)] = &[
            ("", "no host"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:", "empty port"),
            ("127.0.0.1:0", "1-65535"),
            ("127.0.0.1:65536", "not a number"),
            ("127.0.0.1:+80", "not a number"),
            ("127.0.0.1:http", "not a number"),
            ("::1:80", "bracketed"),
            ("[::1", "unbalanced"),
            ("[::1]x", "after ']'"),
            ("[::1]", "no port"),
            ("[zz]:80", "not an IPv6 address"),
            ("[127.0.0.1]:80", "not an IPv6 address"),
            ("ftp://127.0.0.1:21", "unsupported scheme"),
            ("http://127.0.0.1/api", "no path"),
            ("http://127.0.0.1//", "no path"),
            ("127.0.0.1:80?x", "no path"),
            ("http://user@127.0.0.1", "user info"),
            ("http://", "no host"),
            ("http://:80", "empty host"),
            ("127.0.0.1:80,weight=0", "at least 1"),
            ("127.0.0.1:80,weight=x", "not a whole number"),
            ("127.0.0.1:80,weight=-1", "not a whole number"),
            ("127.0.0.1:80,weight=", "not a whole number"),
            ("127.0.0.1:80,weight=1,weight=2", "twice"),
            ("127.0.0.1:80,", "empty option"),
            ("127.0.0.1:80,backup", "unknown option 'backup'"),
            ("127.0.0.1:80,max_fails=3", "unknown option 'max_fails=3'"),
            ("bad host:80", "not a host name"),
            ("-x:80", "not a host name"),
        ];
        for &(spec, fragment) in table {
            let err = parse_spec(spec, BackendId(0)).expect_err(spec);
            assert!(
                err.starts_with(&format!("bad backend '{spec}': ")),
                "{spec}: {err}"
            );
            assert!(err.contains(fragment), "{spec}: {err}");
            assert!(!err.contains('\n'), "{spec}: {err}");
        }
    }

    #[test]
    fn parts_builder() {
        let b = backend_from_parts(
            "https://127.0.0.1",
            8443,
            2,
            HostHeader::Preserve,
            BackendId(1),
        )
        .unwrap();
        assert_eq!(
            (b.host.as_str(), b.port, b.weight, b.tls),
            ("127.0.0.1", 8443, 2, true)
        );
        assert_eq!(b.host_header, HostHeader::Preserve);
        assert_eq!(b.label, "127.0.0.1:8443");
        let b = backend_from_parts("::1", 443, 1, HostHeader::Auto, BackendId(0)).unwrap();
        assert_eq!((b.label.as_str(), b.tls), ("[::1]:443", true));
        let b =
            backend_from_parts("http://[::1]/", 80, 1, HostHeader::Backend, BackendId(0)).unwrap();
        assert_eq!((b.label.as_str(), b.tls), ("[::1]:80", false));
        assert_eq!(
            b.sticky_id,
            parse_spec("[::1]:80", BackendId(3)).unwrap().sticky_id,
            "the same backend has one sticky id whichever way it was written"
        );
        for (host, port, weight, fragment) in [
            ("127.0.0.1:80", 80, 1, "put the port"),
            ("127.0.0.1", 0, 1, "1-65535"),
            ("127.0.0.1", 80, 0, "at least 1"),
            ("gopher://x", 70, 1, "unsupported scheme"),
            ("http://x/y", 80, 1, "no path"),
            ("[::1", 80, 1, "unbalanced"),
            ("", 80, 1, "empty host"),
        ] {
            let err = backend_from_parts(host, port, weight, HostHeader::Auto, BackendId(0))
                .expect_err(host);
            assert!(err.contains(fragment), "{host}: {err}");
        }
    }

    #[test]
    fn sticky_id_is_fnv1a_64() {
        // Reference values of FNV-1a 64.
        assert_eq!(sticky_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(sticky_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(sticky_id("foobar"), 0x85944171f73967e8);
    }
}
