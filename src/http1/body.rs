//! Body framing (RFC 9112 §6, §7.1): finds where a body ends in a byte
//! stream and re-frames chunked bodies in place, so what travels on is
//! framed by us, never relayed as the sender spelled it.
//!
//! Length and close-delimited bodies pass through untouched. A chunked body
//! goes out with size lines we write (lowercase hex, no leading zeros, no
//! extensions) and only trailer lines that are valid field lines; with
//! `dechunk` (an HTTP/1.0 client) only the payload goes out; for an HTTP/2
//! stream the payload and then the trailer lines, which the caller sends as
//! DATA and a trailing HEADERS frame ([`Out::DataThenTrailers`]). The canonical
//! form is never longer than what it replaces, so the rewrite happens inside
//! the read buffer and canonical input costs no copy at all.
//!
//! The chunked parser is strict (CRLF only, the RFC's chunk-ext grammar,
//! bounded lines): a lenient one is where request smuggling lives.

use super::header::{self, Kind};
use super::{BodyKind, MAX_HEAD};

/// Longest chunk-size line accepted, extensions included; they carry
/// nothing we use, and a bound keeps an incomplete line inside one buffer.
pub const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    BadChunkSize,
    BadChunkExtension,
    BadChunkLine,
    BadTrailer,
    TrailersTooLarge,
}

impl FramingError {
    pub fn reason(self) -> &'static str {
        match self {
            FramingError::BadChunkSize => "invalid chunk size",
            FramingError::BadChunkExtension => "invalid chunk extension",
            FramingError::BadChunkLine => "invalid chunk framing",
            FramingError::BadTrailer => "invalid trailer field",
            FramingError::TrailersTooLarge => "trailer section too large",
        }
    }
}

/// Where a chunked body is. Lines are handled whole: a line not complete
/// yet stays unconsumed until more bytes arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// At the start of a chunk-size line.
    SizeLine,
    /// Inside chunk data.
    Data { remaining: u64 },
    /// The CRLF that ends chunk data.
    DataEnd,
    /// At the start of a trailer line or the final empty line; `total`
    /// bytes of trailer section so far.
    Trailers { total: usize },
}

/// Where the current message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFramer {
    Length { remaining: u64 },
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// What a chunked body becomes on its way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// Chunked again, in canonical form (to an HTTP/1.1 peer).
    Chunked,
    /// The payload alone (to an HTTP/1.0 client).
    Data,
    /// The payload, then the forwarded trailer lines with their CRLFs and
    /// without the final empty line (to an HTTP/2 stream).
    DataThenTrailers,
}

/// The result of one [`BodyFramer::reframe`]: `buf[..out]` is ready to
/// send, `buf[out..used]` is to be dropped, `buf[used..]` is not consumed
/// yet (an incomplete line, or what follows the body once `done`). With
/// [`Out::DataThenTrailers`], the last `trailers` bytes of `buf[..out]` are
/// trailer lines, not payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reframed {
    pub out: usize,
    pub used: usize,
    pub done: bool,
    pub trailers: usize,
}

impl BodyFramer {
    pub fn new(kind: BodyKind) -> BodyFramer {
        match kind {
            BodyKind::None | BodyKind::Length(0) => BodyFramer::Done,
            BodyKind::Length(n) => BodyFramer::Length { remaining: n },
            BodyKind::Chunked => BodyFramer::Chunked(Chunk::SizeLine),
            BodyKind::UntilClose => BodyFramer::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == BodyFramer::Done
    }

    /// Frames the body bytes at the start of `buf`, rewriting them in place
    /// into what travels on (see [`Reframed`]). Call again with the
    /// unconsumed rest and the bytes that arrive after it.
    pub fn reframe(&mut self, buf: &mut [u8], dechunk: bool) -> Result<Reframed, FramingError> {
        let out = if dechunk { Out::Data } else { Out::Chunked };
        self.reframe_to(buf, out)
    }

    /// [`BodyFramer::reframe`] with the output form spelled out.
    pub fn reframe_to(&mut self, buf: &mut [u8], out: Out) -> Result<Reframed, FramingError> {
        match self {
            BodyFramer::Done => Ok(Reframed {
                out: 0,
                used: 0,
                done: true,
                trailers: 0,
            }),
            BodyFramer::UntilClose => Ok(Reframed {
                out: buf.len(),
                used: buf.len(),
                done: false,
                trailers: 0,
            }),
            BodyFramer::Length { remaining } => {
                let n = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= n as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyFramer::Done;
                }
                Ok(Reframed {
                    out: n,
                    used: n,
                    done,
                    trailers: 0,
                })
            }
            BodyFramer::Chunked(state) => {
                let mut w = Writer { buf, r: 0, w: 0 };
                let mut trailers = 0;
                let done = chunked(state, &mut w, out, &mut trailers)?;
                if done {
                    *self = BodyFramer::Done;
                }
                Ok(Reframed {
                    out: w.w,
                    used: w.r,
                    done,
                    trailers,
                })
            }
        }
    }
}

/// In-place rewriting: bytes are read at `r` and the output is written at
/// `w <= r`, so nothing unread is ever overwritten.
struct Writer<'a> {
    buf: &'a mut [u8],
    r: usize,
    w: usize,
}

impl Writer<'_> {
    fn unread(&self) -> &[u8] {
        &self.buf[self.r..]
    }

    /// Passes `n` unread bytes through (a copy only once something before
    /// them was rewritten shorter).
    fn pass(&mut self, n: usize) {
        if self.w != self.r {
            self.buf.copy_within(self.r..self.r + n, self.w);
        }
        self.r += n;
        self.w += n;
    }

    /// Writes `bytes` (no longer than what was read since `w`) and skips
    /// `read` input bytes.
    fn emit(&mut self, bytes: &[u8], read: usize) {
        debug_assert!(self.w + bytes.len() <= self.r + read);
        self.buf[self.w..self.w + bytes.len()].copy_from_slice(bytes);
        self.w += bytes.len();
        self.r += read;
    }

    /// The next line without its CRLF, and its length with it; `None` if
    /// no LF arrived yet. A line that does not end in CRLF is an error.
    fn line(&self, max: usize) -> Result<Option<(usize, usize)>, LineError> {
        let unread = self.unread();
        let window = &unread[..unread.len().min(max + 2)];
        match window.iter().position(|&b| b == b'\n') {
            Some(lf) if lf > 0 && unread[lf - 1] == b'\r' => Ok(Some((lf - 1, lf + 1))),
            Some(_) => Err(LineError::BareLf),
            None if window.len() == max + 2 => Err(LineError::TooLong),
            None => Ok(None),
        }
    }
}

enum LineError {
    BareLf,
    TooLong,
}

/// Runs the chunked state machine over what `w` has unread. `Ok(true)`
/// once the last chunk and the trailer section are through. `trailers`
/// counts the trailer bytes written, for [`Out::DataThenTrailers`].
fn chunked(
    state: &mut Chunk,
    w: &mut Writer<'_>,
    out: Out,
    trailers: &mut usize,
) -> Result<bool, FramingError> {
    use FramingError::*;
    let dechunk = out != Out::Chunked;
    loop {
        match *state {
            Chunk::Data { remaining } => {
                let n = remaining.min(w.unread().len() as u64) as usize;
                if n == 0 {
                    return Ok(false);
                }
                w.pass(n);
                *state = match remaining - n as u64 {
                    0 => Chunk::DataEnd,
                    left => Chunk::Data { remaining: left },
                };
            }
            Chunk::DataEnd => match w.unread() {
                [b'\r', b'\n', ..] => {
                    w.emit(if dechunk { b"" } else { b"\r\n" }, 2);
                    *state = Chunk::SizeLine;
                }
                [] | [b'\r'] => return Ok(false),
                _ => return Err(BadChunkLine),
            },
            Chunk::SizeLine => {
                let (len, with_crlf) = match w.line(MAX_CHUNK_LINE) {
                    Ok(Some(line)) => line,
                    Ok(None) => return Ok(false),
                    Err(LineError::BareLf) => return Err(BadChunkSize),
                    Err(LineError::TooLong) => return Err(BadChunkExtension),
                };
                let size = chunk_size(&w.unread()[..len])?;
                let mut line = [0u8; 18];
                let n = if dechunk {
                    0
                } else {
                    size_line(size, &mut line)
                };
                w.emit(&line[..n], with_crlf);
                *state = match size {
                    0 => Chunk::Trailers { total: 0 },
                    _ => Chunk::Data { remaining: size },
                };
            }
            Chunk::Trailers { total } => {
                let room = MAX_HEAD.saturating_sub(total);
                let (len, with_crlf) = match w.line(room) {
                    Ok(Some(line)) => line,
                    Ok(None) => return Ok(false),
                    Err(LineError::BareLf) => return Err(BadTrailer),
                    Err(LineError::TooLong) => return Err(TrailersTooLarge),
                };
                if len == 0 {
                    w.emit(if dechunk { b"" } else { b"\r\n" }, 2);
                    return Ok(true);
                }
                let forward = trailer_forwarded(&w.unread()[..len])?;
                if forward && out != Out::Data {
                    w.pass(with_crlf);
                    if out == Out::DataThenTrailers {
                        *trailers += with_crlf;
                    }
                } else {
                    w.emit(b"", with_crlf);
                }
                *state = Chunk::Trailers {
                    total: total + with_crlf,
                };
            }
        }
    }
}

/// `chunk-size [ chunk-ext ]` (RFC 9112 §7.1.1): 1 to 16 hex digits, then
/// extensions `*( BWS ";" BWS token [ BWS "=" BWS ( token / quoted-string ) ] )`.
/// Whitespace after the size is allowed only before a `;`.
fn chunk_size(line: &[u8]) -> Result<u64, FramingError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(FramingError::BadChunkSize);
    }
    let size = line[..digits].iter().fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(16).unwrap_or(0);
        acc << 4 | u64::from(d)
    });
    chunk_ext(&line[digits..])?;
    Ok(size)
}

fn chunk_ext(mut s: &[u8]) -> Result<(), FramingError> {
    let bad = FramingError::BadChunkExtension;
    while !s.is_empty() {
        s = skip_bws(s);
        s = s.strip_prefix(b";").ok_or(bad)?;
        s = skip_bws(s);
        let name = token_len(s);
        if name == 0 {
            return Err(bad);
        }
        s = skip_bws(&s[name..]);
        if let Some(rest) = s.strip_prefix(b"=") {
            s = skip_bws(rest);
            let value = match s.first() {
                Some(b'"') => quoted_len(s).ok_or(bad)?,
                _ => token_len(s),
            };
            if value == 0 {
                return Err(bad);
            }
            s = &s[value..];
        }
    }
    Ok(())
}

fn skip_bws(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    &s[n..]
}

fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| super::scan::is_tchar(b)).count()
}

/// Length of the quoted-string at the start of `s` (RFC 9110 §5.6.4).
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let escaped = *s.get(i + 1)?;
                if !is_field_byte(escaped) {
                    return None;
                }
                i += 2;
            }
            b if is_field_byte(b) => i += 1,
            _ => return None,
        }
    }
    None
}

/// HTAB, SP, VCHAR, obs-text: what a field value may hold.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b >= 0x20 && b != 0x7f)
}

/// Writes `size` as a chunk-size line; returns its length.
fn size_line(size: u64, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (16 - size.leading_zeros() as usize / 4).max(1);
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(size >> (4 * i) & 0xf) as usize];
    }
    out[digits..digits + 2].copy_from_slice(b"\r\n");
    digits + 2
}

/// Checks one trailer line (without CRLF) with the rules of a header field
/// line; `Ok(false)` for a valid field that must not travel as a trailer
/// (RFC 9110 §6.5.1: framing, routing, connection control).
fn trailer_forwarded(line: &[u8]) -> Result<bool, FramingError> {
    let bad = FramingError::BadTrailer;
    let name = token_len(line);
    if name == 0 || line.get(name) != Some(&b':') {
        return Err(bad);
    }
    if !line[name + 1..].iter().all(|&b| is_field_byte(b)) {
        return Err(bad);
    }
    let kind = header::classify(&line[..name]);
    Ok(!(kind.is_hop_by_hop() || matches!(kind, Kind::ContentLength | Kind::Host | Kind::Expect)))
}

#[cfg(test)]
mod tests;
