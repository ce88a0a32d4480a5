#!/usr/bin/env bash
# Config reload under load (issue 13): the same binary and config served
# with no reload, and with the backend set changed every second while wrk
# runs (a second backend added, then removed again), in front of two nginx
# origins serving a small body; rounds alternate the order.
#
#   apt-get install -y wrk nginx    # once
#   benches/reload.sh               # 3 rounds, 10 s each, 2 workers, c50
#   REPS=5 DUR=20 WORKERS=1 CONNS=200 EVERY=0.5 benches/reload.sh
#
# Prints the median req/s, p99 and CPU µs per request of each setting, and
# wrk's error counts per run (a reload must fail no request).
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${DUR:-10}; conns=${CONNS:-50}; reps=${REPS:-3}; workers=${WORKERS:-2}
every=${EVERY:-1}
# shellcheck source=benches/lib.sh
source benches/lib.sh
setup reload nginx
plain_origin 9500 9501

one='{"backends": [{"host": "127.0.0.1", "port": 9500}]}'
two='{"backends": [{"host": "127.0.0.1", "port": 9500}, {"host": "127.0.0.1", "port": 9501}]}'
# The config in a directory of its own: the watcher watches the file's
# directory, and notify 8 asks inotify for every open there too, so the
# origin's opens of its body file would each cost an event.
mkdir "$tmp/conf"
conf=$tmp/conf
echo "$one" > "$conf/config.json"

declare -A cmd
cmd[steady]="$lb -H 127.0.0.1 -p 8080 -w $workers -l info -c $conf/config.json"
cmd[reloading]="${cmd[steady]}"
targets=(steady reloading)

before_run() { echo "$one" > "$conf/config.json"; }
# Write-temp-then-rename, as editors and config managers do; the watcher
# picks each one up.
during_run() {
    [[ $1 == reloading ]] || return 0
    local n=0
    while sleep "$every"; do
        n=$((n + 1))
        if ((n % 2)); then echo "$two"; else echo "$one"; fi > "$conf/config.tmp"
        mv "$conf/config.tmp" "$conf/config.json"
    done
}
run_rounds
report "reloads"
echo
echo "reloads applied in the last reloading run:"
grep -c "config reloaded" "$tmp/reloading.log" || true
