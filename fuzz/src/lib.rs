//! Helpers shared by the fuzz targets: reading a rewritten head back as
//! field lines, the framing-field invariant, absolute-form targets, and a
//! strict chunked-body reader.

/// The field lines of a head the proxy wrote (CRLF line ends, which the
/// rewrite always uses), without the start line and the final empty line.
pub fn field_lines(head: &[u8]) -> Vec<(&[u8], &[u8])> {
    // Empty lines before the start line are allowed (RFC 9112 §2.2).
    let mut lines = head
        .split(|&b| b == b'\n')
        .skip_while(|l| l.is_empty() || *l == b"\r")
        .skip(1);
    let mut fields = Vec::new();
    for line in &mut lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let value = line.get(colon + 1..).unwrap_or(b"");
        fields.push((&line[..colon], trim(value)));
    }
    fields
}

pub fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b" \t".contains(b))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b" \t".contains(b))
        .map_or(start, |e| e + 1);
    &s[start..end]
}

/// The values of every field called `name` (case-insensitive).
pub fn values<'a>(fields: &[(&'a [u8], &'a [u8])], name: &str) -> Vec<&'a [u8]> {
    fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|&(_, v)| v)
        .collect()
}

/// The invariant every forwarded head keeps: at most one framing field, and
/// a `Content-Length` that is one plain number (a list like `5, 5` is two
/// values for the next hop to reconcile). Panics with the head on failure.
pub fn assert_single_framing(head: &[u8]) {
    let fields = field_lines(head);
    let lengths = values(&fields, "content-length");
    let codings = values(&fields, "transfer-encoding");
    let shown = || String::from_utf8_lossy(head).into_owned();
    assert!(
        lengths.len() + codings.len() <= 1,
        "forwarded head has {} Content-Length and {} Transfer-Encoding lines:\n{}",
        lengths.len(),
        codings.len(),
        shown()
    );
    if let Some(v) = lengths.first() {
        assert!(
            !v.is_empty() && v.iter().all(u8::is_ascii_digit),
            "forwarded Content-Length is not one number: {:?}\n{}",
            String::from_utf8_lossy(v),
            shown()
        );
    }
}

/// The authority and the origin-form of an absolute-form target (RFC 9112
/// §3.2.2), `None` for any other form.
pub fn absolute_form(target: &[u8]) -> Option<(&[u8], Vec<u8>)> {
    let lower = target[..target.len().min(8)].to_ascii_lowercase();
    let rest = if lower.starts_with(b"http://") {
        &target[7..]
    } else if lower.starts_with(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let path_start = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(path_start);
    let mut origin = Vec::new();
    if !path.starts_with(b"/") {
        origin.push(b'/');
    }
    origin.extend_from_slice(path);
    Some((authority, origin))
}

/// A second, independent reading of a chunked body the framer forwarded,
/// held to the canonical form the proxy writes: size lines of lowercase hex
/// without leading zeros or extensions, CRLF after each chunk, trailers
/// that are field lines (`token ":" value`, no control bytes but HTAB),
/// then the empty line. Returns the payload and the length of the body.
pub fn read_canonical_chunked(body: &[u8]) -> Result<(Vec<u8>, usize), String> {
    let line_at = |at: usize| -> Result<&[u8], String> {
        let rest = body.get(at..).unwrap_or(b"");
        let end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| format!("no CRLF after offset {at}"))?;
        Ok(&rest[..end])
    };
    let mut payload = Vec::new();
    let mut at = 0;
    loop {
        let line = line_at(at)?;
        let canonical = !line.is_empty()
            && line.len() <= 16
            && line
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && (line == b"0" || line[0] != b'0');
        if !canonical {
            return Err(format!("size line {:?}", String::from_utf8_lossy(line)));
        }
        let size = u64::from_str_radix(std::str::from_utf8(line).unwrap_or("x"), 16)
            .map_err(|e| e.to_string())?;
        at += line.len() + 2;
        if size == 0 {
            break;
        }
        let end = usize::try_from(size)
            .ok()
            .and_then(|n| at.checked_add(n))
            .filter(|&end| end <= body.len())
            .ok_or("chunk past the end")?;
        payload.extend_from_slice(&body[at..end]);
        if body.get(end..end + 2) != Some(b"\r\n") {
            return Err(format!("no CRLF after the chunk at {at}"));
        }
        at = end + 2;
    }
    loop {
        let line = line_at(at)?;
        at += line.len() + 2;
        if line.is_empty() {
            return Ok((payload, at));
        }
        let name = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("trailer without ':'")?;
        let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
        let value_ok = line[name + 1..]
            .iter()
            .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        if name == 0 || !line[..name].iter().all(token) || !value_ok {
            return Err(format!("trailer {:?}", String::from_utf8_lossy(line)));
        }
    }
}
