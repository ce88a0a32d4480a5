use super::*;

/// Feeds `input` in pieces of `piece` bytes the way the proxy does: the
/// unconsumed tail stays in front of the next piece. Returns what went out
/// and how many input bytes the body took, once it is done.
fn run(
    kind: BodyKind,
    input: &[u8],
    piece: usize,
    dechunk: bool,
) -> Result<(Vec<u8>, Option<usize>), FramingError> {
    let mut f = BodyFramer::new(kind);
    let (mut out, mut pending, mut fed) = (Vec::new(), Vec::new(), 0);
    loop {
        let r = f.reframe(&mut pending, dechunk)?;
        assert!(r.out <= r.used && r.used <= pending.len(), "{r:?}");
        out.extend_from_slice(&pending[..r.out]);
        pending.drain(..r.used);
        if r.done {
            return Ok((out, Some(fed - pending.len())));
        }
        if fed == input.len() {
            return Ok((out, None));
        }
        let end = (fed + piece).min(input.len());
        pending.extend_from_slice(&input[fed..end]);
        fed = end;
    }
}

/// Payload, trailer lines, and how many input bytes the body took.
type H2Framed = (Vec<u8>, Vec<u8>, Option<usize>);

/// As [`run`], for an HTTP/2 stream: the payload and the trailer lines
/// apart, checking that each call's trailer bytes end its output.
fn run_h2(input: &[u8], piece: usize) -> Result<H2Framed, FramingError> {
    let mut f = BodyFramer::new(BodyKind::Chunked);
    let (mut payload, mut trailers, mut pending, mut fed) = (vec![], vec![], vec![], 0);
    loop {
        let r = f.reframe_to(&mut pending, Out::DataThenTrailers)?;
        assert!(r.trailers <= r.out && r.out <= r.used, "{r:?}");
        let data_end = r.out - r.trailers;
        assert!(
            trailers.is_empty() || data_end == 0,
            "payload after trailers"
        );
        payload.extend_from_slice(&pending[..data_end]);
        trailers.extend_from_slice(&pending[data_end..r.out]);
        pending.drain(..r.used);
        if r.done {
            return Ok((payload, trailers, Some(fed - pending.len())));
        }
        if fed == input.len() {
            return Ok((payload, trailers, None));
        }
        let end = (fed + piece).min(input.len());
        pending.extend_from_slice(&input[fed..end]);
        fed = end;
    }
}

fn whole(input: &[u8]) -> Result<(Vec<u8>, Option<usize>), FramingError> {
    run(BodyKind::Chunked, input, input.len().max(1), false)
}

const CANONICAL: &[u8] = b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";

#[test]
fn canonical_chunked_goes_out_as_it_came_whatever_the_pieces() {
    let mut input = CANONICAL.to_vec();
    input.extend_from_slice(b"NEXT");
    for piece in [1, 2, 3, 7, 64] {
        assert_eq!(
            run(BodyKind::Chunked, &input, piece, false),
            Ok((CANONICAL.to_vec(), Some(CANONICAL.len()))),
            "piece {piece}"
        );
    }
}

#[test]
fn size_lines_are_written_anew() {
    let input = b"005;a=1;b=\"x;y\"\r\nhello\r\nA ; c\r\n0123456789\r\n000\r\n\r\n";
    for piece in [1, 5, 200] {
        assert_eq!(
            run(BodyKind::Chunked, input, piece, false),
            Ok((
                b"5\r\nhello\r\na\r\n0123456789\r\n0\r\n\r\n".to_vec(),
                Some(input.len())
            )),
            "piece {piece}"
        );
    }
}

#[test]
fn dechunk_keeps_only_the_payload() {
    for piece in [1, 4, 100] {
        assert_eq!(
            run(BodyKind::Chunked, CANONICAL, piece, true),
            Ok((b"hello world".to_vec(), Some(CANONICAL.len())))
        );
    }
}

#[test]
fn framing_and_routing_trailers_are_dropped_valid_ones_kept() {
    let input = b"0\r\nContent-Length: 5\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\
                  Host: x\r\nConnection: close\r\nX-B:\t2 \r\n\r\n";
    assert_eq!(
        whole(input),
        Ok((
            b"0\r\nX-A: 1\r\nX-B:\t2 \r\n\r\n".to_vec(),
            Some(input.len())
        ))
    );
}

#[test]
fn refuses_what_does_not_parse() {
    use FramingError::*;
    let cases: &[(&[u8], FramingError)] = &[
        (b"x\r\n", BadChunkSize),
        (b"\r\n", BadChunkSize),
        (b"-1\r\n", BadChunkSize),
        (b"+1\r\n", BadChunkSize),
        (b"0x1\r\n", BadChunkExtension),
        (b"11111111111111111\r\n", BadChunkSize),
        (b"5\nhello\r\n", BadChunkSize),
        (b"2;\r\nab\r\n", BadChunkExtension),
        (b"a \r\n", BadChunkExtension),
        (b"5\t\r\n", BadChunkExtension),
        (b"5 x\r\n", BadChunkExtension),
        (b"5;a=\"b\r\n", BadChunkExtension),
        (b"5;a=\r\n", BadChunkExtension),
        (b"5;a\x01\r\n", BadChunkExtension),
        (b"5;a=\"\\\x01\"\r\n", BadChunkExtension),
        (b"5\r\nhelloX\r\n", BadChunkLine),
        (b"5\r\nhello\rX", BadChunkLine),
        (b"5\r\nhello\n", BadChunkLine),
        (b"0\r\nfoo\r\n\r\n", BadTrailer),
        (b"0\r\nbad name: v\r\n\r\n", BadTrailer),
        (b"0\r\nGET /x HTTP/1.1\r\n\r\n", BadTrailer),
        (b"0\r\n folded\r\n\r\n", BadTrailer),
        (b"0\r\n: v\r\n\r\n", BadTrailer),
        (b"0\r\nX: a\x00b\r\n\r\n", BadTrailer),
        (b"0\r\nX: 1\n\r\n", BadTrailer),
        (b"0\r\nX: 1\r\n\n", BadTrailer),
    ];
    for (input, want) in cases {
        for piece in [1, 64] {
            assert_eq!(
                run(BodyKind::Chunked, input, piece, false).err(),
                Some(*want),
                "{:?} in pieces of {piece}",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn lines_are_bounded() {
    let mut ext = b"5;".to_vec();
    ext.resize(MAX_CHUNK_LINE + 10, b'a');
    assert_eq!(whole(&ext).err(), Some(FramingError::BadChunkExtension));
    let mut trailers = b"0\r\nX: ".to_vec();
    trailers.resize(MAX_HEAD + 10, b'a');
    assert_eq!(whole(&trailers).err(), Some(FramingError::TrailersTooLarge));
    // Just under the bounds is fine.
    let mut ext = b"5;".to_vec();
    ext.resize(MAX_CHUNK_LINE, b'a');
    ext.extend_from_slice(b"\r\nhello\r\n0\r\n\r\n");
    assert_eq!(
        whole(&ext).map(|r| r.0),
        Ok(b"5\r\nhello\r\n0\r\n\r\n".to_vec())
    );
}

#[test]
fn length_and_close_delimited_pass_through() {
    assert_eq!(
        run(BodyKind::Length(3), b"abcdef", 2, false),
        Ok((b"abc".to_vec(), Some(3)))
    );
    assert_eq!(
        run(BodyKind::Length(9), b"abc", 2, false),
        Ok((b"abc".to_vec(), None))
    );
    assert_eq!(
        run(BodyKind::UntilClose, b"abc", 2, false),
        Ok((b"abc".to_vec(), None))
    );
    assert!(BodyFramer::new(BodyKind::None).is_done());
}

#[test]
fn size_lines_in_hex() {
    let mut line = [0u8; 18];
    for (size, want) in [
        (0u64, "0"),
        (1, "1"),
        (0xa, "a"),
        (0x10, "10"),
        (0xdead_beef, "deadbeef"),
        (u64::MAX, "ffffffffffffffff"),
    ] {
        let n = size_line(size, &mut line);
        assert_eq!(&line[..n], format!("{want}\r\n").as_bytes());
    }
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A chunked body with random sizes, spelled with every legal variation
/// (leading zeros, upper case, extensions, whitespace before `;`, quoted
/// values, trailers), and what it must come out as.
/// The last is the forwarded trailer lines.
fn random_body(rng: &mut Rng) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let (mut input, mut canonical, mut payload) = (Vec::new(), Vec::new(), Vec::new());
    let mut trailers = Vec::new();
    let exts: [&[u8]; 5] = [b"", b";a", b" ;a=b", b";a=\"q;\\\"x\"", b"\t; n = v ;m"];
    for _ in 0..rng.below(5) {
        let size = 1 + rng.below(300);
        let hex = match rng.below(3) {
            0 => format!("{size:x}"),
            1 => format!("{size:X}"),
            _ => format!("00{size:x}"),
        };
        input.extend_from_slice(hex.as_bytes());
        input.extend_from_slice(exts[rng.below(exts.len())]);
        input.extend_from_slice(b"\r\n");
        canonical.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        let data: Vec<u8> = (0..size).map(|_| rng.next() as u8).collect();
        for out in [&mut input, &mut canonical] {
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
        }
        payload.extend_from_slice(&data);
    }
    input.extend_from_slice(if rng.below(2) == 0 {
        b"0\r\n"
    } else {
        b"000;x=y\r\n"
    });
    canonical.extend_from_slice(b"0\r\n");
    for _ in 0..rng.below(3) {
        let (line, kept): (&[u8], bool) = match rng.below(3) {
            0 => (b"X-Sum: abc\r\n", true),
            1 => (b"content-length: 4\r\n", false),
            _ => (b"X-Empty:\r\n", true),
        };
        input.extend_from_slice(line);
        if kept {
            canonical.extend_from_slice(line);
            trailers.extend_from_slice(line);
        }
    }
    input.extend_from_slice(b"\r\n");
    canonical.extend_from_slice(b"\r\n");
    (input, canonical, payload, trailers)
}

#[test]
fn generated_bodies_come_out_canonical_and_canonical_is_a_fixed_point() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..3000 {
        let (mut input, canonical, payload, trailers) = random_body(&mut rng);
        let body_len = input.len();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let piece = 1 + rng.below(40);
        let got = run(BodyKind::Chunked, &input, piece, false);
        assert_eq!(got, Ok((canonical.clone(), Some(body_len))), "case {i}");
        assert_eq!(
            whole(&canonical),
            Ok((canonical.clone(), Some(canonical.len()))),
            "case {i}"
        );
        let got = run(BodyKind::Chunked, &input, piece, true);
        assert_eq!(got, Ok((payload.clone(), Some(body_len))), "case {i}");
        let got = run_h2(&input, piece);
        assert_eq!(got, Ok((payload, trailers, Some(body_len))), "case {i}");
    }
}

#[test]
fn one_changed_byte_is_refused_or_framed_consistently() {
    // Whatever a corrupted body becomes, the framer's verdict must not
    // depend on how the bytes arrive, and what it accepts it emits in the
    // canonical form (a fixed point).
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let bytes: &[u8] = b"\r\n;= \t\"\\0aAgG:x\x00\x7f";
    for i in 0..5000 {
        let (mut input, _, _, _) = random_body(&mut rng);
        let at = rng.below(input.len());
        input[at] = bytes[rng.below(bytes.len())];
        let all = run(BodyKind::Chunked, &input, input.len(), false);
        let piece = 1 + rng.below(16);
        assert_eq!(
            run(BodyKind::Chunked, &input, piece, false),
            all,
            "case {i}: {:?}",
            String::from_utf8_lossy(&input)
        );
        let h2 = run_h2(&input, piece).map(|(_, _, end)| end);
        assert_eq!(h2, all.clone().map(|(_, end)| end), "case {i}: h2 framing");
        if let Ok((out, Some(_))) = all {
            assert_eq!(whole(&out), Ok((out.clone(), Some(out.len()))), "case {i}");
        }
    }
}
