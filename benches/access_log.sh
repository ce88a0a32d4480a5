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
# shellcheck source=benches/lib.sh
source benches/lib.sh
setup access_log nginx
plain_origin 9500

declare -A cmd
base="$lb -H 127.0.0.1 -p 8080 -w $workers -l err -b 127.0.0.1:9500"
cmd[off]="$base"
cmd[combined]="$base --access-log $tmp/access.log"
cmd[json]="$base --access-log $tmp/access.json --access-log-format json"
targets=(off combined json)

before_run() { rm -f "$tmp"/access.*; }
run_rounds
report "access log"
