#!/usr/bin/env bash
# Cost of the access log (issue 14): the same binary with the access log
# off, to a file (combined) and to a file (JSON), in front of one nginx
# origin serving a small body; rounds alternate the order.
#
#   apt-get install -y wrk nginx    # once
#   benches/access_log.sh           # 3 rounds, 6 s each, 2 workers, c50
#   REPS=5 DUR=10 WORKERS=1 CONNS=200 benches/access_log.sh
#
# Prints the median req/s, p99 and CPU µs per request of the balancer's
# process tree for each setting.
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${DUR:-6}; conns=${CONNS:-50}; reps=${REPS:-3}; workers=${WORKERS:-2}
for tool in wrk nginx curl; do
    command -v "$tool" >/dev/null || { echo "access_log.sh: $tool is not installed" >&2; exit 1; }
done
cargo build --release --bin load_balancer
lb=$PWD/target/release/load_balancer
tmp=$(mktemp -d /tmp/lbaccess.XXXX)
chmod 755 "$tmp"
cleanup() {
    [[ -f $tmp/origin.pid ]] && kill "$(cat "$tmp/origin.pid")" 2>/dev/null
    [[ -n ${pid:-} ]] && kill -TERM -- -"$pid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
printf 'hello\n' > "$tmp/body"
cat > "$tmp/origin.conf" <<CONF
worker_processes 1;
pid $tmp/origin.pid;
error_log $tmp/origin.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server { listen 127.0.0.1:9500; root $tmp; location / { try_files /body =404; } }
}
CONF
nginx -c "$tmp/origin.conf"

declare -A cmd
base="$lb -H 127.0.0.1 -p 8080 -w $workers -l err -b 127.0.0.1:9500"
cmd[off]="$base"
cmd[combined]="$base --access-log $tmp/access.log"
cmd[json]="$base --access-log $tmp/access.json --access-log-format json"
targets=(off combined json)

before_run() { rm -f "$tmp"/access.*; }
# shellcheck source=benches/lib.sh
source benches/lib.sh
run_rounds
report "access log"
