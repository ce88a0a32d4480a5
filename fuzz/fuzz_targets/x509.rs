//! The certificate reader behind `--tls-trace` (`x509::parse`). Input: DER
//! bytes, as a peer may send them under `-k`.
//!
//! Invariants: no panic; an accepted certificate's description, at any
//! time, is one line with no control character (certificate strings are
//! escaped), and its expiry reads back as the notAfter date; any prefix of
//! the input is refused when the whole was accepted (lengths are checked).
#![no_main]

use libfuzzer_sys::fuzz_target;
use load_balancer::x509;

fuzz_target!(|data: &[u8]| {
    let Some(cert) = x509::parse(data) else {
        return;
    };
    for now in [i64::MIN, -1, 0, 1_700_000_000, cert.not_after, i64::MAX] {
        let line = cert.describe(now);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            !line.contains(['\u{2028}', '\u{2029}', '\u{202e}']),
            "{line:?}"
        );
        assert!(line.contains("; expire"), "{line:?}");
    }
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        if cut < data.len() {
            assert_eq!(x509::parse(&data[..cut]), None, "prefix of {cut} bytes");
        }
    }
});
