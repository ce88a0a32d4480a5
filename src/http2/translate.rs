//! Heads across the HTTP/1.1 ↔ HTTP/2 boundary.
//!
//! Requests: the head the HTTP/1.1 path already rewrote for the backend
//! (hop-by-hop fields dropped, `Host` chosen by SPEC §5, `X-Forwarded-*`
//! and `Via` added) becomes an `http::Request` with `:authority` from that
//! `Host`, so both protocols get one rewrite decision. Responses: an h2
//! response head becomes an HTTP/1.1 head for the client with framing of
//! our choosing. No I/O here.

use std::mem::MaybeUninit;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};

use crate::http1::VIA_NAME;
use crate::http1::response::push_hex16;

/// Fields of the rewritten head that HTTP/2 forbids or carries otherwise.
fn dropped_in_h2(name: &HeaderName) -> bool {
    name == header::HOST
        || name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        || name.as_str() == "http2-settings"
}

/// The h2 request for a head written by `RequestHead::write_for_backend`.
/// The error says what HTTP/2 cannot carry.
pub fn request(head: &[u8]) -> Result<Request<()>, &'static str> {
    // Uninitialised: zeroing 256 fields cost more than parsing our head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 256];
    let mut parsed = httparse::Request::new(&mut []);
    match parsed.parse_with_uninit_headers(head, &mut fields) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("request head not expressible in HTTP/2"),
    }
    let method = Method::from_bytes(parsed.method.unwrap_or("").as_bytes())
        .map_err(|_| "method not expressible in HTTP/2")?;
    let authority = parsed
        .headers
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("host"))
        .map(|f| f.value)
        .ok_or("request without Host")?;
    let uri = Uri::builder()
        .scheme("https")
        .authority(authority)
        .path_and_query(parsed.path.unwrap_or("/"))
        .build()
        .map_err(|_| "request target not expressible in HTTP/2")?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .map_err(|_| "request not expressible in HTTP/2")?;
    let headers = request.headers_mut();
    for field in parsed.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| "header name not expressible in HTTP/2")?;
        if dropped_in_h2(&name) {
            continue;
        }
        let value = HeaderValue::from_bytes(field.value)
            .map_err(|_| "header value not expressible in HTTP/2")?;
        headers.append(name, value);
    }
    Ok(request)
}

/// How the client receives an h2 response's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    /// The backend's `content-length`, forwarded.
    Length,
    /// Chunked, sized by us from DATA frames.
    Chunked,
    /// An HTTP/1.0 client: the body ends when we close.
    UntilClose,
}

/// What shapes the client's head besides the response itself.
pub struct ClientHead {
    pub head_request: bool,
    pub client_http10: bool,
    pub close: bool,
    pub set_sticky: Option<u64>,
}

/// Writes the HTTP/1.1 head for an h2 response and says how its body is
/// framed. A `content-length` the backend got wrong is h2's to catch (it
/// resets the stream), so it is forwarded as it came.
pub fn response_head<B>(resp: &Response<B>, how: &ClientHead, out: &mut Vec<u8>) -> Framing {
    let status = resp.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let has_length = resp.headers().contains_key(header::CONTENT_LENGTH);
    let bodiless = how.head_request || status.is_informational() || status == 204 || status == 304;
    let framing = match (bodiless, has_length, how.client_http10) {
        (true, ..) => Framing::None,
        (false, true, _) => Framing::Length,
        (false, false, false) => Framing::Chunked,
        (false, false, true) => Framing::UntilClose,
    };
    write_fields(resp.headers(), out, |name| {
        name != header::VIA && !dropped_in_h2(name)
    });
    if framing == Framing::Chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    if how.close || framing == Framing::UntilClose {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if how.client_http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if let Some(id) = how.set_sticky {
        out.extend_from_slice(b"Set-Cookie: ");
        out.extend_from_slice(crate::balance::STICKY_COOKIE.as_bytes());
        out.push(b'=');
        push_hex16(out, id);
        out.extend_from_slice(b"; Path=/; HttpOnly\r\n");
    }
    out.extend_from_slice(b"Via: ");
    for earlier in resp.headers().get_all(header::VIA) {
        out.extend_from_slice(earlier.as_bytes());
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(b"2 ");
    out.extend_from_slice(VIA_NAME.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    framing
}

/// An interim (1xx) response, forwarded to an HTTP/1.1 client as it came.
pub fn interim_head<B>(resp: &Response<B>, out: &mut Vec<u8>) {
    let status = resp.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    write_fields(resp.headers(), out, |name| !dropped_in_h2(name));
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk and the trailers, minus
/// those that would frame or route (as for HTTP/1.1 trailers).
pub fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(trailers) = trailers {
        write_fields(trailers, out, |name| {
            !dropped_in_h2(name) && name != header::CONTENT_LENGTH && name != header::EXPECT
        });
    }
    out.extend_from_slice(b"\r\n");
}

/// The request's trailer lines (each `name: value` CRLF, already checked
/// and filtered by the body framer) as the fields of a trailing HEADERS.
pub fn trailers(lines: &[u8]) -> Result<HeaderMap, &'static str> {
    let mut fields = HeaderMap::new();
    for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or("malformed trailer line")?;
        let name = HeaderName::from_bytes(&line[..colon])
            .map_err(|_| "trailer name not expressible in HTTP/2")?;
        if dropped_in_h2(&name) {
            continue;
        }
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii())
            .map_err(|_| "trailer value not expressible in HTTP/2")?;
        fields.append(name, value);
    }
    Ok(fields)
}

fn write_fields(fields: &HeaderMap, out: &mut Vec<u8>, keep: impl Fn(&HeaderName) -> bool) {
    for (name, value) in fields {
        if keep(name) {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// `--trace`: an h2 request as its pseudo-headers and fields, one per line.
pub fn trace_request(request: &Request<()>) -> Vec<String> {
    let uri = request.uri();
    let mut lines = vec![
        format!(":method: {}", request.method()),
        format!(":scheme: {}", uri.scheme_str().unwrap_or("https")),
        format!(":authority: {}", uri.authority().map_or("", |a| a.as_str())),
        format!(
            ":path: {}",
            uri.path_and_query().map_or("/", |p| p.as_str())
        ),
    ];
    for (name, value) in request.headers() {
        lines.push(format!(
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    lines
}

/// A copy of body bytes for h2, which owns what it sends.
pub fn data(bytes: &[u8]) -> Bytes {
    Bytes::copy_from_slice(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_takes_authority_from_host_and_drops_connection_fields() {
        let head = b"POST /a?b=1 HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive\r\n\
                     Keep-Alive: 5\r\nContent-Length: 3\r\nX-Custom: v\r\n\
                     X-Forwarded-For: 10.0.0.1\r\n\r\n";
        let req = request(head).expect("translates");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri().to_string(), "https://api.example.com/a?b=1");
        assert_eq!(req.headers().get("content-length").unwrap(), "3");
        assert_eq!(req.headers().get("x-custom").unwrap(), "v");
        assert!(req.headers().get("host").is_none());
        assert!(req.headers().get("connection").is_none());
        assert!(req.headers().get("keep-alive").is_none());
    }

    fn head_for(resp: Response<()>, how: ClientHead) -> (String, Framing) {
        let mut out = Vec::new();
        let framing = response_head(&resp, &how, &mut out);
        (String::from_utf8(out).unwrap(), framing)
    }

    fn how(head_request: bool, client_http10: bool) -> ClientHead {
        ClientHead {
            head_request,
            client_http10,
            close: false,
            set_sticky: None,
        }
    }

    #[test]
    fn response_framing_follows_length_method_status_and_client() {
        let with_length = || {
            Response::builder()
                .status(200)
                .header("content-length", "5")
                .body(())
                .unwrap()
        };
        let without = |status: u16| Response::builder().status(status).body(()).unwrap();
        let (text, f) = head_for(with_length(), how(false, false));
        assert_eq!(f, Framing::Length);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains("content-length: 5\r\n"), "{text}");
        assert!(text.ends_with("Via: 2 load_balancer\r\n\r\n"), "{text}");
        assert_eq!(
            head_for(without(200), how(false, false)).1,
            Framing::Chunked
        );
        let (text, f) = head_for(without(200), how(false, true));
        assert_eq!(f, Framing::UntilClose);
        assert!(text.contains("Connection: close\r\n"), "{text}");
        assert_eq!(head_for(without(200), how(true, false)).1, Framing::None);
        assert_eq!(head_for(without(204), how(false, false)).1, Framing::None);
        assert_eq!(head_for(without(304), how(false, false)).1, Framing::None);
        let (text, _) = head_for(without(200), how(false, false));
        assert!(text.contains("Transfer-Encoding: chunked\r\n"), "{text}");
    }

    #[test]
    fn request_trailer_lines_become_fields() {
        let fields = trailers(b"X-Sum: abc \r\nX-Empty:\r\nx-sum:\tdef\r\nTE: trailers\r\n")
            .expect("translates");
        let sums: Vec<_> = fields.get_all("x-sum").iter().collect();
        assert_eq!(sums, ["abc", "def"]);
        assert_eq!(fields.get("x-empty").unwrap(), "");
        assert!(fields.get("te").is_none());
        assert!(trailers(b"no colon\r\n").is_err());
    }

    #[test]
    fn trailers_that_frame_are_not_forwarded() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("content-length", HeaderValue::from_static("9"));
        let mut out = Vec::new();
        last_chunk(Some(&trailers), &mut out);
        assert_eq!(out, b"0\r\ngrpc-status: 0\r\n\r\n");
    }
}
