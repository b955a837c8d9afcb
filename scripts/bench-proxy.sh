#!/usr/bin/env bash
# Ingress benchmark for the tee proxy: throughput and p99 latency of
# POST /v1/events (no id, so the proxy injects one) through
#   direct            client -> primary upstream
#   nginx             client -> nginx proxy_pass -> primary            (no mirror)
#   nginx-mirror      client -> nginx proxy_pass + `mirror` -> primary, shadow
#   hookshift         client -> hookshift ingress -> primary, mirror -> shadow
#                     (and with ingress.mirror = false, the no-mirror baseline)
#   bare-hyper        client -> proxy/examples/bare_proxy.rs -> primary (and
#                     mirror -> shadow): the least a proxy on hookshift's stack
#                     (hyper, tokio) does; no framework, id, capture or
#                     metrics. A floor for the hookshift rows: what the stack
#                     costs on this machine before the ingress does its work.
# and the mirroring ones again with a shadow that accepts connections and
# never answers. The two upstreams are one nginx (`return 202`), so every
# proxy is measured against the same upstreams on the same machine.
#
# Two measurements per target:
# - throughput: wrk as fast as the target answers (req/s, and the p99 at
#   that rate, which is mostly queueing in wrk's own connections);
# - latency at a fixed rate: proxy/examples/fixed_rate.rs sends RATE
#   requests/s (5,000 by default) open-loop and measures each request from
#   its due time, as wrk2 would (wrk2 is not packaged by Debian). "added
#   p99" is a target's p99 at RATE minus the direct path's p99 at RATE.
#   Over the same run, the proxy's CPU time per request (user + system,
#   from /proc: the hookshift process, or nginx's master and workers):
#   what the proxy asks of the two cores that it shares with the client
#   and the upstreams.
#
# Fairness: every server is started before the first measurement and stays
# up, and each round measures every target once, in turn, so a slow spell
# on this shared machine (other builds) hits all targets rather than one;
# the table shows each target's median over ROUNDS rounds. Every proxy
# shares the same cores with the client and the upstreams: nginx with
# worker_processes auto (one per core), hookshift with tokio's default (one
# worker per core).
#
# Needs wrk and nginx (Debian: apt-get install -y wrk nginx-light), python3
# (free ports, the hanging shadow) and cargo (builds hookshift and the
# fixed-rate client in release mode when they are missing).
#
#   scripts/bench-proxy.sh                        # 3 rounds, 10 s runs, 32 wrk connections
#   ROUNDS=5 DURATION=20s CONNECTIONS=64 RATE=5000 scripts/bench-proxy.sh
set -euo pipefail

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-5000}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${HOOKSHIFT_BIN:-$ROOT/target/release/hookshift}
LOADGEN=${LOADGEN_BIN:-$ROOT/target/release/examples/fixed_rate}
BARE=${BARE_BIN:-$ROOT/target/release/examples/bare_proxy}

for tool in wrk nginx python3 curl; do
    command -v "$tool" >/dev/null || { echo "bench-proxy: $tool not found (apt-get install -y wrk nginx-light python3 curl)" >&2; exit 1; }
done
if [ ! -x "$BIN" ]; then
    echo "bench-proxy: building $BIN (cargo build --release -p hookshift)" >&2
    (cd "$ROOT" && cargo build --release -p hookshift)
fi
if [ ! -x "$LOADGEN" ]; then
    echo "bench-proxy: building $LOADGEN (cargo build --release -p proxy --example fixed_rate)" >&2
    (cd "$ROOT" && cargo build --release -p proxy --example fixed_rate)
fi
if [ ! -x "$BARE" ]; then
    echo "bench-proxy: building $BARE (cargo build --release -p proxy --example bare_proxy)" >&2
    (cd "$ROOT" && cargo build --release -p proxy --example bare_proxy)
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

BODY='{"type":"order.created","payload":{"order":42,"note":"bench"}}'
cat > "$W/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$BODY'
wrk.headers["Content-Type"] = "application/json"
EOF

# Every target is started now: "name url pid" lines in measuring order (pid "-": no proxy process to read CPU time from).
TARGETS="$W/targets"
: > "$TARGETS"
echo "direct http://127.0.0.1:$PRIMARY -" >> "$TARGETS"

NG=$(port)
nginx_conf nginx "
    upstream primary { server 127.0.0.1:$PRIMARY; keepalive 128; }
    server { listen 127.0.0.1:$NG;
        location / { proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_pass http://primary; } }"
start_nginx nginx "$NG"
echo "nginx http://127.0.0.1:$NG ${PIDS[-1]}" >> "$TARGETS"

ADMINS=()
for shadow in off mirror hanging; do
    SP=$SHADOW; [ "$shadow" = hanging ] && SP=$HANG
    MIRROR=true; [ "$shadow" = off ] && MIRROR=false
    if [ "$shadow" != off ]; then
        NM=$(port)
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
        echo "nginx-mirror/shadow-$shadow http://127.0.0.1:$NM ${PIDS[-1]}" >> "$TARGETS"
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
    echo "hookshift/shadow-$shadow http://127.0.0.1:$IN ${PIDS[-1]}" >> "$TARGETS"
    ADMINS+=("hookshift/shadow-$shadow=http://127.0.0.1:$AD")
done

# The floor: the same stack as the ingress with none of its work.
for shadow in off mirror; do
    BP=$(port)
    MIRROR_ARGS=(); [ "$shadow" = mirror ] && MIRROR_ARGS=(--mirror "http://127.0.0.1:$SHADOW")
    "$BARE" --listen "127.0.0.1:$BP" --upstream "http://127.0.0.1:$PRIMARY" "${MIRROR_ARGS[@]}" > "$W/bare-$shadow.out" &
    PIDS+=($!)
    wait_port "$BP"
    echo "bare-hyper/shadow-$shadow http://127.0.0.1:$BP ${PIDS[-1]}" >> "$TARGETS"
done

RESULTS="$W/results" # round name rps wrk_p99_ms non2xx
FIXED="$W/fixed"     # round name p99_ms ok late errors cpu_us_per_request
: > "$RESULTS"
: > "$FIXED"

# wrk as fast as the target answers.
measure() { # round, name, url
    local round=$1 name=$2 url=$3 out="$W/wrk-${2//\//_}-$1.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$W/post.lua" "$url/v1/events" > "$out"
    local rps p99 non2xx
    rps=$(awk '/^Requests\/sec/ {print $2}' "$out")
    p99=$(awk '$1 == "99%" { v=$2; if (v ~ /us$/) {sub("us","",v); v/=1000} else if (v ~ /ms$/) {sub("ms","",v)} else if (v ~ /s$/) {sub("s","",v); v*=1000}; print v }' "$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' "$out")
    non2xx=${non2xx:-0}
    echo "$round $name $rps $p99 $non2xx" >> "$RESULTS"
    printf '  round %s  %-28s %10.0f req/s   p99 %8.3f ms   non-2xx %s\n' "$round" "$name" "$rps" "$p99" "$non2xx" >&2
}

# CPU time (user + system) of a process and its children so far, in clock
# ticks; "-" (the direct path has no proxy) gives 0.
TICKS_PER_S=$(getconf CLK_TCK)
cpu_ticks() { # pid
    [ "$1" = - ] && { echo 0; return; }
    local total=0 p
    for p in "$1" $(pgrep -P "$1" || true); do
        # utime and stime: fields 14 and 15, counted after the ")" that
        # closes the command name.
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{ print $12 + $13 }')))
    done
    echo "$total"
}

# The fixed-rate client at $RATE requests/s.
measure_fixed() { # round, name, url, pid
    local round=$1 name=$2 url=$3 pid=$4 line before after cpu
    before=$(cpu_ticks "$pid")
    line=$("$LOADGEN" --url "$url/v1/events" --rate "$RATE" --duration "${DURATION%s}" \
        --connections "$RATE_CONNECTIONS" --body "$BODY")
    after=$(cpu_ticks "$pid")
    field() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<< "$line"; }
    cpu=nan
    [ "$pid" != - ] && cpu=$(awk -v t=$((after - before)) -v hz="$TICKS_PER_S" -v n="$(field ok)" \
        'BEGIN { printf "%.0f", (n > 0) ? t * 1e6 / hz / n : 0 }')
    echo "$round $name $(field p99_ms) $(field ok) $(field late) $(field errors) $cpu" >> "$FIXED"
    printf '  round %s  %-28s %s cpu_us_per_request=%s\n' "$round" "$name" "$line" "$cpu" >&2
}

echo "bench-proxy: $ROUNDS rounds; wrk $DURATION, $CONNECTIONS connections, $THREADS threads; fixed rate $RATE req/s over $RATE_CONNECTIONS connections for $DURATION; $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for round in $(seq "$ROUNDS"); do
    while read -r name url _; do measure "$round" "$name" "$url"; done < "$TARGETS"
    while read -r name url pid; do measure_fixed "$round" "$name" "$url" "$pid"; done < "$TARGETS"
done
echo "bench-proxy: done; load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for a in "${ADMINS[@]}"; do
    echo "  ${a%%=*}:" >&2
    curl -s "${a#*=}/metrics" | grep -E '^hookshift_proxy_[a-z_]+(_total|_depth) ' | sed 's/^/    /' >&2 || true
done

# Each target's medians over the rounds, in measuring order.
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
SUMMARY="$W/summary" # name rps wrk_p99 fixed_p99 late cpu_us
: > "$SUMMARY"
while read -r name _; do
    rps=$(awk -v n="$name" '$2 == n { print $3 }' "$RESULTS" | median)
    wp99=$(awk -v n="$name" '$2 == n { print $4 }' "$RESULTS" | median)
    fp99=$(awk -v n="$name" '$2 == n { print $3 }' "$FIXED" | median)
    late=$(awk -v n="$name" '$2 == n { s += $5 } END { print s + 0 }' "$FIXED")
    cpu=$(awk -v n="$name" '$2 == n { print $7 }' "$FIXED" | median)
    echo "$name $rps $wp99 $fp99 $late $cpu" >> "$SUMMARY"
done < "$TARGETS"

echo
echo "Medians of $ROUNDS rounds; wrk: $CONNECTIONS connections, $DURATION; fixed rate: $RATE req/s, $RATE_CONNECTIONS connections, $DURATION."
echo
echo "| target | requests/s (wrk) | p99 ms (wrk) | p99 ms at $RATE req/s | added p99 ms at $RATE req/s | proxy CPU µs/request at $RATE req/s |"
echo "|---|---:|---:|---:|---:|---:|"
read -r _ _ _ DIRECT_FP99 _ < <(grep '^direct ' "$SUMMARY")
while read -r name rps wp99 fp99 late cpu; do
    added=$(awk -v a="$fp99" -v b="$DIRECT_FP99" 'BEGIN { printf "%.3f", a - b }')
    note=""
    [ "$late" != 0 ] && note=" ($late late)"
    [ "$cpu" = nan ] && cpu="—"
    printf '| %s | %.0f | %.3f | %.3f%s | %s | %s |\n' "$name" "$rps" "$wp99" "$fp99" "$note" "$added" "$cpu"
done < "$SUMMARY"
awk -v rate="$RATE" -v direct="$DIRECT_FP99" '
    $1 == "nginx-mirror/shadow-mirror" { ngm = $2 }
    $1 == "hookshift/shadow-mirror" { hs = $2; hsp = $4 }
    $1 == "hookshift/shadow-hanging" { hh = $2; hhp = $4 }
    $1 == "hookshift/shadow-off" { hoff = $2 }
    $1 == "bare-hyper/shadow-mirror" { bmp = $4 }
    END {
        printf "\nadded p99 at %d req/s, hookshift mirroring: %.3f ms; with a hanging shadow: %.3f ms (target < 1 ms)\n", rate, hsp - direct, hhp - direct
        printf "floor of the stack (bare-hyper, mirroring): added p99 %.3f ms\n", bmp - direct
        printf "hookshift mirroring throughput vs nginx mirror: %.2fx (target >= 1)\n", hs / ngm
        printf "hookshift with a hanging shadow vs hookshift without mirroring: %.0f%% (target >= 95%%)\n", 100 * hh / hoff
    }' "$SUMMARY"
