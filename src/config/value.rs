//! The grammar of configuration values shared by flags (`cli`) and file keys
//! (`file`): ports, addresses, counts, milliseconds, paths. One "expected"
//! text per kind, so `-p 0` and `"port": 0` say the same thing in operator
//! words. Also the one way durations are shown in logs and in `--check`.
//! Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

pub const PORT: &str = "a port number 1-65535";
pub const COUNT: &str = "a whole number, at least 1";
pub const MILLIS: &str = "a whole number of milliseconds, at least 1";
pub const PERIOD: &str = "a whole number of milliseconds (0 turns it off)";
pub const IP: &str = "an IPv4 or IPv6 address such as 0.0.0.0 or ::";
pub const IP_NOT_SOCKET: &str =
    "an address without a port (give the port with -p or the \"port\" key)";
pub const SOCKET: &str = "ADDR:PORT such as 127.0.0.1:9100 or [::1]:9100";
pub const SOCKET_PORT: &str = "ADDR:PORT with a port 1-65535";
pub const PATH: &str = "a file name";

/// A listen port: 1-65535 (0 would give every `SO_REUSEPORT` worker socket
/// a different port).
pub fn port(s: &str) -> Result<u16, &'static str> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(PORT),
    }
}

/// A worker count: at least 1.
pub fn workers(s: &str) -> Result<usize, &'static str> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(COUNT),
    }
}

pub fn millis(s: &str) -> Result<Duration, &'static str> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
        _ => Err(MILLIS),
    }
}

/// A period that 0 turns off (`--dns-interval-ms`): `Duration::ZERO` is off.
pub fn period(s: &str) -> Result<Duration, &'static str> {
    match s.parse::<u64>() {
        Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(Duration::from_millis(n)),
        _ => Err(PERIOD),
    }
}

/// A listen address: an IP, optionally bracketed (`[::]`), never with a port.
pub fn ip(s: &str) -> Result<IpAddr, &'static str> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    match bare.parse() {
        Ok(ip) => Ok(ip),
        Err(_) if s.parse::<SocketAddr>().is_ok() => Err(IP_NOT_SOCKET),
        Err(_) => Err(IP),
    }
}

/// `ADDR:PORT` with a real port, as for `--metrics-addr`.
pub fn socket(s: &str) -> Result<SocketAddr, &'static str> {
    match s.parse::<SocketAddr>() {
        Ok(a) if a.port() == 0 => Err(SOCKET_PORT),
        Ok(a) => Ok(a),
        Err(_) => Err(SOCKET),
    }
}

/// A file name as given: only the empty one is refused here; whether the
/// file can be read is the user's business (or checked where it is read).
pub fn path(s: &str) -> Result<PathBuf, &'static str> {
    match s.is_empty() {
        true => Err(PATH),
        false => Ok(PathBuf::from(s)),
    }
}

/// A duration in operator words: `0 ms`, `250 ms`, `2 s`, `1.5 s`.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0..1000 => format!("{ms} ms"),
        _ if ms.is_multiple_of(1000) => format!("{} s", ms / 1000),
        _ => {
            let tenths = format!("{}.{:03}", ms / 1000, ms % 1000);
            format!("{} s", tenths.trim_end_matches('0'))
        }
    }
}

// File keys: newtypes whose errors carry the texts above. serde's own
// NonZeroU16 would say "expected a nonzero u16".

/// Accepts a JSON integer in `min..=max`; anything else is refused with
/// `what` as the expectation.
struct Ranged {
    min: u64,
    max: u64,
    what: &'static str,
}

impl<'de> Visitor<'de> for Ranged {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        match (self.min..=self.max).contains(&v) {
            true => Ok(v),
            false => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }
}

fn ranged<'de, D: Deserializer<'de>>(d: D, max: u64, what: &'static str) -> Result<u64, D::Error> {
    d.deserialize_u64(Ranged { min: 1, max, what })
}

/// A port key: 1-65535.
#[derive(Debug, Clone, Copy)]
pub struct Port(u16);

impl Port {
    pub fn get(self) -> u16 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // In range by construction: max is u16::MAX.
        ranged(d, u16::MAX.into(), PORT).map(|n| Port(n as u16))
    }
}

/// A count key (weight, threshold): 1..=u32::MAX.
#[derive(Debug, Clone, Copy)]
pub struct Count(u32);

impl Count {
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ranged(d, u32::MAX.into(), COUNT).map(|n| Count(n as u32))
    }
}

/// A milliseconds key: at least 1.
#[derive(Debug, Clone, Copy)]
pub struct Millis(Duration);

impl Millis {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ranged(d, u64::MAX, MILLIS).map(|n| Millis(Duration::from_millis(n)))
    }
}

/// A period key that 0 turns off (`dns_interval_ms`).
#[derive(Debug, Clone, Copy)]
pub struct Period(Duration);

impl Period {
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let any = Ranged {
            min: 0,
            max: u64::MAX,
            what: PERIOD,
        };
        d.deserialize_u64(any)
            .map(|n| Period(Duration::from_millis(n)))
    }
}

/// A string key parsed by one of the functions above.
struct Text<T> {
    parse: fn(&str) -> Result<T, &'static str>,
    what: &'static str,
}

impl<'de, T> Visitor<'de> for Text<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.what)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.parse)(s).map_err(|why| E::invalid_value(Unexpected::Str(s), &why))
    }
}

fn text<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: fn(&str) -> Result<T, &'static str>,
    what: &'static str,
) -> Result<T, D::Error> {
    d.deserialize_str(Text { parse, what })
}

/// The `listen` key: an IP address.
#[derive(Debug, Clone, Copy)]
pub struct Ip(pub IpAddr);

impl<'de> Deserialize<'de> for Ip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d, ip, IP).map(Ip)
    }
}

/// The `metrics_addr` key: `ADDR:PORT`.
#[derive(Debug, Clone, Copy)]
pub struct Socket(pub SocketAddr);

impl<'de> Deserialize<'de> for Socket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d, socket, SOCKET).map(Socket)
    }
}

/// A file-name key.
#[derive(Debug, Clone)]
pub struct FileName(pub PathBuf);

impl<'de> Deserialize<'de> for FileName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        text(d, path, PATH).map(FileName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values() {
        assert_eq!(port("8080"), Ok(8080));
        for bad in ["0", "65536", "-1", "", "http", "80.0"] {
            assert_eq!(port(bad), Err(PORT), "{bad}");
        }
        assert_eq!(workers("3"), Ok(3));
        for bad in ["0", "-1", "", "two", "1.5"] {
            assert_eq!(workers(bad), Err(COUNT), "{bad}");
        }
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(millis("0"), Err(MILLIS));
        assert_eq!(ip("::"), Ok("::".parse().unwrap()));
        assert_eq!(ip("[::1]"), Ok("::1".parse().unwrap()));
        assert_eq!(ip("0.0.0.0:8080"), Err(IP_NOT_SOCKET));
        assert_eq!(ip("[::]:8080"), Err(IP_NOT_SOCKET));
        assert_eq!(ip("localhost"), Err(IP));
        assert_eq!(
            socket("127.0.0.1:9100"),
            Ok("127.0.0.1:9100".parse().unwrap())
        );
        assert_eq!(socket("127.0.0.1:0"), Err(SOCKET_PORT));
        assert_eq!(socket("9100"), Err(SOCKET));
        assert_eq!(path(""), Err(PATH));
    }

    #[test]
    fn key_values_say_what_is_expected() {
        let port = |j: &str| serde_json::from_str::<Port>(j).map(Port::get);
        assert_eq!(port("443").unwrap(), 443);
        for (json, msg) in [
            (
                "0",
                "invalid value: integer `0`, expected a port number 1-65535",
            ),
            (
                "65536",
                "invalid value: integer `65536`, expected a port number",
            ),
            ("-3", "invalid value: integer `-3`, expected a port number"),
            (
                "\"80\"",
                "invalid type: string \"80\", expected a port number",
            ),
            ("8.5", "invalid type: floating point `8.5`, expected a port"),
        ] {
            let e = port(json).unwrap_err().to_string();
            assert!(e.starts_with(msg), "{json}: {e}");
        }
        let e = serde_json::from_str::<Count>("0").unwrap_err().to_string();
        assert!(e.contains("expected a whole number, at least 1"), "{e}");
        let e = serde_json::from_str::<Millis>("0").unwrap_err().to_string();
        assert!(e.contains("expected a whole number of milliseconds"), "{e}");
        let e = serde_json::from_str::<Ip>("\"0.0.0.0:80\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "invalid value: string \"0.0.0.0:80\", expected an address without a port"
            ),
            "{e}"
        );
        let e = serde_json::from_str::<Socket>("\"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected ADDR:PORT such as"), "{e}");
        let e = serde_json::from_str::<FileName>("\"\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected a file name"), "{e}");
    }

    #[test]
    fn durations_in_words() {
        let ms = Duration::from_millis;
        for (d, text) in [
            (ms(0), "0 ms"),
            (Duration::from_nanos(10), "0 ms"),
            (ms(250), "250 ms"),
            (ms(1000), "1 s"),
            (ms(1500), "1.5 s"),
            (ms(2050), "2.05 s"),
            (Duration::from_secs(30), "30 s"),
        ] {
            assert_eq!(duration_text(d), text);
        }
    }
}
