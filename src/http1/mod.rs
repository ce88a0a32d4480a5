//! HTTP/1.1 message handling, sans-IO: parsing heads into offsets, rewriting
//! them for the next hop, and framing bodies (RFC 9112).
//!
//! Nothing here touches a socket or a clock; `proxy` feeds bytes in and
//! writes what comes out. Heads are parsed by `httparse` and kept as
//! [`Span`]s into the caller's buffer, so no per-request allocation happens
//! once the reused vectors have grown to their working size.

pub mod body;
mod header;
pub mod request;
pub mod response;
mod scan;

pub use body::{BodyFramer, FramingError};
pub use request::{RequestHead, RequestRewrite};
pub use response::{ResponseHead, ResponseRewrite};

/// Largest accepted header section (SPEC §5: larger is 431).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in one head (more is answered like an
/// oversized head, 431, as HAProxy does).
pub const MAX_HEADERS: usize = 128;
/// The pseudonym this proxy puts in `Via`.
pub const VIA_NAME: &str = "load_balancer";

/// The HTTP/1.x minor version of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    fn from_minor(minor: u8) -> Version {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    None,
    /// Exactly this many bytes (never 0: that is `None`).
    Length(u64),
    /// `Transfer-Encoding: chunked`, ending with the last chunk and trailers.
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

/// A byte range of a head inside the buffer it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    /// The span of `part`, a sub-slice of `buf`. httparse hands out some
    /// empty parts (the reason of `HTTP/1.1 204` and CRLF) as a static `""`
    /// that lies elsewhere: those become the empty span at 0.
    fn within(buf: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
        // One compare: a static lies outside the buffer, so its offset
        // (wrapped if it lies below) is past the end.
        if start > buf.len() {
            debug_assert!(part.is_empty(), "a non-empty part outside its buffer");
            return Span::default();
        }
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// Why a head was refused. The proxy maps each to one answer in `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Syntax error, forbidden character, bad field value (400).
    Malformed(&'static str),
    /// Ambiguous message framing: a request-smuggling attempt (400).
    Smuggling(&'static str),
    /// Header section over [`MAX_HEAD`] or over [`MAX_HEADERS`] fields (431).
    TooLarge,
    /// A method a reverse proxy does not serve, i.e. CONNECT (405).
    MethodNotAllowed,
}

/// The length of a head httparse found complete in `buf`, `None` if it is
/// not complete yet, or why it is refused (a head over `MAX_HEAD`, too).
fn httparse_head_len(
    parsed: httparse::Result<usize>,
    buf: &[u8],
) -> Result<Option<usize>, HeadError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(HeadError::from_httparse(e)),
    }
}

impl HeadError {
    fn from_httparse(e: httparse::Error) -> HeadError {
        match e {
            httparse::Error::TooManyHeaders => HeadError::TooLarge,
            httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
            httparse::Error::NewLine => HeadError::Malformed("invalid line ending"),
            httparse::Error::Status => HeadError::Malformed("invalid status"),
            httparse::Error::Token => HeadError::Malformed("invalid token"),
            httparse::Error::Version => HeadError::Malformed("invalid version"),
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            HeadError::Malformed(r) | HeadError::Smuggling(r) => r,
            HeadError::TooLarge => "header section too large",
            HeadError::MethodNotAllowed => "method not allowed",
        }
    }
}
