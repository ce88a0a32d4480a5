//! Backend names → endpoints (issue 13 item 4, as HAProxy's
//! `server-template` and Envoy's STRICT_DNS): a configured backend given
//! by name becomes one endpoint per address its name resolves to, each a
//! backend of its own (own `BackendId`, pool, breaker, metric series) with
//! the configured weight.
//!
//! Resolution is blocking (getaddrinfo): it runs while parsing (start,
//! reload, `--check`) and on the resolver thread of `reload::dns`, never on
//! a worker's loop.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use crate::upstream::{Backend, BackendId, sticky_id};

/// Test-only seam: when set, a hosts file (`name addr addr…` per line,
/// `#` comments) consulted before getaddrinfo and re-read on every
/// resolution, so integration tests can change a name's answers without a
/// DNS server. A name listed with no address fails to resolve. Operators
/// have `/etc/hosts`; this exists because tests cannot edit it.
pub const TEST_HOSTS_ENV: &str = "LB_TEST_HOSTS";

/// A backend as configured, with the addresses its name resolved to last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// As parsed; for a name, `addr` means nothing (unspecified).
    pub backend: Backend,
    /// The last good answer, sorted; an IP literal's one address.
    pub addrs: Vec<SocketAddr>,
}

impl Target {
    /// Whether `backend.host` is a name (re-resolved) rather than an IP.
    pub fn is_named(&self) -> bool {
        is_name(&self.backend.host)
    }
}

pub fn is_name(host: &str) -> bool {
    host.parse::<IpAddr>().is_err()
}

/// Resolves every named backend of `backends` (as parsed). The error is
/// the index of the backend that failed and one line.
pub fn resolve(backends: Vec<Backend>) -> Result<Vec<Target>, (usize, String)> {
    backends
        .into_iter()
        .enumerate()
        .map(|(i, backend)| {
            let addrs = match is_name(&backend.host) {
                true => lookup(&backend.host, backend.port).map_err(|e| (i, e))?,
                false => vec![backend.addr],
            };
            Ok(Target { backend, addrs })
        })
        .collect()
}

/// The endpoints of `targets`, ids 0..n in order. A name with one address
/// keeps the label `host:port`; with several, each endpoint is labelled
/// `host:port@ip` (the table keeps a label as long as its address stays,
/// see `reload::table`).
pub fn endpoints(targets: &[Target]) -> Vec<Backend> {
    let mut out = Vec::new();
    for t in targets {
        let several = t.addrs.len() > 1;
        for &addr in &t.addrs {
            let mut b = t.backend.clone();
            b.id = BackendId(out.len());
            b.addr = addr;
            if several {
                b.label = format!("{}@{}", t.backend.label, addr.ip());
                b.sticky_id = sticky_id(&b.label);
            }
            out.push(b);
        }
    }
    out
}

/// All addresses of `host` for `port`, sorted: the test hosts file if set
/// and it lists the name, else getaddrinfo. Only the address family of
/// getaddrinfo's first answer (the system's preference, `/etc/gai.conf`)
/// is kept: a dual-stack name whose service listens on one family would
/// otherwise get endpoints that refuse every connection.
pub fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let cannot =
        |why: &dyn std::fmt::Display| format!("cannot resolve backend host '{host}': {why}");
    let answer: Vec<SocketAddr> = match test_hosts(host, port).map_err(|e| cannot(&e))? {
        Some(listed) => listed,
        None => (host, port)
            .to_socket_addrs()
            .map_err(|e| cannot(&e))?
            .collect(),
    };
    let Some(first) = answer.first() else {
        return Err(cannot(&"no address"));
    };
    let v6 = first.is_ipv6();
    let kept: BTreeSet<SocketAddr> = answer
        .iter()
        .copied()
        .filter(|a| a.is_ipv6() == v6)
        .collect();
    Ok(kept.into_iter().collect())
}

/// `host`'s line of the test hosts file: `None` when the seam is off or
/// the name is not listed.
fn test_hosts(host: &str, port: u16) -> Result<Option<Vec<SocketAddr>>, String> {
    let Some(path) = std::env::var_os(TEST_HOSTS_ENV) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("{TEST_HOSTS_ENV} {}: {e}", path.to_string_lossy()))?;
    Ok(parse_hosts(&text, host, port))
}

fn parse_hosts(text: &str, host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            name.eq_ignore_ascii_case(host).then(|| {
                words
                    .filter_map(|w| w.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, port))
                    .collect()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::parse_spec;

    fn target(spec: &str, addrs: &[&str]) -> Target {
        Target {
            backend: parse_spec(spec, BackendId(0)).expect("valid spec"),
            addrs: addrs.iter().map(|a| a.parse().expect("address")).collect(),
        }
    }

    #[test]
    fn each_address_of_a_name_is_an_endpoint() {
        let targets = [
            target("10.0.0.1:80,weight=2", &["10.0.0.1:80"]),
            target("api.test:443,weight=3", &["10.0.0.7:443", "10.0.0.8:443"]),
            target("one.test:80", &["10.0.0.9:80"]),
        ];
        let e = endpoints(&targets);
        let got: Vec<(usize, &str, String, u32, bool)> = e
            .iter()
            .map(|b| {
                (
                    b.id.0,
                    b.label.as_str(),
                    b.addr.to_string(),
                    b.weight,
                    b.tls,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "10.0.0.1:80", "10.0.0.1:80".into(), 2, false),
                (1, "api.test:443@10.0.0.7", "10.0.0.7:443".into(), 3, true),
                (2, "api.test:443@10.0.0.8", "10.0.0.8:443".into(), 3, true),
                (3, "one.test:80", "10.0.0.9:80".into(), 1, false),
            ]
        );
        // Each endpoint its own sticky id, from its label.
        assert_ne!(e[1].sticky_id, e[2].sticky_id);
        assert_eq!(e[1].sticky_id, sticky_id("api.test:443@10.0.0.7"));
        // SNI and Host still name the host.
        assert_eq!(e[2].host, "api.test");
    }

    #[test]
    fn hosts_file_lines() {
        let text = "# comment\nother.test 10.0.0.1\nAPI.test 10.0.0.2 ::1 junk # note\ngone.test\n";
        let addrs = |h| parse_hosts(text, h, 80);
        assert_eq!(
            addrs("api.test"),
            Some(vec![
                "10.0.0.2:80".parse().unwrap(),
                "[::1]:80".parse().unwrap()
            ])
        );
        assert_eq!(addrs("gone.test"), Some(vec![]));
        assert_eq!(addrs("missing.test"), None);
    }

    #[test]
    fn localhost_is_resolved() {
        let addrs = lookup("localhost", 9000).expect("localhost resolves");
        assert!(
            addrs
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 9000)
        );
        assert!(addrs.windows(2).all(|w| w[0].is_ipv6() == w[1].is_ipv6()));
    }

    #[test]
    fn unresolvable_host_is_named() {
        // `.invalid` is reserved (RFC 2606): never resolves, fails fast.
        let err = lookup("no-such-host.invalid", 80).unwrap_err();
        assert!(
            err.starts_with("cannot resolve backend host 'no-such-host.invalid': "),
            "{err}"
        );
        let b = parse_spec("no-such-host.invalid:80", BackendId(0)).expect("parses");
        assert_eq!(resolve(vec![b]).unwrap_err().0, 0);
    }
}
