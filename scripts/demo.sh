#!/bin/bash
# Builds kefu and runs a demo: a private redis-server, a private PostgreSQL server for the
# archive (when PostgreSQL is installed; KEFU_DEMO_PG=0 skips it), a kefu-worker and kefu-gateway
# processes on one port with the retail bots (lua/bots/retail). Prints ready-to-open URLs for a
# customer (the demo shop with the chat widget), two agents (the workbench) and a supervisor (the
# console), how to talk the protocol by hand and how to export the archive. Ctrl-C stops
# everything.
# Usage: scripts/demo.sh [--smoke]   (--smoke: start, chat once customer <-> agent, close the
#        conversation, find it in the archive with kefu-export, stop)
set -eu
cd "$(dirname "$0")/.."
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
PY=/usr/bin/python3

scripts/deps.sh
if [ ! -x build/kefu-gateway ] || [ $smoke -eq 0 ]; then
    mkdir -p build
    cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >build/cmake.log 2>&1 || { cat build/cmake.log; exit 1; }
    cmake --build build -j"$(nproc)" 2>&1 | grep -Ev '^\[ *[0-9]+%\]' || true
fi

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_busy() { $PY -c "import socket,sys; s=socket.socket(); sys.exit(0 if s.connect_ex(('127.0.0.1',$1))==0 else 1)"; }

run=$(mktemp -d /tmp/kefu-demo.XXXXXX)
redis_port=$(free_port)
worker_http=$(free_port)
gw_port=${KEFU_PORT:-8080}
if [ $smoke -eq 1 ] || port_busy "$gw_port"; then gw_port=$(free_port); fi
secret="demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
pids=()
pg_home=""
as_pg=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$pg_home" ]; then
        "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_home/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$pg_home"
    fi
    rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

# AOF, fsync every second (as deploy/redis.conf.example): a Redis restart keeps the
# conversations (docs/operations.md, "What each persistence choice can lose")
# with the kefu Redis module, msg.send's fast path (docs/operations.md, "The kefu Redis module")
module=()
[ -f build/kefu_redis.so ] && module=(--loadmodule "$PWD/build/kefu_redis.so")
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync everysec --dir "$run" --logfile "$run/redis.log" "${module[@]}" &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# The archive (docs/operations.md, "Archive and export"): a private PostgreSQL on a loopback
# port, as the tests start one; the worker creates its tables. PostgreSQL refuses to run as root:
# then it runs as the `postgres` user, in a directory of its own ($run is private to us).
pg_bin=${KEFU_PG_BIN:-}
if [ -z "$pg_bin" ]; then   # the newest installed major version (one on Debian 12: 15)
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && pg_bin=$d; done
fi
pg_url=""
archive=()
if [ "${KEFU_DEMO_PG:-1}" = 0 ]; then
    echo "demo: PostgreSQL skipped (KEFU_DEMO_PG=0): closed conversations stay in Redis only" >&2
elif [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
    echo "demo: PostgreSQL is not installed (apt-get install postgresql): running without the" \
        "archive; closed conversations stay in Redis only" >&2
else
    pg_port=$(free_port)
    pg_home=$(mktemp -d /tmp/kefu-demo-pg.XXXXXX)
    if [ "$(id -u)" = 0 ]; then
        chown postgres "$pg_home"
        as_pg=(runuser -u postgres --)
    fi
    "${as_pg[@]}" "$pg_bin/initdb" -D "$pg_home/data" -U postgres --auth=trust -E UTF8 \
        --locale=C.UTF-8 --no-sync >"$run/initdb.log" 2>&1 || { cat "$run/initdb.log"; exit 1; }
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pg_home/data" -l "$pg_home/postgres.log" -w \
        -o "-p $pg_port -h 127.0.0.1 -k $pg_home/data" start >/dev/null ||
        { cat "$pg_home/postgres.log"; exit 1; }
    "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U postgres kefu
    pg_url="postgresql://postgres@127.0.0.1:$pg_port/kefu"
    # archived 10 s after the close (production: archive_delay_s 300, so the rating comes first)
    archive=(--archive-db "$pg_url" --archive-delay-s 10)
    [ $smoke -eq 1 ] && archive=(--archive-db "$pg_url" --archive-delay-s 0)
fi

export KEFU_REDIS="127.0.0.1:$redis_port" KEFU_JWT_SECRETS="$secret"
build/kefu-worker --log-level warn --http-port "$worker_http" "${archive[@]}" \
    --routes 'topic:refund=general/high,*=general' 2>"$run/worker.log" &
pids+=($!)
# The bots answer first and hand off to an agent (docs/bots.md); the smoke run keeps the plain
# queue its scripted chat expects.
bots=()
[ $smoke -eq 0 ] && bots=(--bots-dir lua/bots/retail)
build/kefu-gateway --bind 127.0.0.1 --port "$gw_port" --node-name demo "${bots[@]}" 2>"$run/gateway.log" &
pids+=($!)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$gw_port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
done
if ! curl -sf "http://127.0.0.1:$gw_port/readyz" >/dev/null; then
    echo "the gateway did not become ready; its log:"
    cat "$run/gateway.log"
    exit 1
fi
# The worker is ready once it reads the lifecycle stream and published its routes and rules
# (until then conversations are queued without its routing): ask its /readyz.
if ! build/kefu-worker --http-port "$worker_http" --wait-ready=10; then
    echo "the worker did not become ready; its log:"
    cat "$run/worker.log"
    exit 1
fi

cust=$(build/kefu-token --secret "$secret" --sub demo-customer --role customer --name "Demo Customer" --channel web --ttl 43200)
agent=$(build/kefu-token --secret "$secret" --sub demo-agent --role agent --name "Demo Agent" --skills general --max-chats 5 --ttl 43200)
agent2=$(build/kefu-token --secret "$secret" --sub demo-agent-2 --role agent --name "李娜 Li Na" --skills general --max-chats 5 --ttl 43200)
super=$(build/kefu-token --secret "$secret" --sub demo-supervisor --role supervisor --name "Demo Supervisor" --skills general --ttl 43200)

if [ $smoke -eq 1 ]; then
    # the web assets are served from the binary
    curl -sf "http://127.0.0.1:$gw_port/widget.js" | grep -q KefuWidget
    curl -sf "http://127.0.0.1:$gw_port/demo/" | grep -q widget.js
    echo "demo smoke: the widget and the demo page are served" >&2
    conv=$($PY - "$gw_port" "$cust" "$agent" <<'PYEOF'
import asyncio, json, sys, websockets
port, cust, agent = sys.argv[1], sys.argv[2], sys.argv[3]
async def recv(ws, want):
    while True:
        m = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if m.get("type") == want: return m
async def main():
    url = f"ws://127.0.0.1:{port}/ws?token="
    async with websockets.connect(url + cust) as c, websockets.connect(url + agent) as a:
        await recv(c, "welcome"); await recv(a, "welcome")
        await c.send(json.dumps({"type": "conv.open", "req": 1, "topic": "demo"}))
        conv = (await recv(c, "ok"))["conv"]
        await a.send(json.dumps({"type": "conv.accept", "req": 2, "conv": conv}))
        await recv(a, "ok")
        await c.send(json.dumps({"type": "msg.send", "req": 3, "conv": conv, "text": "你好", "cid": "d1"}))
        await recv(c, "ok")
        m = await recv(a, "msg")
        assert m["text"] == "你好", m
        print("demo smoke: customer -> agent message delivered:", m["id"], file=sys.stderr)
        await a.send(json.dumps({"type": "conv.close", "req": 4, "conv": conv}))
        await recv(a, "ok")
        print(conv)
asyncio.run(main())
PYEOF
    )
    # The message went through the kefu Redis module's command when the module is built.
    if [ ${#module[@]} -gt 0 ]; then
        if redis-cli -p "$redis_port" info commandstats | grep -q '^cmdstat_kefu.msgsend:'; then
            echo "demo smoke: msg.send was stored by the kefu Redis module (KEFU.MSGSEND)" >&2
        else
            echo "demo smoke: the kefu Redis module is loaded but the gateway did not use it" >&2
            exit 1
        fi
    fi
    # The demo's Redis keeps its data (AOF): restart it, and the conversation is still there.
    redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || true
    wait "${pids[0]}" 2>/dev/null || true
    redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly yes \
        --appendfsync everysec --dir "$run" --logfile "$run/redis.log" "${module[@]}" &
    pids[0]=$!
    for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    $PY - "$gw_port" "$cust" "$conv" <<'PYEOF'
import asyncio, json, sys, websockets
port, cust, conv = sys.argv[1], sys.argv[2], sys.argv[3]
async def main():
    for _ in range(50):   # the gateway reconnects to the restarted Redis within a few seconds
        try:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token=" + cust) as c:
                while json.loads(await asyncio.wait_for(c.recv(), 5)).get("type") != "welcome":
                    pass
                await c.send(json.dumps({"type": "history", "req": 1, "conv": conv}))
                while True:
                    m = json.loads(await asyncio.wait_for(c.recv(), 5))
                    if m.get("req") == 1: break
                if m["type"] == "ok":
                    assert [x["text"] for x in m["msgs"]] == ["你好"], m
                    print("demo smoke: the conversation survived a Redis restart (AOF)")
                    return
                assert m.get("code") == "unavailable", m
        except (OSError, websockets.exceptions.WebSocketException):
            pass
        await asyncio.sleep(0.2)
    raise SystemExit("demo smoke: the gateway did not serve the conversation after a Redis restart")
asyncio.run(main())
PYEOF
    [ -z "$pg_url" ] && exit 0
    # The closed conversation reaches the archive (archive_delay_s 0), and kefu-export finds it.
    for _ in $(seq 100); do
        if build/kefu-export --db "$pg_url" -o "$run/export.jsonl" 2>"$run/export.err" &&
            grep -q "\"$conv\"" "$run/export.jsonl"; then
            echo "demo smoke: the conversation is in the PostgreSQL archive (kefu-export)"
            exit 0
        fi
        sleep 0.2
    done
    echo "demo smoke: the closed conversation did not reach the archive"
    cat "$run/export.err" "$run/worker.log"
    exit 1
fi

# Tokens travel in the URL's fragment (after #): browsers never send it, so no log has them.
web="http://127.0.0.1:$gw_port"
cat <<MSG

kefu demo is running. Open these in a browser (each in its own tab or window):
  customer    $web/demo/#token=$cust
  agent 1     $web/agent/#token=$agent
  agent 2     $web/agent/#token=$agent2
  supervisor  $web/console/#token=$super
The customer chats with the bot first; type "人工" or "agent" to be passed to an agent
(set an agent available in the workbench first). The tokens are valid for 12 hours.
  gateway   ws://127.0.0.1:$gw_port/ws   (one process per core; logs: $run/gateway.log)
  metrics   http://127.0.0.1:$gw_port/metrics   health: /healthz  readiness: /readyz
  redis     127.0.0.1:$redis_port (private, in $run)
  worker    consuming the lifecycle stream (log: $run/worker.log)
            metrics http://127.0.0.1:$worker_http/metrics   health: /healthz  readiness: /readyz
MSG
if [ -n "$pg_url" ]; then
    cat <<MSG
  archive   PostgreSQL $pg_url (private, in $pg_home)
            closed conversations are archived 10 s after the close; export them with
              build/kefu-export --db '$pg_url' --format csv --what messages
              build/kefu-export --db '$pg_url' --from $(date -u +%F) > conversations.jsonl
            (masked by default; --no-mask for the texts as archived)
MSG
else
    cat <<MSG
  archive   none (PostgreSQL not started): closed conversations stay in Redis
MSG
fi
cat <<MSG

Or talk the protocol by hand (two terminals; type JSON frames, see docs/protocol.md):
  $PY -m websockets 'ws://127.0.0.1:$gw_port/ws?token=$cust'
  $PY -m websockets 'ws://127.0.0.1:$gw_port/ws?token=$agent'
As the agent, sign in:  {"type":"agent.status","req":1,"status":"available"}
As the customer:        {"type":"conv.open","req":1,"topic":"refund"}
  the bot greets; {"type":"msg.send","req":2,"conv":"<id>","text":"人工","cid":"h1"} hands off,
  and the worker assigns it to the agent (a conv.assigned push; refund topics go to the
  "general" group with high priority; or pick by hand: queue.list with "group":"general",
  then {"type":"conv.accept","req":2,"conv":"<id>"})
Both:                   {"type":"msg.send","req":3,"conv":"<id>","text":"你好","cid":"m1"}
More tokens: build/kefu-token --secret $secret --sub NAME --role customer|agent|supervisor

Ctrl-C stops the demo.
MSG
wait "${pids[2]}"
