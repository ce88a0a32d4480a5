//! The proxy's failures, each with who is to blame, and the one place where a
//! failure becomes an HTTP answer to the client.

use crate::http1::HeadError;

/// Who caused a failure: only backend-blamed failures count against a
/// backend's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Backend,
    Proxy,
}

/// A request the proxy answers itself, with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// The request head broke a rule of SPEC §5 (400).
    BadRequest(&'static str),
    /// Header section too large (431).
    HeadTooLarge,
    /// CONNECT and the like (405).
    MethodNotAllowed,
    /// Anything but `/metrics` on the separate metrics listener (404).
    NotFound,
    /// No complete head within the head timeout (408).
    HeadTimeout,
    /// The request body stalled before the response started (408).
    BodyTimeout,
    /// No backend could be connected (502).
    NoBackend,
    /// Every backend is known to be down (503).
    AllBackendsDown,
    /// The chosen HTTP/2 backend had no stream free within the connect
    /// timeout (503): it is saturated, not failing.
    QueueTimeout,
    /// The backend broke the exchange: malformed response, reset, early
    /// close (502).
    BadGateway(&'static str),
    /// No response head in time (504).
    GatewayTimeout,
}

impl From<HeadError> for ProxyError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::TooLarge => ProxyError::HeadTooLarge,
            HeadError::MethodNotAllowed => ProxyError::MethodNotAllowed,
            HeadError::Malformed(r) | HeadError::Smuggling(r) => ProxyError::BadRequest(r),
        }
    }
}

impl ProxyError {
    pub fn blame(self) -> Blame {
        match self {
            ProxyError::BadRequest(_)
            | ProxyError::HeadTooLarge
            | ProxyError::MethodNotAllowed
            | ProxyError::NotFound
            | ProxyError::HeadTimeout
            | ProxyError::BodyTimeout => Blame::Client,
            ProxyError::NoBackend | ProxyError::BadGateway(_) | ProxyError::GatewayTimeout => {
                Blame::Backend
            }
            ProxyError::AllBackendsDown | ProxyError::QueueTimeout => Blame::Proxy,
        }
    }

    /// A short phrase for logs and the circuit breaker.
    pub fn reason(self) -> &'static str {
        match self {
            ProxyError::BadRequest(r) | ProxyError::BadGateway(r) => r,
            ProxyError::HeadTooLarge => "head too large",
            ProxyError::MethodNotAllowed => "method not allowed",
            ProxyError::NotFound => "not found",
            ProxyError::HeadTimeout => "head timeout",
            ProxyError::BodyTimeout => "request body timeout",
            ProxyError::NoBackend => "no backend could be connected",
            ProxyError::AllBackendsDown => "every backend is down",
            ProxyError::QueueTimeout => "no HTTP/2 stream to the backend came free in time",
            ProxyError::GatewayTimeout => "response timeout",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ProxyError::BadRequest(_) => 400,
            ProxyError::HeadTooLarge => 431,
            ProxyError::MethodNotAllowed => 405,
            ProxyError::NotFound => 404,
            ProxyError::HeadTimeout | ProxyError::BodyTimeout => 408,
            ProxyError::NoBackend | ProxyError::BadGateway(_) => 502,
            ProxyError::AllBackendsDown | ProxyError::QueueTimeout => 503,
            ProxyError::GatewayTimeout => 504,
        }
    }

    /// The answer to send: without its body when it answers a HEAD
    /// request (RFC 9110 §9.3.2), errors included.
    pub fn answer(self, to_head: bool) -> &'static [u8] {
        let whole = self.response();
        match to_head {
            true => whole
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(whole, |end| &whole[..end + 4]),
            false => whole,
        }
    }

    /// The complete answer. Every error answer closes the connection: after
    /// a framing error nothing that follows can be trusted, and after a
    /// backend failure the client may still be sending a body we dropped.
    pub fn response(self) -> &'static [u8] {
        match self {
            ProxyError::BadRequest(_) => {
                b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n"
            }
            ProxyError::HeadTooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 32\r\nConnection: close\r\n\r\nRequest Header Fields Too Large\n"
            }
            ProxyError::MethodNotAllowed => {
                b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 19\r\nConnection: close\r\n\r\nMethod Not Allowed\n"
            }
            ProxyError::NotFound => {
                b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\nNot Found\n"
            }
            ProxyError::HeadTimeout | ProxyError::BodyTimeout => {
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\nRequest Timeout\n"
            }
            ProxyError::NoBackend | ProxyError::BadGateway(_) => {
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Gateway\n"
            }
            ProxyError::AllBackendsDown | ProxyError::QueueTimeout => {
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\nService Unavailable\n"
            }
            ProxyError::GatewayTimeout => {
                b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain\r\nContent-Length: 16\r\nConnection: close\r\n\r\nGateway Timeout\n"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canned_answers_are_well_framed() {
        let all = [
            ProxyError::BadRequest("x"),
            ProxyError::HeadTooLarge,
            ProxyError::MethodNotAllowed,
            ProxyError::NotFound,
            ProxyError::HeadTimeout,
            ProxyError::BodyTimeout,
            ProxyError::NoBackend,
            ProxyError::AllBackendsDown,
            ProxyError::QueueTimeout,
            ProxyError::BadGateway("x"),
            ProxyError::GatewayTimeout,
        ];
        for e in all {
            let text = std::str::from_utf8(e.response()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", e.status())),
                "{head}"
            );
            assert!(
                head.contains(&format!("Content-Length: {}\r\n", body.len())),
                "{head}"
            );
            let to_head = std::str::from_utf8(e.answer(true)).unwrap();
            assert_eq!(to_head, format!("{head}\r\n\r\n"));
        }
    }
}
