//! `cargo run --release --example demo`: two demo origins and the load
//! balancer in front of them on 127.0.0.1 (port 8080, or a free one when
//! 8080 is taken; `-- --port N` or `LB_DEMO_PORT=N` to choose), so a
//! newcomer sees requests alternate between the origins. Loopback only:
//! a demo must not be reachable from the network.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use clap::Parser;
use load_balancer::origin::{Origin, OriginConfig};

const DEFAULT_PORT: u16 = 8080;

/// Two demo origins behind the load balancer, on 127.0.0.1.
#[derive(Debug, Parser)]
struct Args {
    /// Port for the load balancer; it must be free [default: 8080, or any
    /// free port when 8080 is taken; env: LB_DEMO_PORT]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let wanted = match (args.port, std::env::var("LB_DEMO_PORT")) {
        (Some(port), _) => Some(port),
        (None, Ok(text)) => match text.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => {
                eprintln!("demo: LB_DEMO_PORT={text:?} is not a port (1-65535)");
                return ExitCode::from(1);
            }
        },
        (None, Err(_)) => None,
    };
    let port = match choose_port(wanted) {
        Ok(Choice::Asked(port)) => port,
        Ok(Choice::Instead(port)) => {
            println!(
                "demo: 127.0.0.1:{DEFAULT_PORT} is taken; using 127.0.0.1:{port} instead \
                 (--port N or LB_DEMO_PORT=N to choose)"
            );
            port
        }
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(1);
        }
    };
    let origins = match ["a", "b"]
        .iter()
        .enumerate()
        .map(|(i, name)| start_origin(name, 9001 + i as u16))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(origins) => origins,
        Err(e) => {
            eprintln!("demo: cannot start the demo origins: {e}");
            return ExitCode::from(1);
        }
    };
    let binary = match build_load_balancer() {
        Ok(path) => path,
        Err(e) => {
            eprintln!("demo: {e}");
            return ExitCode::from(1);
        }
    };
    let port = port.to_string();
    let mut cmd = Command::new(&binary);
    // One worker (still mp mode: a master and its worker) so that
    // consecutive requests visibly alternate; each worker balances on its own.
    cmd.args(["-H", "127.0.0.1", "-p", &port, "-w", "1"]);
    for o in &origins {
        cmd.args(["-b", &o.addr().to_string()]);
    }
    println!(
        "demo origins: a on {}, b on {}",
        origins[0].addr(),
        origins[1].addr()
    );
    println!(
        "load balancer: {} -H 127.0.0.1 -p {port} -w 1 -b {} -b {}",
        binary.display(),
        origins[0].addr(),
        origins[1].addr()
    );
    println!();
    println!("try:   for i in 1 2 3 4; do curl -s http://127.0.0.1:{port}/; done");
    println!("       curl -si http://127.0.0.1:{port}/echo");
    println!("stop:  Ctrl-C");
    println!();
    match cmd.status() {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("demo: load_balancer exited: {status}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("demo: cannot run {}: {e}", binary.display());
            ExitCode::from(1)
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Choice {
    /// The port asked for (or the default), free.
    Asked(u16),
    /// The default was taken: this free port instead.
    Instead(u16),
}

/// The port the balancer will listen on: `wanted` if given (an error if it
/// is taken: the user asked for it), else 8080, else any free port.
fn choose_port(wanted: Option<u16>) -> Result<Choice, String> {
    choose_port_from(wanted, DEFAULT_PORT)
}

fn choose_port_from(wanted: Option<u16>, default: u16) -> Result<Choice, String> {
    let free = |port: u16| TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
    match wanted {
        Some(port) if free(port) => Ok(Choice::Asked(port)),
        Some(port) => Err(format!(
            "127.0.0.1:{port} is taken; pick another with --port N or LB_DEMO_PORT=N"
        )),
        None if free(default) => Ok(Choice::Asked(default)),
        None => TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map(|a| Choice::Instead(a.port()))
            .map_err(|e| format!("no free port on 127.0.0.1: {e}")),
    }
}

/// The demo origin on its usual port, or any free port if that one is taken.
fn start_origin(name: &str, port: u16) -> std::io::Result<Origin> {
    let mut cfg = OriginConfig::new(name);
    cfg.addr = SocketAddr::from(([127, 0, 0, 1], port));
    Origin::start(cfg).or_else(|_| Origin::start(OriginConfig::new(name)))
}

/// Builds the `load_balancer` binary of this checkout (a no-op when it is
/// fresh) and returns its path: examples do not get the package's binaries
/// built for them.
fn build_load_balancer() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--bin", "load_balancer"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building load_balancer failed".into());
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/release/examples/demo -> target/release/load_balancer
    let dir = exe
        .parent()
        .and_then(|p| p.parent())
        .ok_or("cannot locate the target directory")?;
    Ok(dir.join("load_balancer"))
}

// `cargo test` runs these (the example is declared with `test = true`).
#[cfg(test)]
mod tests {
    use super::*;

    fn held() -> (TcpListener, u16) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        (l, port)
    }

    #[test]
    fn a_taken_default_port_gives_another_free_port() {
        let (_holder, taken) = held();
        match choose_port_from(None, taken) {
            Ok(Choice::Instead(port)) => assert_ne!(port, taken),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_free_default_port_is_used() {
        let (holder, port) = held();
        drop(holder);
        assert_eq!(choose_port_from(None, port), Ok(Choice::Asked(port)));
    }

    #[test]
    fn a_taken_port_asked_for_is_an_error_naming_it() {
        let (_holder, taken) = held();
        let e = choose_port_from(Some(taken), DEFAULT_PORT).expect_err("taken");
        assert!(e.contains(&format!("127.0.0.1:{taken} is taken")), "{e}");
    }
}
