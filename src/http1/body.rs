//! Body framing (RFC 9112 §6, §7.1): finds where a body ends in a byte stream
//! without copying it. Pass-through mode reports how many bytes belong to the
//! body; payload mode also strips chunk framing for HTTP/1.0 clients.
//!
//! The chunked parser is strict (CRLF only, bounded sizes, no control bytes)
//! because a lenient one is where request smuggling lives.

use super::{BodyKind, MAX_HEAD};

/// Longest chunk extension accepted; they carry nothing we use.
const MAX_CHUNK_EXT: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    BadChunkSize,
    BadChunkLine,
    TrailersTooLarge,
}

impl FramingError {
    pub fn reason(self) -> &'static str {
        match self {
            FramingError::BadChunkSize => "invalid chunk size",
            FramingError::BadChunkLine => "invalid chunk framing",
            FramingError::TrailersTooLarge => "trailer section too large",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Reading the hex size; `digits` guards against overflow.
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        value: u64,
    },
    Ext {
        value: u64,
        len: u32,
    },
    SizeLf {
        value: u64,
    },
    Data {
        remaining: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart {
        total: usize,
    },
    TrailerLine {
        total: usize,
    },
    TrailerLf {
        total: usize,
    },
    EndLf,
}

/// Where the current message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFramer {
    Length { remaining: u64 },
    Chunked(Chunk),
    UntilClose,
    Done,
}

/// One step of payload mode: `consumed` bytes were used, of which
/// `data.0..data.1` is payload to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub consumed: usize,
    pub data: (usize, usize),
    pub done: bool,
}

impl BodyFramer {
    pub fn new(kind: BodyKind) -> BodyFramer {
        match kind {
            BodyKind::None | BodyKind::Length(0) => BodyFramer::Done,
            BodyKind::Length(n) => BodyFramer::Length { remaining: n },
            BodyKind::Chunked => BodyFramer::Chunked(Chunk::Size {
                value: 0,
                digits: 0,
            }),
            BodyKind::UntilClose => BodyFramer::UntilClose,
        }
    }

    pub fn is_done(&self) -> bool {
        *self == BodyFramer::Done
    }

    /// Pass-through: how many leading bytes of `input` belong to the body,
    /// and whether the body ends there. Bytes past that belong to the next
    /// message.
    pub fn advance(&mut self, input: &[u8]) -> Result<(usize, bool), FramingError> {
        let mut used = 0;
        loop {
            let step = self.advance_payload(&input[used..])?;
            used += step.consumed;
            if step.done || step.consumed == 0 || used == input.len() {
                return Ok((used, step.done));
            }
        }
    }

    /// Payload mode: consumes framing and at most one run of payload.
    pub fn advance_payload(&mut self, input: &[u8]) -> Result<Step, FramingError> {
        match self {
            BodyFramer::Done => Ok(Step {
                consumed: 0,
                data: (0, 0),
                done: true,
            }),
            BodyFramer::UntilClose => Ok(Step {
                consumed: input.len(),
                data: (0, input.len()),
                done: false,
            }),
            BodyFramer::Length { remaining } => {
                let n = (*remaining).min(input.len() as u64) as usize;
                *remaining -= n as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyFramer::Done;
                }
                Ok(Step {
                    consumed: n,
                    data: (0, n),
                    done,
                })
            }
            BodyFramer::Chunked(state) => {
                let step = chunked_step(state, input)?;
                if step.done {
                    *self = BodyFramer::Done;
                }
                Ok(step)
            }
        }
    }
}

fn is_ctl(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Advances the chunked state machine over `input`, stopping after the
/// first run of payload so payload mode can deliver it.
fn chunked_step(state: &mut Chunk, input: &[u8]) -> Result<Step, FramingError> {
    use FramingError::*;
    let mut i = 0;
    while i < input.len() {
        if let Chunk::Data { remaining } = *state {
            let n = remaining.min((input.len() - i) as u64) as usize;
            *state = if n as u64 == remaining {
                Chunk::DataCr
            } else {
                Chunk::Data {
                    remaining: remaining - n as u64,
                }
            };
            return Ok(Step {
                consumed: i + n,
                data: (i, i + n),
                done: false,
            });
        }
        let b = input[i];
        i += 1;
        *state = match *state {
            Chunk::Size { value, digits } => match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    if digits == 16 {
                        return Err(BadChunkSize);
                    }
                    let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                    Chunk::Size {
                        value: value << 4 | d,
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(BadChunkSize),
                b'\r' => Chunk::SizeLf { value },
                b';' => Chunk::Ext { value, len: 0 },
                b' ' | b'\t' => Chunk::SizeSpace { value },
                _ => return Err(BadChunkSize),
            },
            Chunk::SizeSpace { value } => match b {
                b' ' | b'\t' => Chunk::SizeSpace { value },
                b';' => Chunk::Ext { value, len: 0 },
                b'\r' => Chunk::SizeLf { value },
                _ => return Err(BadChunkLine),
            },
            Chunk::Ext { value, len } => match b {
                b'\r' => Chunk::SizeLf { value },
                _ if is_ctl(b) || len >= MAX_CHUNK_EXT => return Err(BadChunkLine),
                _ => Chunk::Ext {
                    value,
                    len: len + 1,
                },
            },
            Chunk::SizeLf { value } => match b {
                b'\n' if value == 0 => Chunk::TrailerStart { total: 0 },
                b'\n' => Chunk::Data { remaining: value },
                _ => return Err(BadChunkLine),
            },
            Chunk::Data { .. } => unreachable!("handled above"),
            Chunk::DataCr => match b {
                b'\r' => Chunk::DataLf,
                _ => return Err(BadChunkLine),
            },
            Chunk::DataLf => match b {
                b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                },
                _ => return Err(BadChunkLine),
            },
            Chunk::TrailerStart { total } => match b {
                b'\r' => Chunk::EndLf,
                // A trailer line starting with whitespace is an obs-fold.
                b' ' | b'\t' => return Err(BadChunkLine),
                _ if is_ctl(b) => return Err(BadChunkLine),
                _ => Chunk::TrailerLine { total: total + 1 },
            },
            Chunk::TrailerLine { total } => match b {
                _ if total >= MAX_HEAD => return Err(TrailersTooLarge),
                b'\r' => Chunk::TrailerLf { total },
                _ if is_ctl(b) => return Err(BadChunkLine),
                _ => Chunk::TrailerLine { total: total + 1 },
            },
            Chunk::TrailerLf { total } => match b {
                b'\n' => Chunk::TrailerStart { total: total + 2 },
                _ => return Err(BadChunkLine),
            },
            Chunk::EndLf => match b {
                b'\n' => {
                    return Ok(Step {
                        consumed: i,
                        data: (i, i),
                        done: true,
                    });
                }
                _ => return Err(BadChunkLine),
            },
        };
    }
    Ok(Step {
        consumed: i,
        data: (i, i),
        done: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `piece` bytes; returns (bytes used, done).
    fn pass_through(
        kind: BodyKind,
        input: &[u8],
        piece: usize,
    ) -> Result<(usize, bool), FramingError> {
        let mut f = BodyFramer::new(kind);
        let mut used = 0;
        while used < input.len() {
            let end = (used + piece).min(input.len());
            let (n, done) = f.advance(&input[used..end])?;
            used += n;
            if done {
                return Ok((used, true));
            }
        }
        Ok((used, f.is_done()))
    }

    fn payload(input: &[u8]) -> Result<(Vec<u8>, usize), FramingError> {
        let mut f = BodyFramer::new(BodyKind::Chunked);
        let (mut out, mut used) = (Vec::new(), 0);
        loop {
            let step = f.advance_payload(&input[used..])?;
            out.extend_from_slice(&input[used + step.data.0..used + step.data.1]);
            used += step.consumed;
            if step.done || step.consumed == 0 {
                return Ok((out, used));
            }
        }
    }

    const CHUNKED: &[u8] = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    #[test]
    fn chunked_ends_exactly_at_the_last_crlf_whatever_the_pieces() {
        for piece in [1, 2, 3, 7, 64] {
            assert_eq!(
                pass_through(BodyKind::Chunked, CHUNKED, piece),
                Ok((CHUNKED.len() - 4, true)),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn payload_mode_strips_framing() {
        assert_eq!(
            payload(CHUNKED),
            Ok((b"hello world".to_vec(), CHUNKED.len() - 4))
        );
    }

    #[test]
    fn length_and_close_delimited() {
        assert_eq!(
            pass_through(BodyKind::Length(3), b"abcdef", 2),
            Ok((3, true))
        );
        assert_eq!(pass_through(BodyKind::Length(9), b"abc", 2), Ok((3, false)));
        assert_eq!(
            pass_through(BodyKind::UntilClose, b"abc", 2),
            Ok((3, false))
        );
        assert!(BodyFramer::new(BodyKind::None).is_done());
    }

    #[test]
    fn refuses_bad_chunked() {
        let cases: &[(&[u8], FramingError)] = &[
            (b"x\r\n", FramingError::BadChunkSize),
            (b"\r\n", FramingError::BadChunkSize),
            (b"-1\r\n", FramingError::BadChunkSize),
            (b"11111111111111111\r\n", FramingError::BadChunkSize),
            (b"5\nhello\r\n", FramingError::BadChunkSize),
            (b"5\r\nhelloX\r\n", FramingError::BadChunkLine),
            (b"5\r\nhello\rX", FramingError::BadChunkLine),
            (b"5 x\r\n", FramingError::BadChunkLine),
            (b"5;a\x01\r\n", FramingError::BadChunkLine),
            (b"0\r\n folded\r\n\r\n", FramingError::BadChunkLine),
            (b"0\r\nX: 1\n\r\n", FramingError::BadChunkLine),
        ];
        for (input, want) in cases {
            assert_eq!(
                pass_through(BodyKind::Chunked, input, 64).err(),
                Some(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn accepts_size_whitespace_and_uppercase_hex() {
        let input = b"A \r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(
            pass_through(BodyKind::Chunked, input, 64),
            Ok((input.len(), true))
        );
    }

    #[test]
    fn trailers_are_bounded() {
        let mut input = b"0\r\nX: ".to_vec();
        input.resize(MAX_HEAD + 10, b'a');
        assert_eq!(
            pass_through(BodyKind::Chunked, &input, 4096).err(),
            Some(FramingError::TrailersTooLarge)
        );
    }
}
