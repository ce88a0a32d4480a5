//! Micro-benchmark of `Balancer::pick`, the per-request hot path: ns per pick
//! for each strategy over 4 backends, all up and with one down.
//! Std only (`harness = false`): `cargo bench --bench balance [-- PICKS]`.
//! Measures the balancer alone; proxy throughput is benchmarked elsewhere.

use std::hint::black_box;
use std::time::Instant;

use load_balancer::balance::Balancer;
use load_balancer::config::Strategy;
use load_balancer::upstream::{Backend, BackendId, parse_spec};

fn main() {
    // `cargo bench` passes `--bench`; an optional number overrides the count.
    let picks: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let backends: Vec<Backend> = [1, 2, 3, 4]
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let spec = format!("127.0.0.1:{},weight={w}", 9001 + i);
            parse_spec(&spec, BackendId(i)).expect("bench backend spec")
        })
        .collect();
    println!("{picks} picks per row, 4 backends (weights 1,2,3,4)");
    println!("{:<12} {:>12} {:>12}", "strategy", "all up", "one down");
    for strategy in Strategy::ALL {
        let up = time(strategy, &backends, picks, None);
        let down = time(strategy, &backends, picks, Some(BackendId(1)));
        println!("{:<12} {:>9.2} ns {:>9.2} ns", strategy.name(), up, down);
    }
}

/// ns per pick. least_conn also records start/finish, as the proxy would, so
/// its in-flight counts move; sticky pins a rotating backend.
fn time(strategy: Strategy, backends: &[Backend], picks: u64, down: Option<BackendId>) -> f64 {
    let mut b = Balancer::new(strategy, backends);
    let n = backends.len();
    let mut sink = 0usize;
    let start = Instant::now();
    for k in 0..picks {
        let pinned = (strategy == Strategy::Sticky).then_some(BackendId(k as usize % n));
        let admit = |id: BackendId| Some(id) != black_box(down);
        match b.pick(black_box(pinned), admit) {
            Some(id) => {
                sink = sink.wrapping_add(id.0);
                if strategy == Strategy::LeastConn {
                    b.on_start(id);
                    // Finish every other request so the counts stay uneven.
                    if k % 2 == 0 {
                        b.on_finish(id);
                    }
                }
            }
            None => sink = sink.wrapping_add(1),
        }
    }
    let elapsed = start.elapsed();
    black_box(sink);
    elapsed.as_nanos() as f64 / picks as f64
}
