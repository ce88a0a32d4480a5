//! The `-b <SPEC>` grammar (`upstream::parse_spec`). Input: one SPEC.
//!
//! Invariants: no panic; an accepted backend is consistent (port and weight
//! ≥ 1, TLS for port 443, sticky id derived from the label) and its display
//! form — the label, with `https://` when TLS is not implied by the port and
//! `,weight=N` when not the default — parses back to the same backend, also
//! through the config file's `backend_from_parts`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use load_balancer::upstream::{self, BackendId, HostHeader};

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = std::str::from_utf8(data) else {
        return;
    };
    let id = BackendId(3);
    let Ok(b) = upstream::parse_spec(spec, id) else {
        return;
    };
    assert!(b.port != 0 && b.weight >= 1, "{spec:?} → {b:?}");
    assert!(b.tls || b.port != 443, "{spec:?} → {b:?}");
    assert_eq!(b.sticky_id, upstream::sticky_id(&b.label), "{spec:?}");
    assert_eq!((b.id, b.host_header), (id, HostHeader::Auto));

    let scheme = if b.tls && b.port != 443 {
        "https://"
    } else {
        ""
    };
    let mut shown = format!("{scheme}{}", b.label);
    if b.weight != upstream::DEFAULT_WEIGHT {
        shown.push_str(&format!(",weight={}", b.weight));
    }
    let again = upstream::parse_spec(&shown, id);
    assert_eq!(again.as_ref(), Ok(&b), "{spec:?} shown as {shown:?}");

    let host = format!("{scheme}{}", b.host);
    let parts = upstream::backend_from_parts(&host, b.port, b.weight, HostHeader::Auto, id);
    assert_eq!(parts.as_ref(), Ok(&b), "{spec:?} as parts {host:?}");
});
