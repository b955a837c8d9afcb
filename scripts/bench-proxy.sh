#!/usr/bin/env bash
# Ingress benchmark for the tee proxy: throughput and p99 latency of
# POST /v1/events (no id, so the proxy injects one) through
#   direct            wrk -> primary upstream
#   nginx             wrk -> nginx proxy_pass -> primary            (no mirror)
#   nginx-mirror      wrk -> nginx proxy_pass + `mirror` -> primary, shadow
#   hookshift         wrk -> hookshift ingress -> primary, mirror -> shadow
#                     (and with ingress.mirror = false, the no-mirror baseline)
# and the last two again with a shadow that accepts connections and never
# answers. The two upstreams are one nginx (`return 202`), so every proxy is
# measured against the same upstreams on the same machine.
#
# Needs wrk and nginx (Debian: apt-get install -y wrk nginx-light) and
# python3 (free ports, the hanging shadow).
#
#   scripts/bench-proxy.sh                      # 10 s per run, 32 connections
#   DURATION=30s CONNECTIONS=64 scripts/bench-proxy.sh
#
# wrk drives each target as fast as it answers, so the p99 printed is the
# p99 at the throughput printed; when that throughput is at or above 5,000
# requests/s it bounds the p99 at 5,000 requests/s from above.
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${HOOKSHIFT_BIN:-$ROOT/target/release/hookshift}

for tool in wrk nginx python3; do
    command -v "$tool" >/dev/null || { echo "bench-proxy: $tool not found (apt-get install -y wrk nginx-light python3)" >&2; exit 1; }
done
if [ ! -x "$BIN" ]; then
    echo "bench-proxy: building $BIN (cargo build --release -p hookshift)" >&2
    (cd "$ROOT" && cargo build --release -p hookshift)
fi

W=$(mktemp -d)
chmod 755 "$W"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$W"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$1),0.2)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "bench-proxy: nothing listens on port $1" >&2; exit 1
}

PRIMARY=$(port); SHADOW=$(port); HANG=$(port)
NGINX_USER=""; [ "$(id -u)" = 0 ] && NGINX_USER="user root;"

nginx_conf() { # name, body of the http block
    mkdir -p "$W/$1"
    cat > "$W/$1/nginx.conf" <<EOF
$NGINX_USER
worker_processes auto;
daemon off;
pid $W/$1/nginx.pid;
error_log $W/$1/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $W/$1/body;
    proxy_temp_path $W/$1/proxy;
    fastcgi_temp_path $W/$1/fastcgi;
    uwsgi_temp_path $W/$1/uwsgi;
    scgi_temp_path $W/$1/scgi;
    $2
}
EOF
}

start_nginx() { # name, port
    nginx -p "$W/$1" -c "$W/$1/nginx.conf" &
    PIDS+=($!)
    wait_port "$2"
}

# The two upstreams: the senders' APIs, answering like an accepted event.
nginx_conf upstreams "
    server { listen 127.0.0.1:$PRIMARY; location / { default_type application/json; return 202 '{\"id\":\"evt\",\"deliveries\":[]}'; } }
    server { listen 127.0.0.1:$SHADOW;  location / { default_type application/json; return 202 '{\"id\":\"evt\",\"deliveries\":[]}'; } }"
start_nginx upstreams "$PRIMARY"

# The hanging shadow: accepts and holds connections, never reads or answers.
cat > "$W/hang.py" <<EOF
import asyncio
held = []
async def hold(reader, writer):
    held.append(writer)
    await asyncio.Event().wait()
async def main():
    server = await asyncio.start_server(hold, "127.0.0.1", $HANG, backlog=4096)
    async with server:
        await server.serve_forever()
asyncio.run(main())
EOF
python3 "$W/hang.py" &
PIDS+=($!)
wait_port "$HANG"

cat > "$W/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"type":"order.created","payload":{"order":42,"note":"bench"}}'
wrk.headers["Content-Type"] = "application/json"
EOF

RESULTS="$W/results"
: > "$RESULTS"
# Runs wrk against $2 and appends "name rps p99_ms non2xx".
measure() {
    local name=$1 url=$2 out="$W/wrk-${1//\//_}.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$W/post.lua" "$url/v1/events" > "$out"
    local rps p99 non2xx
    rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
    p99=$(awk '$1 == "99%" { v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v }' "$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$out"); non2xx=${non2xx:-0}
    echo "$name $rps $p99 $non2xx" >> "$RESULTS"
    printf '  %-28s %10.0f req/s   p99 %8.3f ms   non-2xx %s\n' "$name" "$rps" "$p99" "$non2xx" >&2
}

echo "bench-proxy: $DURATION per run, $CONNECTIONS connections, $THREADS wrk threads, $(nproc) cores" >&2

measure direct "http://127.0.0.1:$PRIMARY"

NG=$(port)
nginx_conf nginx "
    upstream primary { server 127.0.0.1:$PRIMARY; keepalive 128; }
    server { listen 127.0.0.1:$NG;
        location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://primary; } }"
start_nginx nginx "$NG"
measure nginx "http://127.0.0.1:$NG"

for shadow in off mirror hanging; do
    SP=$SHADOW; [ "$shadow" = hanging ] && SP=$HANG
    MIRROR=true; [ "$shadow" = off ] && MIRROR=false
    NM=$(port)
    if [ "$shadow" != off ]; then
    nginx_conf "nginx-$shadow" "
    upstream primary { server 127.0.0.1:$PRIMARY; keepalive 128; }
    upstream shadow { server 127.0.0.1:$SP; keepalive 128; }
    server { listen 127.0.0.1:$NM;
        location / { mirror /mirror; mirror_request_body on;
            proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://primary; }
        location = /mirror { internal;
            proxy_http_version 1.1; proxy_set_header Connection \"\";
            proxy_connect_timeout 1s; proxy_read_timeout 10s; proxy_send_timeout 10s;
            proxy_pass http://shadow\$request_uri; } }"
    start_nginx "nginx-$shadow" "$NM"
    measure "nginx-mirror/shadow-$shadow" "http://127.0.0.1:$NM"
    fi

    IN=$(port); EL=$(port); EE=$(port); AD=$(port)
    mkdir -p "$W/hs-$shadow"
    cat > "$W/hs-$shadow/proxy.toml" <<EOF
api_primary = "legacy"
capture_store = "sqlite://$W/hs-$shadow/captures.db"
[listen]
ingress = "127.0.0.1:$IN"
egress_legacy = "127.0.0.1:$EL"
egress_engine = "127.0.0.1:$EE"
admin = "127.0.0.1:$AD"
[senders.legacy]
api = "http://127.0.0.1:$PRIMARY"
[senders.engine]
api = "http://127.0.0.1:$SP"
[ingress]
mirror = $MIRROR
queue_bound = 1024
mirror_workers = 64
shadow_timeout = "10s"
EOF
    RUST_LOG=warn "$BIN" proxy serve --config "$W/hs-$shadow/proxy.toml" > "$W/hs-$shadow/out" 2> "$W/hs-$shadow/err" &
    PIDS+=($!)
    wait_port "$IN"
    measure "hookshift/shadow-$shadow" "http://127.0.0.1:$IN"
    curl -s "http://127.0.0.1:$AD/metrics" | grep -E '^hookshift_proxy_(mirrored|mirror_dropped|shadow_errors|capture_dropped)_total' | sed 's/^/    /' >&2 || true
done

echo
echo "| target | requests/s | p99 ms | added p99 ms (vs direct) |"
echo "|---|---:|---:|---:|"
read -r _ _ DIRECT_P99 _ < <(grep '^direct ' "$RESULTS")
while read -r name rps p99 non2xx; do
    added=$(awk -v a="$p99" -v b="$DIRECT_P99" 'BEGIN { printf "%.3f", a - b }')
    printf '| %s | %.0f | %.3f | %s |\n' "$name" "$rps" "$p99" "$added"
done < "$RESULTS"
awk '
    $1 == "nginx" { base = $2 }
    $1 == "nginx-mirror/shadow-mirror" { ngm = $2 }
    $1 == "hookshift/shadow-mirror" { hs = $2 }
    $1 == "hookshift/shadow-hanging" { hh = $2 }
    $1 == "hookshift/shadow-off" { hoff = $2 }
    END {
        printf "\nhookshift throughput vs nginx mirror: %.2fx (target >= 1)\n", hs / ngm
        printf "hookshift with a hanging shadow vs hookshift without mirroring: %.0f%% (target >= 95%%)\n", 100 * hh / hoff
    }' "$RESULTS"
