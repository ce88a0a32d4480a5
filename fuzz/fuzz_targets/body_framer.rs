//! The body framer, driven as the proxy drives it, in both directions (the
//! same framer reads a client's request body and a backend's response body).
//!
//! Input: `[mode, len_lo, len_hi, split_seed, body...]`. `mode & 3` picks
//! the framing (0, 1: chunked; 2: Content-Length `len`; 3: until close),
//! `mode & 4` de-chunks (payload mode, for HTTP/1.0 clients), `split_seed`
//! cuts the body into the pieces a socket could deliver.
//!
//! Invariants:
//! - fed in pieces, the framer forwards the same bytes, ends at the same
//!   offset and fails with the same error as fed the body whole;
//! - the forwarded output is accepted by a fresh framer, ends exactly at its
//!   own end and comes back unchanged (forwarded framing is a fixed point),
//!   and an independent strict reader finds canonical chunk lines in it;
//! - the payload of the input and of the forwarded output are the same, and
//!   payload mode delivers exactly that payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use load_balancer::http1::{BodyFramer, BodyKind, FramingError};

/// What the proxy would have done with one message body.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Every byte forwarded.
    output: Vec<u8>,
    /// Input bytes that belong to the body, when its end was found.
    end: Option<usize>,
    error: Option<FramingError>,
}

/// Feeds `input` in the pieces `cuts` gives, as the proxy does: forward
/// `buf[..out]`, drop `buf[..used]`, keep the tail for the next read.
fn drive(kind: BodyKind, input: &[u8], dechunk: bool, mut cuts: impl FnMut() -> usize) -> Outcome {
    let mut f = BodyFramer::new(kind);
    let mut o = Outcome {
        output: Vec::new(),
        end: f.is_done().then_some(0),
        error: None,
    };
    let (mut fed, mut buf) = (0, Vec::new());
    while o.end.is_none() && fed < input.len() {
        let n = cuts().min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + n]);
        fed += n;
        loop {
            let before = buf.len();
            let r = match f.reframe(&mut buf, dechunk) {
                Ok(r) => r,
                Err(e) => {
                    o.error = Some(e);
                    return o;
                }
            };
            assert!(
                r.out <= r.used && r.used <= before,
                "out {} used {} of {before}",
                r.out,
                r.used
            );
            o.output.extend_from_slice(&buf[..r.out]);
            buf.drain(..r.used);
            if r.done {
                o.end = Some(fed - buf.len());
                break;
            }
            if r.used == 0 || buf.is_empty() {
                break;
            }
        }
    }
    o
}

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, lo, hi, seed], body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let kind = match mode & 3 {
        0 | 1 => BodyKind::Chunked,
        2 => match u64::from(u16::from_le_bytes([lo, hi])) {
            0 => BodyKind::None,
            n => BodyKind::Length(n),
        },
        _ => BodyKind::UntilClose,
    };
    let dechunk = mode & 4 != 0;

    let whole = drive(kind, body, dechunk, || usize::MAX);
    let mut rng = u32::from(seed) | 0x100;
    let limit = if seed & 0x80 != 0 { 64 } else { 8 };
    let pieces = drive(kind, body, dechunk, || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        1 + (rng % limit) as usize
    });
    let bytewise = drive(kind, body, dechunk, || 1);
    let shown = || {
        format!(
            "{kind:?} dechunk {dechunk} {:?}",
            String::from_utf8_lossy(body)
        )
    };
    if whole.error.is_some() || pieces.error.is_some() {
        assert_eq!(whole.error, pieces.error, "error, pieces\n{}", shown());
        assert_eq!(whole.error, bytewise.error, "error, bytewise\n{}", shown());
        return;
    }
    assert_eq!(whole, pieces, "pieces\n{}", shown());
    assert_eq!(whole, bytewise, "bytewise\n{}", shown());

    if dechunk {
        // Payload mode delivers what pass-through framing carries.
        let framed = drive(kind, body, false, || usize::MAX);
        assert_eq!(framed.end, whole.end, "{}", shown());
        let payload = drive(kind, &framed.output, true, || usize::MAX);
        assert_eq!(payload.output, whole.output, "payload\n{}", shown());
        return;
    }
    let Some(_) = whole.end.or((kind == BodyKind::UntilClose).then_some(0)) else {
        return;
    };
    // The forwarded output is itself a complete, canonical body.
    let out = &whole.output;
    let again = drive(kind, out, false, || usize::MAX);
    assert_eq!(again.error, None, "output refused\n{}", shown());
    assert_eq!(&again.output, out, "output not a fixed point\n{}", shown());
    if whole.end.is_some() {
        assert_eq!(again.end, Some(out.len()), "output end\n{}", shown());
    }
    let payload_in = drive(kind, body, true, || usize::MAX);
    if kind == BodyKind::Chunked && whole.end.is_some() {
        // Any strict reader takes the forwarded body the same way.
        let read = lb_fuzz::read_canonical_chunked(out);
        assert_eq!(
            read,
            Ok((payload_in.output.clone(), out.len())),
            "canonical reading\n{}",
            shown()
        );
    }
    let payload_out = drive(kind, out, true, || usize::MAX);
    assert_eq!(
        payload_in.output,
        payload_out.output,
        "payload\n{}",
        shown()
    );
});
