//! What `--tls-trace` shows of a backend's certificate (subject, issuer,
//! subject alternative names, expiry), read from its DER by a small reader
//! of just that subset of X.509. It verifies nothing (rustls did, unless
//! `-k`) and takes any bytes without panicking: under `-k` they are
//! whatever the peer sent. Only `tls::summary` calls it, behind the flag.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::calendar::{civil_from_days, days_from_civil};

/// What the trace shows of one certificate. Strings are as the
/// certificate has them; [`CertInfo::describe`] escapes them for a log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// RFC 4514 form, most specific first: `CN=api.test, O=Acme, C=DE`.
    pub subject: String,
    pub issuer: String,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
    /// Subject alternative names of other kinds (e-mail, URI, ...).
    pub other_names: usize,
    /// `notAfter`, in seconds since the Unix epoch.
    pub not_after: i64,
}

const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const NUMERIC_STRING: u8 = 0x12;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
const VISIBLE_STRING: u8 = 0x1a;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// `[0] EXPLICIT Version`, `[1]`/`[2] IMPLICIT UniqueIdentifier`,
/// `[3] EXPLICIT Extensions` in a TBSCertificate.
const VERSION: u8 = 0xa0;
const ISSUER_UID: u8 = 0x81;
const SUBJECT_UID: u8 = 0x82;
const EXTENSIONS: u8 = 0xa3;
/// GeneralName choices (implicit tags).
const SAN_DNS: u8 = 0x82;
const SAN_IP: u8 = 0x87;
/// id-ce-subjectAltName, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// Reads a certificate; `None` if it is not DER of the X.509 shape.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let mut whole = Der(der);
    let cert = whole.expect(SEQUENCE)?;
    if !whole.is_empty() {
        return None; // a certificate is one element, nothing after it
    }
    let mut tbs = Der(Der(cert).expect(SEQUENCE)?);
    tbs.optional(VERSION);
    tbs.expect(INTEGER)?;
    tbs.expect(SEQUENCE)?; // signature algorithm
    let issuer = name(tbs.expect(SEQUENCE)?)?;
    let mut validity = Der(tbs.expect(SEQUENCE)?);
    validity.next()?; // notBefore
    let not_after = time(validity.next()?)?;
    let subject = name(tbs.expect(SEQUENCE)?)?;
    tbs.expect(SEQUENCE)?; // subjectPublicKeyInfo
    tbs.optional(ISSUER_UID);
    tbs.optional(SUBJECT_UID);
    let mut info = CertInfo {
        subject,
        issuer,
        dns_names: Vec::new(),
        ip_addrs: Vec::new(),
        other_names: 0,
        not_after,
    };
    if let Some(extensions) = tbs.optional(EXTENSIONS) {
        let mut extensions = Der(Der(extensions).expect(SEQUENCE)?);
        while !extensions.is_empty() {
            let mut extension = Der(extensions.expect(SEQUENCE)?);
            let oid = extension.expect(OID)?;
            extension.optional(BOOLEAN); // critical
            let value = extension.expect(OCTET_STRING)?;
            if oid == SAN_OID {
                alt_names(value, &mut info)?;
            }
        }
    }
    Some(info)
}

impl CertInfo {
    /// `subject CN=a; issuer CN=b; SAN DNS:a, IP:10.0.0.1; expires
    /// 2027-01-31 (in 365 days)`, every certificate string escaped so that
    /// no byte of it can break or forge a log line.
    pub fn describe(&self, now: i64) -> String {
        let dn = |s: &str| match s.is_empty() {
            true => "(empty)".to_string(),
            false => s.to_string(),
        };
        let mut sans: Vec<String> = self
            .dns_names
            .iter()
            .map(|n| format!("DNS:{}", escape(n)))
            .collect();
        sans.extend(self.ip_addrs.iter().map(|ip| format!("IP:{ip}")));
        if self.other_names > 0 {
            sans.push(format!("{} other", self.other_names));
        }
        let sans = match sans.is_empty() {
            true => "none".to_string(),
            false => sans.join(", "),
        };
        let (y, m, d) = civil_from_days(self.not_after.div_euclid(86_400));
        let left = self.not_after.saturating_sub(now);
        let expiry = match left >= 0 {
            true => format!(
                "expires {y:04}-{m:02}-{d:02} (in {} days)",
                left.div_euclid(86_400)
            ),
            false => format!(
                "expired {y:04}-{m:02}-{d:02} ({} days ago)",
                left.saturating_neg().div_euclid(86_400)
            ),
        };
        format!(
            "subject {}; issuer {}; SAN {sans}; {expiry}",
            dn(&self.subject),
            dn(&self.issuer)
        )
    }
}

/// One DER element reader over a slice. Only what certificates use:
/// single-byte tags, definite lengths of at most 4 bytes.
#[derive(Clone, Copy)]
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The next element's tag and contents.
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None; // high tag numbers: not in a certificate's fields we read
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = match first {
            0..=0x7f => (usize::from(first), rest),
            0x81..=0x84 => {
                let n = usize::from(first & 0x7f);
                if rest.len() < n {
                    return None;
                }
                let (bytes, rest) = rest.split_at(n);
                let len = bytes.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
                (usize::try_from(len).ok()?, rest)
            }
            // Indefinite (BER, not DER) or absurd lengths.
            _ => return None,
        };
        if rest.len() < len {
            return None;
        }
        let (contents, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, contents))
    }

    /// The next element's contents, if it has tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next()? {
            (t, contents) if t == tag => Some(contents),
            _ => None,
        }
    }

    /// The next element's contents if it has tag `tag`, else nothing is
    /// consumed.
    fn optional(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.0.first() {
            Some(&t) if t == tag => self.next().map(|(_, contents)| contents),
            _ => None,
        }
    }
}

/// A Name (RDNSequence) in RFC 4514 order: the last RDN first, the
/// attributes of a multi-valued RDN joined by `+`.
fn name(rdns: &[u8]) -> Option<String> {
    let mut rdns = Der(rdns);
    let mut parts = Vec::new();
    while !rdns.is_empty() {
        let mut set = Der(rdns.expect(SET)?);
        let mut rdn = String::new();
        while !set.is_empty() {
            let mut attribute = Der(set.expect(SEQUENCE)?);
            let oid = attribute.expect(OID)?;
            let before = attribute.0;
            let (tag, value) = attribute.next()?;
            let whole = &before[..before.len() - attribute.0.len()];
            if !rdn.is_empty() {
                rdn.push('+');
            }
            attribute_type(&mut rdn, oid)?;
            rdn.push('=');
            match string(tag, value) {
                Some(text) => rdn.push_str(&escape_value(&text)),
                // RFC 4514: a value of another type is its DER in hex.
                None => {
                    rdn.push('#');
                    for b in whole {
                        let _ = write!(rdn, "{b:02x}");
                    }
                }
            }
        }
        parts.push(rdn);
    }
    parts.reverse();
    Some(parts.join(", "))
}

/// The short names RFC 4514 and OpenSSL use; others in dotted form.
fn attribute_type(out: &mut String, oid: &[u8]) -> Option<()> {
    let short = match oid {
        [0x55, 0x04, 3] => "CN",
        [0x55, 0x04, 5] => "serialNumber",
        [0x55, 0x04, 6] => "C",
        [0x55, 0x04, 7] => "L",
        [0x55, 0x04, 8] => "ST",
        [0x55, 0x04, 9] => "STREET",
        [0x55, 0x04, 10] => "O",
        [0x55, 0x04, 11] => "OU",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID",
        [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC",
        [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress",
        _ => return dotted(out, oid),
    };
    out.push_str(short);
    Some(())
}

/// An OID in dotted-decimal form.
fn dotted(out: &mut String, oid: &[u8]) -> Option<()> {
    if oid.last()? & 0x80 != 0 {
        return None;
    }
    let mut arcs = Vec::new();
    let mut arc = 0u64;
    for &b in oid {
        if arc > u64::MAX >> 7 {
            return None;
        }
        arc = (arc << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(arc);
            arc = 0;
        }
    }
    let first = arcs[0];
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let _ = write!(out, "{a}.{b}");
    for arc in &arcs[1..] {
        let _ = write!(out, ".{arc}");
    }
    Some(())
}

/// The text of a directory string; `None` for a type that is not one.
fn string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        UTF8_STRING => Some(String::from_utf8_lossy(bytes).into_owned()),
        // ASCII subsets; Teletex is taken as Latin-1, as most readers do.
        PRINTABLE_STRING | IA5_STRING | NUMERIC_STRING | VISIBLE_STRING | TELETEX_STRING => {
            Some(bytes.iter().map(|&b| char::from(b)).collect())
        }
        BMP_STRING if bytes.len().is_multiple_of(2) => {
            let units = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            Some(
                char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect(),
            )
        }
        UNIVERSAL_STRING if bytes.len().is_multiple_of(4) => Some(
            bytes
                .chunks_exact(4)
                .map(|q| {
                    char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]]))
                        .unwrap_or(char::REPLACEMENT_CHARACTER)
                })
                .collect(),
        ),
        _ => None,
    }
}

/// The subjectAltName extension's DNS names and IP addresses.
fn alt_names(value: &[u8], info: &mut CertInfo) -> Option<()> {
    let mut names = Der(Der(value).expect(SEQUENCE)?);
    while !names.is_empty() {
        match names.next()? {
            (SAN_DNS, dns) => info
                .dns_names
                .push(dns.iter().map(|&b| char::from(b)).collect()),
            (SAN_IP, ip) => match <[u8; 4]>::try_from(ip) {
                Ok(v4) => info.ip_addrs.push(IpAddr::V4(Ipv4Addr::from(v4))),
                Err(_) => match <[u8; 16]>::try_from(ip) {
                    Ok(v6) => info.ip_addrs.push(IpAddr::V6(Ipv6Addr::from(v6))),
                    Err(_) => info.other_names += 1,
                },
            },
            _ => info.other_names += 1,
        }
    }
    Some(())
}

/// UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// DER forms, as seconds since the Unix epoch.
fn time((tag, text): (u8, &[u8])) -> Option<i64> {
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 13) => {
            // RFC 5280: YY < 50 is 20YY.
            let yy = digits(&text[..2])?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        (GENERALIZED_TIME, 15) => (digits(&text[..4])?, &text[4..]),
        _ => return None,
    };
    if rest[10] != b'Z' {
        return None;
    }
    let [month, day, hour, minute, second] = [0, 2, 4, 6, 8].map(|at| digits(&rest[at..at + 2]));
    let (month, day) = (month?, day?);
    let (hour, minute, second) = (hour?, minute?, second?);
    let valid = (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn digits(text: &[u8]) -> Option<i64> {
    text.iter().try_fold(0i64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
    })
}

/// An attribute value escaped as RFC 4514 §2.4 asks (`,+"\<>;`, a leading
/// `#` or space, a trailing space), and with [`escape`]'s rule.
fn escape_value(text: &str) -> String {
    let last = text.chars().count().saturating_sub(1);
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else {
            push_safe(&mut out, c);
        }
    }
    out
}

/// Text from a peer made safe for one log line: control characters, line
/// and paragraph separators and bidi overrides become `\XX` escapes of
/// their UTF-8 bytes, as RFC 4514 writes non-printable characters.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_safe(&mut out, c);
    }
    out
}

fn push_safe(out: &mut String, c: char) {
    let unsafe_in_a_line = c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        );
    if unsafe_in_a_line {
        let mut utf8 = [0u8; 4];
        for b in c.encode_utf8(&mut utf8).bytes() {
            let _ = write!(out, "\\{b:02X}");
        }
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, SanType, date_time_ymd,
    };

    fn make(dn: DistinguishedName, sans: Vec<SanType>, not_after: (i32, u8, u8)) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_what_rcgen_wrote() {
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CountryName,
            DnValue::PrintableString("DE".try_into().unwrap()),
        );
        dn.push(DnType::OrganizationName, "Acme, Inc.");
        dn.push(
            DnType::OrganizationalUnitName,
            DnValue::BmpString("Ops \u{e9}".try_into().unwrap()),
        );
        dn.push(DnType::CommonName, "api.test");
        dn.push(DnType::CustomDnType(vec![1, 2, 3, 4]), "x");
        let sans = vec![
            SanType::DnsName("api.test".try_into().unwrap()),
            SanType::DnsName("*.api.test".try_into().unwrap()),
            SanType::IpAddress("10.0.0.1".parse().unwrap()),
            SanType::IpAddress("::1".parse().unwrap()),
            SanType::Rfc822Name("ops@api.test".try_into().unwrap()),
        ];
        let info = parse(&make(dn, sans, (2031, 7, 15))).expect("parses");
        assert_eq!(
            info.subject,
            "1.2.3.4=x, CN=api.test, OU=Ops \u{e9}, O=Acme\\, Inc., C=DE"
        );
        assert_eq!(info.issuer, info.subject, "self-signed");
        assert_eq!(info.dns_names, ["api.test", "*.api.test"]);
        assert_eq!(
            info.ip_addrs,
            [
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        assert_eq!(info.other_names, 1);
        assert_eq!(info.not_after, days_from_civil(2031, 7, 15) * 86_400);
        let now = days_from_civil(2031, 7, 5) * 86_400 + 3600;
        assert_eq!(
            info.describe(now),
            "subject 1.2.3.4=x, CN=api.test, OU=Ops \u{e9}, O=Acme\\, Inc., C=DE; \
             issuer 1.2.3.4=x, CN=api.test, OU=Ops \u{e9}, O=Acme\\, Inc., C=DE; \
             SAN DNS:api.test, DNS:*.api.test, IP:10.0.0.1, IP:::1, 1 other; \
             expires 2031-07-15 (in 9 days)"
        );
    }

    #[test]
    fn generalized_time_past_2049_empty_names_and_expired() {
        let info = parse(&make(DistinguishedName::new(), vec![], (2051, 2, 28))).unwrap();
        assert_eq!(info.not_after, days_from_civil(2051, 2, 28) * 86_400);
        assert_eq!(
            info.describe(days_from_civil(2051, 3, 30) * 86_400),
            "subject (empty); issuer (empty); SAN none; expired 2051-02-28 (30 days ago)"
        );
    }

    #[test]
    fn peer_strings_cannot_break_a_log_line() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, " evil\nCN=forged\u{202e} ");
        let sans = vec![SanType::DnsName("a\u{7}b".to_string().try_into().unwrap())];
        let info = parse(&make(dn, sans, (2030, 1, 1))).unwrap();
        let line = info.describe(0);
        assert!(
            line.contains("CN=\\ evil\\0ACN=forged\\E2\\80\\AE\\ ;"),
            "{line}"
        );
        assert!(line.contains("DNS:a\\07b"), "{line}");
        assert!(!line.chars().any(char::is_control));
    }

    #[test]
    fn asn1_times() {
        assert_eq!(
            time((UTC_TIME, b"491231235959Z")),
            Some(days_from_civil(2049, 12, 31) * 86_400 + 86_399)
        );
        assert_eq!(
            time((UTC_TIME, b"500101000000Z")),
            Some(days_from_civil(1950, 1, 1) * 86_400)
        );
        for bad in [
            &b"20300101000000Z"[..],
            b"3001010000Z",
            b"301301000000Z",
            b"300101000000+",
        ] {
            assert_eq!(time((UTC_TIME, bad)), None, "{bad:?}");
        }
        assert_eq!(
            time((GENERALIZED_TIME, b"99991231235959Z")),
            Some(days_from_civil(9999, 12, 31) * 86_400 + 86_399)
        );
    }

    #[test]
    fn oids_in_dotted_form() {
        let mut out = String::new();
        dotted(&mut out, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]).unwrap();
        assert_eq!(out, "1.2.840.113549");
        let mut out = String::new();
        dotted(&mut out, &[0x88, 0x37]).unwrap();
        assert_eq!(out, "2.999");
        assert_eq!(dotted(&mut String::new(), &[]), None);
        assert_eq!(dotted(&mut String::new(), &[0x86]), None);
        let mut huge = vec![0xff; 11];
        huge.push(0x7f);
        assert_eq!(dotted(&mut String::new(), &huge), None, "arc past u64");
    }

    #[test]
    fn truncated_or_mangled_input_never_panics() {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "api.test");
        let der = make(
            dn,
            vec![SanType::DnsName("api.test".try_into().unwrap())],
            (2030, 1, 1),
        );
        assert!(parse(&der).is_some());
        for cut in 0..der.len() {
            assert_eq!(parse(&der[..cut]), None, "cut at {cut}");
        }
        for at in 0..der.len() {
            for flip in [0x01, 0x80, 0xff] {
                let mut bad = der.clone();
                bad[at] ^= flip;
                let _ = parse(&bad).map(|c| c.describe(0));
            }
        }
        let mut trailing = der.clone();
        trailing.push(0);
        assert_eq!(parse(&trailing), None, "bytes after the certificate");
        // Indefinite length (BER) and a 5-byte length are refused.
        assert_eq!(parse(&[0x30, 0x80, 0, 0]), None);
        assert_eq!(parse(&[0x30, 0x85, 0, 0, 0, 0, 1, 0]), None);
    }
}
