//! `--check`: the report of a configuration that validated (flags, the
//! config file, DNS), as `nginx -t` and `haproxy -c` give. Pure: formats a
//! [`Config`]; `cli::parse_from` returns it for `main` to print, so a check
//! binds, forks and serves nothing.

use std::fmt::Write;

use super::value::duration_text as dur;
use super::{Config, Mode};
use crate::upstream::HostHeader;

/// One line per fact, the first saying what was checked; backends one line
/// each (label, resolved address, weight, TLS or plain).
pub fn report(c: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let mut line = |text: String| {
        let _ = writeln!(out, "{text}");
    };
    line(match &c.config_file {
        Some(path) => format!("config {}: ok", path.display()),
        None => "command line: ok".to_string(),
    });
    let processes = match c.mode {
        Mode::Multi => format!("mode mp, {} worker(s)", c.workers),
        Mode::Single => "mode sp (one in-process worker)".to_string(),
    };
    line(format!(
        "listen {}, {processes}, strategy {}",
        c.listen,
        c.strategy.name()
    ));
    for b in &c.backends {
        let transport = if b.tls { "TLS" } else { "plain" };
        let host = match b.host_header {
            HostHeader::Auto => "",
            HostHeader::Preserve => ", host_header preserve",
            HostHeader::Backend => ", host_header backend",
        };
        line(format!(
            "backend {} at {}, weight {}, {transport}{host}",
            b.label, b.addr, b.weight
        ));
    }
    if c.targets.iter().any(crate::dns::Target::is_named) {
        line(match c.dns_interval.is_zero() {
            true => "names resolved at start and on reload only (dns_interval_ms 0)".to_string(),
            false => format!(
                "names re-resolved every {}, each address an endpoint",
                dur(c.dns_interval)
            ),
        });
    }
    let h = &c.health;
    line(format!(
        "health GET {} every {}, timeout {}, down after {} failure(s), up after {} success(es)",
        h.path,
        dur(h.interval),
        dur(h.timeout),
        h.unhealthy_threshold,
        h.healthy_threshold
    ));
    let t = &c.timeouts;
    line(format!(
        "timeouts head {}, body {}, idle {}, connect {}, response {}",
        dur(t.head),
        dur(t.body),
        dur(t.idle),
        dur(t.connect),
        dur(t.response)
    ));
    line(match c.metrics_addr {
        Some(addr) => format!("metrics on {addr} only"),
        None => "metrics on the listen port".to_string(),
    });
    if c.backends.iter().any(|b| b.tls) {
        line(match (c.insecure, &c.ca_file) {
            (true, _) => "TLS certificates NOT verified (-k / insecure)".to_string(),
            (false, None) => "TLS certificates verified against the built-in roots".to_string(),
            (false, Some(ca)) => format!(
                "TLS certificates verified against the built-in roots and {}",
                ca.display()
            ),
        });
    }
    let mut logging = format!("log level {}", c.log_level.name());
    if c.trace {
        logging.push_str(", trace");
    }
    if c.tls_trace {
        logging.push_str(", tls trace");
    }
    line(logging);
    if let Some(pid) = &c.pid_file {
        line(format!("pid file {}", pid.display()));
    }
    if let Some(log) = &c.access_log {
        line(format!(
            "access log {} ({})",
            log.name(),
            c.access_log_format.name()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::config::cli::{self, CliError};

    fn check(args: &[&str]) -> String {
        let argv = ["load_balancer", "--check"].iter().chain(args);
        match cli::parse_from(argv) {
            Err(CliError::Display(report)) => report,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn lists_every_backend_and_the_settings_once() {
        let report = check(&[
            "-b",
            "127.0.0.1:9001",
            "-b",
            "https://[::1]:8443,weight=3",
            "-w",
            "3",
            "-s",
            "weighted",
            "-p",
            "9000",
        ]);
        assert_eq!(
            report,
            "command line: ok\n\
             listen 0.0.0.0:9000, mode mp, 3 worker(s), strategy weighted\n\
             backend 127.0.0.1:9001 at 127.0.0.1:9001, weight 1, plain\n\
             backend [::1]:8443 at [::1]:8443, weight 3, TLS\n\
             health GET / every 5 s, timeout 2 s, down after 3 failure(s), up after 2 success(es)\n\
             timeouts head 10 s, body 60 s, idle 60 s, connect 2 s, response 60 s\n\
             metrics on the listen port\n\
             TLS certificates verified against the built-in roots\n\
             log level info\n"
        );
        let report = check(&["-b", "127.0.0.1:9001", "--mode", "sp", "-k", "-t"]);
        assert!(
            report.contains("mode sp (one in-process worker)"),
            "{report}"
        );
        // -k only matters, and is only shown, with a TLS backend.
        assert!(!report.contains("TLS"), "{report}");
        assert!(report.contains("log level info, trace\n"), "{report}");
    }

    #[test]
    fn an_invalid_configuration_is_an_error_not_a_report() {
        let argv = ["load_balancer", "--check", "-b", "127.0.0.1"];
        assert!(matches!(cli::parse_from(argv), Err(CliError::Invalid(_))));
    }
}
