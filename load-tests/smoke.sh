#!/bin/sh
# Smoke test of kefu-load: a redis-server and two gateway nodes on free ports, then a tiny run of
# each scenario (idle, relay in JSON and msgpack, journey with reconnects, worker assignment with
# a kefu-worker). Fails when anything is lost, duplicated, never assigned or fails, or a process
# reports a sanitizer error. About 20 s; at most ~120 s.
# Usage: load-tests/smoke.sh      Env: KEFU_BIN_DIR (default <repo>/build), KEFU_SMOKE_KEEP=1 keeps
# the logs, REDIS_SERVER (default redis-server).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
bin=${KEFU_BIN_DIR:-$repo/build}
redis_server=${REDIS_SERVER:-redis-server}

find_bin() {
    for d in "$bin" "$bin/gateway" "$bin/load-tests" "$bin/tools"; do
        if [ -x "$d/$1" ] && [ -f "$d/$1" ]; then echo "$d/$1"; return 0; fi
    done
    echo "smoke: $1 not found under $bin (build first or set KEFU_BIN_DIR)" >&2
    exit 2
}
gateway=$(find_bin kefu-gateway)
load=$(find_bin kefu-load)
worker=$(find_bin kefu-worker)
command -v "$redis_server" >/dev/null || { echo "smoke: $redis_server not found" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kefu-smoke.XXXXXX")
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do
        n=0
        while kill -0 "$p" 2>/dev/null && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ "${KEFU_SMOKE_KEEP:-}" = 1 ]; then echo "smoke: logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_ready() { # url seconds
    n=0
    while [ $n -lt $(($2 * 10)) ]; do
        if python3 - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=1).status == 200 else 1)
EOF
        then return 0; fi
        sleep 0.1
        n=$((n + 1))
    done
    echo "smoke: $1 not ready after $2 s" >&2
    return 1
}

secret=kefu-smoke-secret
rport=$(free_port)
"$redis_server" --port "$rport" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids="$pids $!"
# start_gateway NODE PORT: one gateway node, one process.
start_gateway() {
    "$gateway" --bind 127.0.0.1 --port "$2" --processes 1 --node-name "smoke$1" \
        --redis "127.0.0.1:$rport" --jwt-secrets "$secret" --rate-per-s 100000 --rate-burst 100000 \
        --log-level warn >"$work/gateway-$1.log" 2>&1 &
    pids="$pids $!"
}
ga=$(free_port)
start_gateway a "$ga"
gb=$(free_port)
start_gateway b "$gb"
wait_ready "http://127.0.0.1:$ga/readyz" 15
wait_ready "http://127.0.0.1:$gb/readyz" 15
urls="--url ws://127.0.0.1:$ga/ws --url ws://127.0.0.1:$gb/ws"

failed=0
run() { # name, kefu-load arguments...
    name=$1
    shift
    printf 'smoke: %-16s ' "$name"
    # shellcheck disable=SC2086
    if timeout -k 5 20 "$load" "$@" $urls --secret "$secret" --quiet --json "$work/$name.json" \
        --setup-timeout 10 --drain 3 \
        >"$work/$name.out" 2>&1; then
        echo ok
    else
        echo "FAILED (status $?)"
        sed 's/^/    /' "$work/$name.out"
        failed=1
    fi
}

run idle idle --conns 50 --duration 2 --ping-interval 0.5
run relay-json relay --pairs 5 --rate 100 --duration 2
run relay-msgpack relay --pairs 5 --rate 100 --duration 2 --format msgpack --both --auth url
run journey journey --customers 4 --agents 2 --msgs 4 --think-ms 20 --agent-delay-ms 30 \
    --reconnect-pct 50 --reconnect-ms 100 --pause-ms 100 --duration 3 --step-timeout-ms 5000
# Last: the worker's routes ('*=general') would send journey's conversations to a group its
# queue.list-polling agents do not see. Stopped here, and by cleanup on the way out.
# its own HTTP port: the default 9091 may be taken by another worker on this host
whttp=$(free_port)
"$worker" --redis "127.0.0.1:$rport" --routes '*=general' --log-level warn --http-port "$whttp" \
    >"$work/worker.log" 2>&1 &
wpid=$!
pids="$pids $wpid"
"$worker" --http-port "$whttp" --wait-ready=10 || { cat "$work/worker.log"; exit 1; }
run worker worker --customers 30 --agents 3 --max-chats 3 --rate 30
kill "$wpid" 2>/dev/null || true

# Every scenario must have had something to count (a broken tool might "succeed" idly).
python3 - "$work" <<'EOF' || failed=1
import json, sys
w = sys.argv[1]
need = {"idle": ("conn_ok", 50), "relay-json": ("delivered", 150),
        "relay-msgpack": ("delivered", 150), "journey": ("journeys_done", 2),
        "worker": ("convs_assigned", 30)}
bad = 0
for name, (counter, least) in need.items():
    try:
        r = json.load(open(f"{w}/{name}.json"))
    except OSError:
        continue  # that run failed and was reported above
    c = r["counters"]
    if name == "worker" and c["convs_assigned"] != c["convs_opened"]:
        print(f"smoke: worker: assigned={c['convs_assigned']} != opened={c['convs_opened']}")
        bad = 1
    if c[counter] < least or c["lost"] or c["duplicated"]:
        print(f"smoke: {name}: {counter}={c[counter]} (want >= {least}), lost={c['lost']}, "
              f"duplicated={c['duplicated']}")
        bad = 1
sys.exit(bad)
EOF

if grep -lE 'AddressSanitizer|LeakSanitizer|runtime error:' "$work"/*.log "$work"/*.out >/dev/null 2>&1; then
    echo "smoke: sanitizer report:"
    grep -hE -A5 'AddressSanitizer|LeakSanitizer|runtime error:' "$work"/*.log "$work"/*.out | head -40
    failed=1
fi
if [ $failed -ne 0 ]; then
    for f in "$work"/gateway-*.log; do echo "--- $f"; tail -20 "$f"; done
    echo "smoke: FAILED"
    exit 1
fi
echo "smoke: all scenarios passed"
