//! The JSON config file (`config::file::parse`). Input: the file's bytes.
//!
//! Invariants: no panic; an accepted file has backends numbered in order,
//! TLS keys only on TLS backends, and its display form (the canonical JSON
//! written below from the parsed value, every top-level key included)
//! parses back to the same value. Parsing resolves no
//! name (`dns` does, later) and reads no PEM file (`load` does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use load_balancer::config::AccessLog;
use load_balancer::config::file::{self, FileConfig};
use load_balancer::upstream::{BackendId, HostHeader};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(config) = file::parse(data) else {
        return;
    };
    assert!(!config.backends.is_empty());
    for (i, b) in config.backends.iter().enumerate() {
        assert_eq!(b.id, BackendId(i));
        assert!(b.port != 0 && b.weight >= 1);
    }
    let shown = display(&config).to_string();
    let again = file::parse(shown.as_bytes());
    assert_eq!(again.as_ref(), Ok(&config), "shown as {shown}");
});

fn display(c: &FileConfig) -> Value {
    let backends: Vec<Value> = c
        .backends
        .iter()
        .map(|b| {
            let scheme = if b.tls && b.port != 443 {
                "https://"
            } else {
                ""
            };
            let mut o = Map::new();
            o.insert("host".into(), json!(format!("{scheme}{}", b.host)));
            o.insert("port".into(), json!(b.port));
            o.insert("weight".into(), json!(b.weight));
            match b.host_header {
                HostHeader::Auto => {}
                HostHeader::Preserve => {
                    o.insert("host_header".into(), json!("preserve"));
                }
                HostHeader::Backend => {
                    o.insert("host_header".into(), json!("backend"));
                }
            }
            let own = &b.tls_options;
            assert!(b.tls || own.is_empty(), "TLS keys on a plain backend");
            if let Some(p) = &own.ca_file {
                o.insert("ca_file".into(), json!(p.to_str().expect("paths come from JSON strings")));
            }
            if let Some(sni) = &own.sni {
                o.insert("sni".into(), json!(sni));
            }
            if let Some(c) = &own.client_cert {
                o.insert("client_cert".into(), json!(c.cert.to_str().expect("from JSON")));
                o.insert("client_key".into(), json!(c.key.to_str().expect("from JSON")));
            }
            Value::Object(o)
        })
        .collect();
    let mut top = Map::new();
    top.insert("backends".into(), Value::Array(backends));
    if let Some(s) = c.strategy {
        top.insert("strategy".into(), json!(s.name()));
    }
    let path = |p: &std::path::Path| json!(p.to_str().expect("paths come from JSON strings"));
    for (key, value) in [
        ("listen", c.listen.map(|ip| json!(ip.to_string()))),
        ("port", c.port.map(|p| json!(p))),
        ("workers", c.workers.map(|n| json!(n))),
        ("mode", c.mode.map(|m| json!(m.name()))),
        ("loglevel", c.log_level.map(|l| json!(l.name()))),
        ("metrics_addr", c.metrics_addr.map(|a| json!(a.to_string()))),
        ("pid_file", c.pid_file.as_deref().map(path)),
        ("ca_file", c.ca_file.as_deref().map(path)),
        (
            "access_log",
            c.access_log.as_ref().map(|log| match log {
                AccessLog::Stdout => json!("-"),
                AccessLog::File(p) => path(p),
            }),
        ),
        // A switch that is off is written as absent, which reads the same.
        ("insecure", c.insecure.then_some(json!(true))),
        ("trace", c.trace.then_some(json!(true))),
        ("tls_trace", c.tls_trace.then_some(json!(true))),
    ] {
        if let Some(v) = value {
            top.insert(key.into(), v);
        }
    }
    let h = &c.health;
    let mut health = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            health.insert(k.into(), v);
        }
    };
    put("path", h.path.as_ref().map(|p| json!(p)));
    put(
        "interval_ms",
        h.interval.map(|d| json!(d.as_millis() as u64)),
    );
    put("timeout_ms", h.timeout.map(|d| json!(d.as_millis() as u64)));
    put(
        "unhealthy_threshold",
        h.unhealthy_threshold.map(|n| json!(n)),
    );
    put("healthy_threshold", h.healthy_threshold.map(|n| json!(n)));
    top.insert("health".into(), Value::Object(health));
    let t = &c.timeouts;
    for (key, value) in [
        ("head_timeout_ms", t.head),
        ("body_timeout_ms", t.body),
        ("idle_timeout_ms", t.idle),
        ("connect_timeout_ms", t.connect),
        ("response_timeout_ms", t.response),
    ] {
        if let Some(d) = value {
            top.insert(key.into(), json!(d.as_millis() as u64));
        }
    }
    Value::Object(top)
}
