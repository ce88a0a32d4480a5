# Shared by the benchmark scripts that compare settings or peers of their
# own (access_log.sh, reload.sh, tls.sh): set-up, an nginx origin, rounds
# over targets in rotating order, wrk against 127.0.0.1:8080, CPU of each
# target's whole process tree, medians.
#
# Source it first, then `setup NAME TOOL...` (builds the binary as $lb and
# makes the scratch directory $tmp, removed at exit unless KEEP=1). Before
# `run_rounds` the script sets:
#   cmd[NAME]="command line"   (declare -A cmd), run as `setsid bash -c`,
#                              must listen on 127.0.0.1:8080
#   targets=(NAME ...)         the order of round 0
#   conns dur reps             wrk connections, seconds per run, rounds
# and may define `before_run NAME` (called before each target starts) and
# `during_run NAME` (run in the background while the measured wrk runs,
# then killed). Then: `run_rounds` and `report`.

setup() {
    local name=$1 tool
    shift
    for tool in wrk curl "$@"; do
        command -v "$tool" >/dev/null || { echo "$name: $tool is not installed" >&2; exit 1; }
    done
    cargo build --release --bin load_balancer
    lb=$PWD/target/release/load_balancer
    tmp=$(mktemp -d "/tmp/lb$name.XXXX")
    chmod 755 "$tmp"  # the origin nginx workers (www-data) read the body here
    trap cleanup EXIT
}

# Stops the origin and the target running now; removes $tmp unless KEEP=1.
cleanup() {
    [[ -f $tmp/origin.pid ]] && kill "$(cat "$tmp/origin.pid")" 2>/dev/null
    [[ -n ${pid:-} ]] && kill -TERM -- -"$pid" 2>/dev/null
    [[ -n ${KEEP:-} ]] || rm -rf "$tmp"
}

# Starts the nginx origin (one worker, keep-alive without limits) with $1
# inside its http block: the servers, and whatever they share.
start_origin() {
    cat > "$tmp/origin.conf" <<CONF
worker_processes 1;
pid $tmp/origin.pid;
error_log $tmp/origin.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
$1
}
CONF
    nginx -c "$tmp/origin.conf"
}

# An nginx origin answering "hello\n" over plain HTTP/1.1 on each given
# port of 127.0.0.1.
plain_origin() {
    local listens="" port
    for port in "$@"; do listens+="listen 127.0.0.1:$port; "; done
    printf 'hello\n' > "$tmp/body"
    start_origin "    server { $listens root $tmp; location / { try_files /body =404; } }"
}

# CPU ticks of every process in process group $1.
ticks() {
    local sum=0 f
    for f in /proc/[0-9]*/stat; do
        { read -r -a st < "$f"; } 2>/dev/null || continue
        # Fields after the ')' of comm: state=0 ppid=1 pgrp=2 ... utime=11 stime=12
        local rest=${st[*]}; rest=${rest##*) }; read -r -a x <<< "$rest"
        [[ ${x[2]} == "$1" ]] && sum=$((sum + x[11] + x[12]))
    done
    echo $sum
}

declare -A results
run_rounds() {
    local hz round i n t pid out before after reqs errs p99 us rps
    hz=$(getconf CLK_TCK)
    n=${#targets[@]}
    for ((round = 0; round < reps; round++)); do
        for ((i = 0; i < n; i++)); do
            t=${targets[$(((i + round) % n))]}
            if declare -F before_run >/dev/null; then before_run "$t"; fi
            setsid bash -c "exec ${cmd[$t]}" >"$tmp/$t.log" 2>&1 &
            pid=$!
            for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:8080/ && break; sleep 0.1; done
            wrk -c "$conns" -t 1 -d 2s http://127.0.0.1:8080/ >/dev/null
            local during=
            if declare -F during_run >/dev/null; then during_run "$t" & during=$!; fi
            before=$(ticks "$pid")
            out=$(wrk -c "$conns" -t 1 -d "${dur}s" --latency http://127.0.0.1:8080/)
            after=$(ticks "$pid")
            if [[ -n $during ]]; then kill "$during" 2>/dev/null || true; wait "$during" 2>/dev/null || true; fi
            kill -TERM -- -"$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
            reqs=$(awk '/requests in/{print $1}' <<< "$out")
            errs=$(awk '/Non-2xx|Socket errors/{print}' <<< "$out" | tr '\n' ' ')
            # In ms, whatever unit wrk chose.
            p99=$(awk '$1=="99%"{v=$2; u=v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
                printf "%.2f", v * (u=="us" ? 0.001 : u=="s" ? 1000 : 1)}' <<< "$out")
            us=$(awk -v d=$((after - before)) -v r="$reqs" -v hz="$hz" 'BEGIN{printf "%.2f", d * 1e6 / hz / r}')
            rps=$(awk -v r="$reqs" -v s="$dur" 'BEGIN{printf "%.0f", r / s}')
            echo "round $round $t: $rps req/s, p99 $p99 ms, $us µs CPU/request $errs"
            results[$t]+="$rps $p99 $us;"
            # Let the origin's TIME_WAIT and the kernel settle between targets.
            sleep 1
        done
    done
}

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# The table of medians, one row per target; $1 names the first column.
report() {
    local t rows
    echo
    echo "| ${1:-target} | req/s | p99 | CPU µs/request |"
    echo "|---|---|---|---|"
    for t in "${targets[@]}"; do
        rows=$(tr ';' '\n' <<< "${results[$t]}" | awk NF)
        echo "| $t | $(awk '{print $1}' <<< "$rows" | median) | $(awk '{print $2}' <<< "$rows" | median) ms | $(awk '{print $3}' <<< "$rows" | median) |"
    done
}
