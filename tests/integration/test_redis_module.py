"""The kefu Redis module (redis-module/kefu_redis.c): KEFU.MSGSEND must do exactly what the
msg_send script does (same replies, same data), replicate and persist as plain commands (a
replica or an AOF replay without the module ends with the same data), route in a Redis Cluster,
and be used by the gateway where it is loaded, and only there."""

import hashlib
import json
import re
import time

import kefu_harness as H
from kefu_client import connect, open_assigned, run, send_msg

MODULE = str(H.BIN_DIR / "kefu_redis.so")
SCRIPT = (H.REPO / "lua" / "redis" / "msg_send.lua").read_text()


def tok(cid):
    return "\n" + hashlib.sha1(cid.encode()).hexdigest()[:16] + " "


def seed(addr):
    """The same starting conversations on a server."""
    c = lambda *a: H.redis_call(addr, *a)
    c("HSET", "m:A", "customer", "c1", "agent", "a1", "state", "open")
    c("HSET", "m:B", "customer", "c2", "agent", "a2", "state", "closed")
    c("HSET", "m:C", "customer", "c3", "agent", "a3", "state", "open", "sups", "s1\ns2", "sup:s1", "1")
    c("HSET", "m:L", "customer", "c4", "agent", "a4", "state", "open")   # from before "last"
    c("XADD", "s:L", "5-1", "from", "c4", "text", "old")
    c("HSET", "m:W", "customer", "c5", "agent", "a5", "state", "open")
    c("SET", "s:W", "not a stream")
    c("HSET", "m:T", "customer", "c6", "agent", "a6", "state", "open")
    c("HSET", "m:G", "customer", "c7", "agent", "a7", "state", "open")


# (conv, user, role, text, cid) batches, each one call; maxlen and window size per call
BATCHES = [
    [("A", "c1", "customer", "hello", "a1")],
    [("A", "a1", "agent", "hi", "a2"), ("A", "c1", "customer", "again", "a3"),
     ("A", "c1", "customer", "retry", "a1"), ("A", "a1", "agent", "second", "a4")],
    [("B", "c2", "customer", "x", "b1"), ("B", "a2", "agent", "x", "b2"),
     ("A", "c2", "customer", "x", "b3"), ("A", "a9", "agent", "x", "b4")],
    [("C", "s1", "supervisor", "joined", "c1"), ("C", "s3", "supervisor", "no", "c2"),
     ("C", "s2", "admin", "no", "c3"), ("C", "a3", "agent", "sups", "c4"),
     ("C", "c3", "customer", "\u4f60\u597d", "c5")],
    [("L", "c4", "customer", "new", "l1")],
    [("W", "c5", "customer", "lost", "w1"), ("A", "c1", "customer", "kept", "w2")],
    [("X", "c1", "customer", "nobody", "x1")],
]


def call(addr, native, batch, maxlen=1000, winbytes=80):
    keys, args = [], [maxlen, winbytes]
    for conv, user, role, text, cid in batch:
        keys += [f"m:{conv}", f"s:{conv}"]
        args += [user, role, user.upper(), text, cid, tok(cid)]
    if native:
        return H.redis_call(addr, "KEFU.MSGSEND", len(keys), *keys, *args)
    return H.redis_call(addr, "EVAL", SCRIPT, len(keys), *keys, *args)


def transcript(addr, native):
    """Every call's replies, and each conversation's data at the end."""
    calls = [(b, {}) for b in BATCHES]
    # a window of 80 bytes holds two entries: the oldest cids are forgotten, the newest kept
    calls += [([("A", "c1", "customer", f"w{i}", f"win{i}")], {}) for i in range(5)]
    calls.append(([("A", "c1", "customer", "old", "win0")], {}))     # stored again
    calls.append(([("A", "c1", "customer", "new", "win4")], {}))     # a retry
    # approximate trimming: whole stream nodes go once the stream is past maxlen
    calls += [([("T", "c6", "customer", f"t{i + k}", f"t{i + k}") for k in range(20)],
               {"maxlen": 30}) for i in range(0, 260, 20)]
    # a window longer than 4 KiB (the module builds it on the heap then): 150 entries are kept
    calls += [([("G", "c7", "customer", f"g{i + k}", f"g{i + k}") for k in range(50)],
               {"winbytes": 6000}) for i in range(0, 150, 50)]
    calls.append(([("G", "c7", "customer", "first again", "g0")], {"winbytes": 6000}))
    out = [call(addr, native, b, **kw) for b, kw in calls]
    convs = [[m[0] for m in b] for b, _ in calls]
    state = {}
    for conv in "ABCGLTW":
        h = H.redis_call(addr, "HGETALL", f"m:{conv}")
        state[conv] = [sorted(zip(h[::2], h[1::2]))]
        if conv != "W":
            state[conv] += [H.redis_call(addr, "XLEN", f"s:{conv}"),
                            H.redis_call(addr, "XRANGE", f"s:{conv}", "-", "+")[-40:]]
    return out, convs, state


def normalize(out, convs, state):
    """Stream ids differ between two servers (and may repeat across conversations): number
    each conversation's ids in their order of appearance, its replies first, then its data."""
    seen = {}

    def norm(conv, obj):
        ids = seen.setdefault(conv, {})
        text = json.dumps(obj, ensure_ascii=False)
        return re.sub(r"\b\d+-\d+\b", lambda m: ids.setdefault(m.group(0), f"{conv}{len(ids)}"), text)
    replies = [[norm(c, r) for c, r in zip(cs, rs)] for cs, rs in zip(convs, out)]
    return replies, {conv: norm(conv, v) for conv, v in sorted(state.items())}


def test_msgsend_does_what_the_script_does(spawn):
    plain = spawn.redis(module="")
    native = spawn.redis(module=MODULE)
    for r in (plain, native):
        seed(r.addr)
    s_out, convs, s_state = transcript(plain.addr, False)
    n_out, _, n_state = transcript(native.addr, True)
    # the cases do what their names say (on both, compared below)
    first = s_out[1]
    assert [x[0] for x in first] == ["S", "S", "D", "S"]
    assert first[2][1] == s_out[0][0][1] and first[2][2] == ""   # the retry: first id, no prev
    assert [x[:2] for x in s_out[2]] == [["E", "conflict"], ["E", "conflict"],
                                         ["E", "forbidden"], ["E", "forbidden"]]
    assert [x[0] for x in s_out[3]] == ["S", "E", "E", "S", "S"]
    assert s_out[3][3][3:] == ["c3", "a3", "s1", "s2"]
    assert s_out[4][0][2] == "5-1"                                  # prev read from the stream
    assert [x[:2] for x in s_out[5]][0] == ["E", "internal"] and s_out[5][1][0] == "S"
    assert s_out[6] == [["E", "not_found"]]
    assert s_out[12][0][0] == "S" and s_out[13][0][0] == "D"
    assert s_out[-1][0][0] == "D" and len(dict(s_state["G"][0])["cids:c7"]) > 4096
    assert s_state["T"][1] < 260
    assert normalize(n_out, convs, n_state) == normalize(s_out, convs, s_state)
    # bad calls are refused with an error, and change nothing
    for args in (["KEFU.MSGSEND"], ["KEFU.MSGSEND", "2", "m:A"],
                 ["KEFU.MSGSEND", "2", "m:A", "s:A", "0", "80", "c1", "customer", "C", "t", "z", "\nx "]):
        try:
            H.redis_call(native.addr, *args)
            raise AssertionError(f"{args[:3]} was accepted")
        except RuntimeError as e:
            assert "ERR" in str(e)
    assert H.redis_call(native.addr, "XLEN", "s:A") == n_state["A"][1]


def test_replica_and_aof_need_no_module(spawn):
    """What KEFU.MSGSEND changes reaches a replica without the module, and an append-only file
    that a server without the module loads, as the same data."""
    master = H.Redis(spawn.workdir / "mod-master", module=MODULE)
    master.argv[master.argv.index("--appendonly") + 1] = "yes"
    # the replica syncs at once, not after the default 5 s of waiting for more replicas
    master.argv += ["--appendfsync", "always", "--repl-diskless-sync-delay", "0"]
    spawn.redises.append(master)
    master.start()
    replica = H.Redis(spawn.workdir / "mod-replica", module="")
    replica.argv += ["--replicaof", H.HOST, str(master.port)]
    spawn.redises.append(replica)
    replica.start()
    # online: the master streams its writes to it (after the first sync the master waits for
    # the replica's first acknowledgement before it does)
    H.wait_until(lambda: "state=online" in H.redis_call(master.addr, "INFO", "replication"),
                 timeout=20, what="the replica online")
    seed(master.addr)
    for b in BATCHES:
        call(master.addr, True, b)
    for i in range(0, 300, 25):
        call(master.addr, True, [("T", "c6", "customer", f"t{i + k}", f"t{i + k}")
                                 for k in range(25)], maxlen=40)
    assert H.redis_call(master.addr, "WAIT", 1, 10000, timeout=15) == 1

    def data(addr):
        out = {}
        for conv in "ABCLT":
            out[conv] = sorted(H.redis_call(addr, "HGETALL", f"m:{conv}"))
            out["x" + conv] = H.redis_call(addr, "XRANGE", f"s:{conv}", "-", "+")
        return out
    want = data(master.addr)
    assert len(want["xT"]) < 300 and want["xT"][-1][1][-3] == "t299"
    H.wait_until(lambda: data(replica.addr) == want, timeout=10, what="the replica's copy")
    master.stop()
    again = H.Redis(spawn.workdir / "mod-master", port=master.port, module="")
    again.argv[again.argv.index("--appendonly") + 1] = "yes"
    spawn.redises.append(again)
    again.start()
    deadline = time.monotonic() + 10
    while "loading:1" in H.redis_call(again.addr, "INFO", "persistence") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert data(again.addr) == want


def commandstat(addr, name):
    info = H.redis_call(addr, "INFO", "commandstats")
    m = re.search(r"cmdstat_%s:calls=(\d+)" % re.escape(name), info)
    return int(m.group(1)) if m else 0


async def chat(g, n=5):
    cust = await connect(g, "customer")
    agent = await connect(g, "agent")
    conv = await open_assigned(cust, agent)
    ids = []
    for i in range(n):
        mid, _, _ = await send_msg(cust, conv, f"m{i}")
        ids.append(mid)
    pushes = [await agent.next_push("msg", conv=conv, id=mid) for mid in ids]
    assert [p["prev"] for p in pushes][1:] == ids[:-1]
    dup = await cust.ok("msg.send", conv=conv, text="again", cid=pushes[0]["cid"])
    assert dup["dup"] is True and dup["id"] == ids[0]


def test_gateway_uses_the_module_where_it_is_loaded(spawn):
    r = spawn.redis(module=MODULE)
    g = spawn.gateway([r], name="mod")
    run(chat(g))
    used = commandstat(r.addr, "kefu.msgsend")
    assert used >= 6
    assert "has the kefu module; msg.send uses KEFU.MSGSEND" in g.proc.log_text()
    off = spawn.gateway([r], name="nomod", redis_module="no")
    run(chat(off))
    assert commandstat(r.addr, "kefu.msgsend") == used
    plain = spawn.redis(module="")
    g2 = spawn.gateway([plain], name="plain")
    run(chat(g2))
    assert commandstat(plain.addr, "kefu.msgsend") == 0


def test_module_in_a_cluster(spawn):
    rc = spawn.redis_cluster(masters=3, replicas=0, module=MODULE)
    g = spawn.gateway(rc.nodes, name="modrc")

    def per_master():
        return [commandstat(n.addr, "kefu.msgsend") for n in rc.nodes]

    async def body():
        for _ in range(12):         # until conversations landed on two masters or more
            await chat(g, n=3)
            if sum(1 for x in per_master() if x) >= 2:
                return
    run(body(), timeout=90)
    calls = per_master()
    assert sum(calls) >= 4 and sum(1 for x in calls if x) >= 2, calls
    # a call whose keys are not all on the node is redirected like any command
    try:
        H.redis_call(rc.nodes[0].addr, "KEFU.MSGSEND", 4, "{a}m", "{a}s", "{b}m", "{b}s", 10, 80,
                     *(["u", "customer", "U", "t", "c", "\nx "] * 2))
        raise AssertionError("a cross-slot call was accepted")
    except RuntimeError as e:
        assert "CROSSSLOT" in str(e)
