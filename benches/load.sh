#!/usr/bin/env bash
# Load benchmark: our binary beside nginx and HAProxy (each with upstream
# keep-alive) and the origin hit directly, interleaved in one run by the
# shared harness, which reports req/s, p50/p99 and CPU µs per request of each
# target's whole process tree.
#
#   apt-get install -y wrk nginx haproxy      # once
#   benches/load.sh                           # the full matrix (~30 min)
#   benches/load.sh --bodies small --conns 50 --reps 3   # a ten-minute check
#   benches/load.sh --floor --bodies small --workers 1   # also the cost floor
#
# --floor (first argument) adds benches/floor/relay.rs: a byte relay with our
# process model and no HTTP, i.e. what the kernel and the event loop cost
# alone (small bodies only). Other arguments go to ../shared/bench/run.sh
# (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${BENCH_HARNESS:-../shared/bench/run.sh}
[[ -x $harness ]] || { echo "load.sh: $harness not found (set BENCH_HARNESS)" >&2; exit 1; }
floor=()
if [[ ${1:-} == --floor ]]; then
    shift
    cargo build --release --example relay_floor
    floor=(--proxy 'target/release/examples/relay_floor -w {workers} {port} {b1} {b2}' --label floor)
fi
cargo build --release --bin load_balancer
exec "$harness" --proxy 'target/release/load_balancer -p {port} -b {b1} -b {b2} -w {workers} -l err' --label ours "${floor[@]}" "$@"
