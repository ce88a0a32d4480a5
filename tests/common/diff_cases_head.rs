//! The request table of the differential test, continued: field lines,
//! request lines and targets (absolute-form, `*`, authority-form), and HEAD
//! requests, whose refusals must carry no body. See `diff_cases.rs`.

use crate::diff_cases::{Case, Expect, HELLO, HOST, esc, with_method};

pub fn head_fields(cases: &mut Vec<Case>) {
    use Expect::*;
    let extra: [(Expect, &str); 24] = [
        (Refuse, "X-A: a\rb\r\n"),
        (Refuse, "X-A: a\r\n b\r\n"),
        (Refuse, "X-A: a\r\n\tb\r\n"),
        (Refuse, "X-A: a\x00b\r\n"),
        (Refuse, "X-A: \x01\r\n"),
        (Refuse, "X-A: a\x1fb\r\n"),
        (Refuse, "X-A: a\x7fb\r\n"),
        (Refuse, "X-A: a\x0bb\r\n"),
        (Refuse, "X-A: a\x0cb\r\n"),
        (Refuse, "X\x00A: v\r\n"),
        (Refuse, "X A: v\r\n"),
        (Refuse, "X-A : v\r\n"),
        (Refuse, "X-A\t: v\r\n"),
        (Refuse, ": v\r\n"),
        (Refuse, "NoColon\r\n"),
        (Refuse, "(X): v\r\n"),
        (Refuse, "Host: b.test\r\n"),
        (Refuse, "X-A: a\rX-B: b\r\n"),
        (Refuse, "Host: a.test\r\n"),
        (Forward, "X-A: a\tb\r\n"),
        (Forward, "X-A: caf\u{e9}\r\n"),
        (Forward, "X-A:v\r\n"),
        (Forward, "X-A:   v   \r\n"),
        (Forward, "X-A:\r\n"),
    ];
    for (method, cl, body) in [
        ("GET", "", b"".as_slice()),
        ("POST", "Content-Length: 5\r\n", HELLO),
    ] {
        for (expect, line) in extra {
            let name = format!("{method} with {}", esc(line));
            let bytes = with_method(method, &format!("{line}{cl}"), body);
            cases.push(Case::new("head", name, expect, bytes).body(body));
        }
        let whole: [(Expect, &str, String); 19] = [
            (
                Refuse,
                "no Host",
                format!("{method} /c HTTP/1.1\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "first field line starts with a space",
                format!("{method} /c HTTP/1.1\r\n X-A: v\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "Host folded",
                format!("{method} /c HTTP/1.1\r\nHost:\r\n a.test\r\n{cl}\r\n"),
            ),
            (
                Either,
                "bare LF everywhere",
                format!(
                    "{method} /c HTTP/1.1\nHost: a.test\n{}\n",
                    cl.replace("\r\n", "\n")
                ),
            ),
            (
                Either,
                "request line ends in bare LF",
                format!("{method} /c HTTP/1.1\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Either,
                "a field line ends in bare LF",
                format!("{method} /c HTTP/1.1\r\nHost: a.test\n{cl}\r\n"),
            ),
            (
                Either,
                "empty line before the request",
                format!("\r\n{method} /c HTTP/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Either,
                "bare LF before the request",
                format!("\n{method} /c HTTP/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "lowercase version",
                format!("{method} /c http/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "extra word in the request line",
                format!("{method} /c HTTP/1.1 x\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "space in the target",
                format!("{method} /c d HTTP/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "control character in the target",
                format!("{method} /c\x01 HTTP/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "request line ends in bare CR",
                format!("{method} /c HTTP/1.1\rHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "version HTTP/1.1x",
                format!("{method} /c HTTP/1.1x\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Refuse,
                "NUL in the request line",
                format!("{method} /c\x00 HTTP/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Either,
                "two spaces before the target",
                format!("{method}  /c HTTP/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Either,
                "two spaces before the version",
                format!("{method} /c  HTTP/1.1\r\nHost: a.test\r\n{cl}\r\n"),
            ),
            (
                Either,
                "empty Host",
                format!("{method} /c HTTP/1.1\r\nHost:\r\n{cl}\r\n"),
            ),
            (
                Either,
                "Host list",
                format!("{method} /c HTTP/1.1\r\nHost: a.test, b.test\r\n{cl}\r\n"),
            ),
        ];
        for (expect, name, head) in whole {
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(body);
            let host = if name.contains("Host") && !name.contains("folded") {
                None
            } else {
                Some(HOST)
            };
            let case = Case::new("head", format!("{method}: {name}"), expect, bytes).body(body);
            cases.push(case.host(host));
        }
    }
    let bad_method = b"G(T /c HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec();
    cases.push(Case::new(
        "head",
        "method with a separator".into(),
        Refuse,
        bad_method,
    ));
}

pub fn targets(cases: &mut Vec<Case>) {
    use Expect::*;
    // (expect, target, Host fields, targets the origin may see, Host it must see)
    type Row<'a> = (Expect, &'a str, &'a str, Vec<&'a str>, Option<&'a str>);
    let table: Vec<Row> = vec![
        (
            Forward,
            "http://a.test/c",
            "Host: a.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (
            Forward,
            "http://a.test/c",
            "Host: b.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (Either, "http://a.test/c", "", vec!["/c"], Some("a.test")),
        (
            Forward,
            "https://a.test/c",
            "Host: a.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (
            Forward,
            "https://a.test/c",
            "Host: b.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (
            Forward,
            "http://a.test:8080/c",
            "Host: a.test\r\n",
            vec!["/c"],
            Some("a.test:8080"),
        ),
        (
            Forward,
            "http://a.test",
            "Host: a.test\r\n",
            vec!["/"],
            Some("a.test"),
        ),
        (
            Forward,
            "http://a.test?q=1",
            "Host: a.test\r\n",
            vec!["/?q=1"],
            Some("a.test"),
        ),
        (
            Forward,
            "http://a.test/c?q=1",
            "Host: b.test\r\n",
            vec!["/c?q=1"],
            Some("a.test"),
        ),
        (
            Forward,
            "http://A.TEST/c",
            "Host: b.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (
            Forward,
            "http://[::1]:8080/c",
            "Host: b.test\r\n",
            vec!["/c"],
            Some("[::1]:8080"),
        ),
        (
            Either,
            "HTTP://a.test/c",
            "Host: b.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (
            Either,
            "http://u:p@a.test/c",
            "Host: b.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (
            Either,
            "http://u@a.test/c",
            "Host: a.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (
            Either,
            "ftp://a.test/c",
            "Host: a.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        (Refuse, "http:///c", "Host: a.test\r\n", vec![], None),
        (
            Refuse,
            "http://a.test/c",
            "Host: a.test\r\nHost: b.test\r\n",
            vec![],
            None,
        ),
        (Refuse, "*", "Host: a.test\r\n", vec![], None),
        (Refuse, "a.test:443", "Host: a.test\r\n", vec![], None),
        (Refuse, "c", "Host: a.test\r\n", vec![], None),
        (
            Either,
            "http://a.test/c#frag",
            "Host: a.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
        // RFC 9112 §3.2: no form of request-target has a fragment.
        (
            Either,
            "/c#frag",
            "Host: a.test\r\n",
            vec!["/c"],
            Some("a.test"),
        ),
    ];
    for (method, body) in [("GET", b"".as_slice()), ("POST", HELLO)] {
        for (expect, target, hosts, seen, host) in &table {
            let cl = if body.is_empty() {
                String::new()
            } else {
                format!("Content-Length: {}\r\n", body.len())
            };
            let mut bytes = format!("{method} {target} HTTP/1.1\r\n{hosts}{cl}\r\n").into_bytes();
            bytes.extend_from_slice(body);
            let name = format!("{method} {target} with {}", esc(hosts.trim_end()));
            let case = Case::new("target", name, *expect, bytes)
                .body(body)
                .target(seen);
            cases.push(case.host(*host));
        }
    }
    let options: [(Expect, &str, Vec<&str>); 3] = [
        (
            Forward,
            "OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n",
            vec!["*"],
        ),
        (
            Either,
            "OPTIONS http://a.test HTTP/1.1\r\nHost: a.test\r\n\r\n",
            vec!["*", "/"],
        ),
        (
            Either,
            "CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n",
            vec![],
        ),
    ];
    for (expect, bytes, seen) in options {
        let name = bytes.split("\r\n").next().unwrap_or_default().to_string();
        let host = if name.starts_with("CONNECT") {
            None
        } else {
            Some(HOST)
        };
        let case = Case::new("target", name, expect, bytes.as_bytes().to_vec()).target(&seen);
        cases.push(case.host(host));
    }
    let v10 = b"GET http://a.test/c HTTP/1.0\r\n\r\n".to_vec();
    cases.push(
        Case::new(
            "target",
            "HTTP/1.0 absolute-form, no Host".into(),
            Either,
            v10,
        )
        .close(),
    );
}

pub fn head_requests(cases: &mut Vec<Case>) {
    use Expect::*;
    let table: [(Expect, &str); 14] = [
        (Refuse, "Connection: Content-Length\r\n"),
        (Refuse, "Connection: Host\r\n"),
        (Refuse, "Connection: keep-alive, transfer-encoding\r\n"),
        (Refuse, "X-A: a\x00b\r\n"),
        (Refuse, "X-A: a\r\n b\r\n"),
        (Refuse, "X-A: a\rb\r\n"),
        (Refuse, "Host: b.test\r\n"),
        (Refuse, "Content-Length: 1, 2\r\n\r\nx"),
        (Refuse, "Transfer-Encoding: chunked, gzip\r\n"),
        (
            Refuse,
            "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n",
        ),
        (Refuse, "X A: v\r\n"),
        (Forward, ""),
        (Forward, "Connection: keep-alive\r\n"),
        (Forward, "Content-Length: 0, 0\r\n"),
    ];
    for (expect, fields) in table {
        let name = format!("HEAD with {}", esc(fields));
        let (fields, body) = fields
            .split_once("\r\n\r\n")
            .map_or((fields, ""), |(f, b)| (f, b));
        let fields = if fields.is_empty() || fields.ends_with("\r\n") {
            fields.to_string()
        } else {
            format!("{fields}\r\n")
        };
        let bytes = with_method("HEAD", &fields, body.as_bytes());
        cases.push(Case::new("head-request", name, expect, bytes).head());
    }
    let whole: [(Expect, &str, &[u8]); 4] = [
        (Refuse, "HEAD * ", b"HEAD * HTTP/1.1\r\nHost: a.test\r\n\r\n"),
        (Refuse, "HEAD without Host", b"HEAD /c HTTP/1.1\r\n\r\n"),
        (Refuse, "HEAD with a bad chunk line", b"HEAD /c HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\nab\r\n0\r\n\r\n"),
        (Forward, "HEAD absolute-form", b"HEAD http://a.test/c HTTP/1.1\r\nHost: b.test\r\n\r\n"),
    ];
    for (expect, name, bytes) in whole {
        let case = Case::new("head-request", name.into(), expect, bytes.to_vec()).head();
        cases.push(if name.contains("chunk") {
            case.mid_body()
        } else {
            case
        });
    }
}
