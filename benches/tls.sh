#!/usr/bin/env bash
# TLS and HTTP/2 backends beside the peers (issue 12): our binary, nginx
# (`proxy_pass https://`, upstream keep-alive, session reuse) and HAProxy
# (`ssl`, and `ssl alpn h2` for HTTP/2) in front of one nginx origin that
# serves a small answer over TLS with HTTP/1.1 (port 9444) and with h2
# (port 9443). Certificates are not verified by any proxy here (-k, nginx's
# default, `verify none`): with keep-alive connections the handshake is not
# what is measured.
#
#   apt-get install -y wrk nginx haproxy openssl    # once
#   benches/tls.sh                                  # 3 rounds, 8 s each, c50
#   REPS=5 DUR=10 CONNS=200 WORKERS=2 benches/tls.sh
#   NEWCONN=1 benches/tls.sh    # new backend TLS connections per second
#
# With NEWCONN=1 the origin closes every connection after one response, so
# each request costs the proxy a new TLS connection to it: `-resumed` rows
# against an origin that issues session tickets (TLS 1.3 resumption),
# `-full` rows against one with tickets and its session cache off (a full
# handshake each time). req/s is then new backend connections per second.
#
# Prints, per target, the median req/s, p99 and CPU µs per request of the
# proxy's whole process tree (rounds rotate the order, so drift on a shared
# machine hits every target alike).
set -euo pipefail
cd "$(dirname "$0")/.."
dur=${DUR:-8}; conns=${CONNS:-50}; reps=${REPS:-3}; workers=${WORKERS:-1}
body=${BODY:-small}
# shellcheck source=benches/lib.sh
source benches/lib.sh
setup tls nginx haproxy openssl
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/key.pem" -out "$tmp/cert.pem" \
    -days 2 -subj /CN=localhost -addext subjectAltName=DNS:localhost 2>/dev/null
case $body in
    small) head -c 6 /dev/zero | tr '\0' 'a' > "$tmp/body" ;;
    16k) head -c 16384 /dev/zero | tr '\0' 'a' > "$tmp/body" ;;
    *) echo "BODY is small or 16k" >&2; exit 1 ;;
esac

start_origin "    ssl_certificate $tmp/cert.pem;
    ssl_certificate_key $tmp/key.pem;
    server { listen 127.0.0.1:9443 ssl http2; root $tmp; location / { try_files /body =404; } }
    server { listen 127.0.0.1:9444 ssl; root $tmp; location / { try_files /body =404; } }
    server { listen 127.0.0.1:9445 ssl; keepalive_timeout 0; root $tmp;
             location / { try_files /body =404; } }
    server { listen 127.0.0.1:9446 ssl; keepalive_timeout 0; root $tmp;
             ssl_session_tickets off; ssl_session_cache off;
             location / { try_files /body =404; } }"

nginx_conf() { # $1: origin port, $2: name
    cat > "$tmp/nginx-$2.conf" <<CONF
worker_processes $workers;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    upstream up { server 127.0.0.1:$1; keepalive 64; }
    server {
        listen 127.0.0.1:8080;
        location / {
            proxy_pass https://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_session_reuse on;
        }
    }
}
CONF
    echo "nginx -c $tmp/nginx-$2.conf"
}

haproxy_conf() { # $1: server options
    cat > "$tmp/haproxy-$2.cfg" <<CONF
global
    nbthread $workers
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend f
    bind 127.0.0.1:8080
    default_backend b
backend b
    server s1 $1
CONF
    echo "haproxy -f $tmp/haproxy-$2.cfg"
}

declare -A cmd
ours="$lb -H 127.0.0.1 -p 8080 -w $workers -l err -k -b https://localhost"
if [[ ${NEWCONN:-0} == 1 ]]; then
    for kind in resumed:9445 full:9446; do
        name=${kind%%:*} port=${kind##*:}
        cmd[ours-new-$name]="$ours:$port"
        cmd[nginx-new-$name]=$(nginx_conf "$port" "new-$name")
        cmd[haproxy-new-$name]=$(haproxy_conf "127.0.0.1:$port ssl verify none alpn http/1.1" "new-$name")
    done
    targets=(ours-new-resumed nginx-new-resumed haproxy-new-resumed
        ours-new-full nginx-new-full haproxy-new-full)
else
    cmd[ours-tls]="$ours:9444"
    cmd[ours-h2]="$ours:9443"
    cmd[nginx-tls]=$(nginx_conf 9444 tls)
    cmd[haproxy-tls]=$(haproxy_conf "127.0.0.1:9444 ssl verify none alpn http/1.1" tls)
    cmd[haproxy-h2]=$(haproxy_conf "127.0.0.1:9443 ssl verify none alpn h2" h2)
    targets=(ours-tls nginx-tls haproxy-tls ours-h2 haproxy-h2)
fi

run_rounds
report
