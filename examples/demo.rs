//! `cargo run --release --example demo`: two demo origins and the load
//! balancer in front of them on :8080, so a newcomer sees requests
//! alternate between the origins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

use load_balancer::origin::{Origin, OriginConfig};

fn main() -> ExitCode {
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
    let mut cmd = Command::new(&binary);
    // One worker (still mp mode: a master and its worker) so that
    // consecutive requests visibly alternate; each worker balances on its own.
    cmd.args(["-p", "8080", "-w", "1"]);
    for o in &origins {
        cmd.args(["-b", &o.addr().to_string()]);
    }
    println!(
        "demo origins: a on {}, b on {}",
        origins[0].addr(),
        origins[1].addr()
    );
    println!(
        "load balancer: {} -p 8080 -w 1 -b {} -b {}",
        binary.display(),
        origins[0].addr(),
        origins[1].addr()
    );
    println!();
    println!("try:   for i in 1 2 3 4; do curl -s http://127.0.0.1:8080/; done");
    println!("       curl -si http://127.0.0.1:8080/echo");
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
