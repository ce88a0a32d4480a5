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

ticks() { # CPU ticks of every process in process group $1
    local sum=0 f
    for f in /proc/[0-9]*/stat; do
        { read -r -a st < "$f"; } 2>/dev/null || continue
        local rest=${st[*]}; rest=${rest##*) }; read -r -a x <<< "$rest"
        [[ ${x[2]} == "$1" ]] && sum=$((sum + x[11] + x[12]))
    done
    echo $sum
}

declare -A results
hz=$(getconf CLK_TCK)
for ((round = 0; round < reps; round++)); do
    n=${#targets[@]}
    for ((i = 0; i < n; i++)); do
        t=${targets[$(((i + round) % n))]}
        rm -f "$tmp"/access.*
        setsid bash -c "exec ${cmd[$t]}" >"$tmp/$t.log" 2>&1 &
        pid=$!
        for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
        wrk -c "$conns" -t 1 -d 2s http://127.0.0.1:8080/ >/dev/null
        before=$(ticks "$pid")
        out=$(wrk -c "$conns" -t 1 -d "${dur}s" --latency http://127.0.0.1:8080/)
        after=$(ticks "$pid")
        kill -TERM -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
        reqs=$(awk '/requests in/{print $1}' <<< "$out")
        p99=$(awk '$1=="99%"{v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
            printf "%.2f", v * (u=="us" ? 0.001 : u=="s" ? 1000 : 1)}' <<< "$out")
        us=$(awk -v d=$((after - before)) -v r="$reqs" -v hz="$hz" 'BEGIN{printf "%.2f", d * 1e6 / hz / r}')
        rps=$(awk -v r="$reqs" -v s="$dur" 'BEGIN{printf "%.0f", r / s}')
        echo "round $round $t: $rps req/s, p99 $p99 ms, $us µs CPU/request"
        results[$t]+="$rps $p99 $us;"
        sleep 1
    done
done
echo
echo "| access log | req/s | p99 | CPU µs/request |"
echo "|---|---|---|---|"
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
for t in "${targets[@]}"; do
    rows=$(tr ';' '\n' <<< "${results[$t]}" | awk NF)
    echo "| $t | $(awk '{print $1}' <<< "$rows" | median) | $(awk '{print $2}' <<< "$rows" | median) ms | $(awk '{print $3}' <<< "$rows" | median) |"
done
