#!/usr/bin/env bash
# Load benchmark: our binary beside nginx and HAProxy (each with upstream
# keep-alive) and the origin hit directly, interleaved in one run by the
# shared harness, which reports req/s, p50/p99 and CPU µs per request of each
# target's whole process tree.
#
#   apt-get install -y wrk nginx haproxy      # once
#   benches/load.sh                           # the full matrix (~30 min)
#   benches/load.sh --bodies small --conns 50 --reps 3   # a ten-minute check
#
# Extra arguments go to ../shared/bench/run.sh (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
harness=${BENCH_HARNESS:-../shared/bench/run.sh}
[[ -x $harness ]] || { echo "load.sh: $harness not found (set BENCH_HARNESS)" >&2; exit 1; }
cargo build --release --bin load_balancer
exec "$harness" --proxy 'target/release/load_balancer -p {port} -b {b1} -b {b2} -w {workers} -l err' --label ours "$@"
