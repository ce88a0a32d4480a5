//! Runs one test origin on 127.0.0.1 until killed, for demos and manual
//! benchmarking: `cargo run --release --example origin -- --port 9001 --name a`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use clap::Parser;
use load_balancer::origin::{Origin, OriginConfig};

/// A test origin server (not for production).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on, on 127.0.0.1 (0 picks a free one).
    #[arg(long)]
    port: u16,
    /// Name sent in `X-Origin` and in `GET /`.
    #[arg(long)]
    name: String,
    /// Advertise `Keep-Alive: timeout=N` and close connections idle for N s.
    #[arg(long, value_name = "N")]
    keep_alive_timeout: Option<u32>,
    /// Advertise `Keep-Alive: max=M` and close after M requests per connection.
    #[arg(long, value_name = "M")]
    keep_alive_max: Option<u32>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = OriginConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], args.port)),
        keep_alive_timeout: args.keep_alive_timeout,
        keep_alive_max: args.keep_alive_max,
        ..OriginConfig::new(&args.name)
    };
    let origin = match Origin::start(cfg) {
        Ok(origin) => origin,
        Err(e) => {
            eprintln!(
                "origin {}: cannot listen on 127.0.0.1:{}: {e}",
                args.name, args.port
            );
            return ExitCode::FAILURE;
        }
    };
    println!("origin {} listening on {}", origin.name(), origin.addr());
    // The accept and connection threads do the work; this one only waits
    // for the signal that ends the process.
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}
