"""Edge cases: string encodings (UTF-8 in msgpack, NUL, JSON escapes), crafted ids, odd user
ids, several processes on one port, a node that dies."""

import asyncio
import json
import os
import signal
import struct

import msgpack
import pytest

import kefu_harness as H
from kefu_client import (Client, Follower, assert_msg, connect, history_all, new_id,
                         open_assigned, run, send_msg)


def mp_str(b):
    """A msgpack str holding raw bytes (possibly not UTF-8)."""
    n = len(b)
    if n < 32:
        return bytes([0xA0 | n]) + b
    if n < 256:
        return b"\xd9" + bytes([n]) + b
    return b"\xda" + struct.pack("!H", n) + b


def mp_map(items):
    """A msgpack map of (key bytes, value bytes) already packed."""
    out = bytes([0x80 | len(items)])
    for k, v in items:
        out += k + v
    return out


def P(x):
    return msgpack.packb(x, use_bin_type=True)


@pytest.mark.parametrize("field", ["text", "cid", "conv", "type"])
def test_msgpack_str_with_invalid_utf8_is_bad_request(cluster, field):
    """msgpack str must be UTF-8 like JSON strings: invalid bytes are refused, so a JSON peer
    never receives them (it would have to close with 1007)."""
    async def body():
        cust = await connect(cluster.n1, "customer", "msgpack")
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(cust, agent)
        fields = {"type": P("msg.send"), "req": P(5), "conv": P(conv), "text": P("ok"),
                  "cid": P(new_id("c"))}
        fields[field] = mp_str(b"bad \xff\xfe bytes")
        await cust.send_raw(mp_map([(P(k), v) for k, v in fields.items()]))
        # refused by the decoder (then without req) or by the field check (with req 5)
        f = await cust.take_any(("error", "ok"))
        assert f["type"] == "error" and f["code"] == "bad_request", f
        assert f.get("req", 5) == 5
        await agent.no_push("msg", within=0.3)
        h = await agent.ok("history", conv=conv)
        assert h["msgs"] == []
        await cust.ping()
        await agent.ping()
    run(body())


@pytest.mark.parametrize("proto", ["json", "msgpack"])
def test_nul_in_text_is_refused_or_kept_whole(cluster, proto):
    async def body():
        cust = await connect(cluster.n1, "customer", proto)
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(cust, agent)
        await cust.send({"type": "msg.send", "req": 9, "conv": conv, "text": "a\x00b",
                         "cid": new_id("c")})
        f = await cust.take_any(("error", "ok"))
        if f["type"] == "ok":
            h = await agent.ok("history", conv=conv)
            assert [m["text"] for m in h["msgs"]] == ["a\x00b"], "text cut at the NUL"
        else:
            assert f["code"] == "bad_request", f
        await cust.ping()
    run(body())


def test_json_escapes_and_astral_characters(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        agent = await connect(cluster.n2, "agent", "msgpack")
        conv = await open_assigned(cust, agent)
        # \u escapes with a surrogate pair, sent by an ASCII-only client
        await cust.send_raw(json.dumps({"type": "msg.send", "req": 1, "conv": conv,
                                        "text": "smile 😀 \"quoted\" \\ tab\t end",
                                        "cid": "esc-1"}, ensure_ascii=True))
        r = await cust.answer(1)
        assert r["type"] == "ok", r
        p = await agent.next_push("msg", conv=conv)
        assert p["text"] == "smile 😀 \"quoted\" \\ tab\t end"
        # a lone surrogate escape is not a character
        await cust.send_raw('{"type":"msg.send","req":2,"conv":"%s","text":"x\\ud800y",'
                            '"cid":"esc-2"}' % conv)
        f = await cust.take_any(("error", "ok"))
        assert f["type"] == "error" and f["code"] == "bad_request", f
        # duplicate keys are ambiguous
        await cust.send_raw('{"type":"ping","req":3,"req":4}')
        f = await cust.take_any(("error", "pong"))
        assert f["type"] == "error" and f["code"] == "bad_request", f
        h = await agent.ok("history", conv=conv)
        assert [m["text"] for m in h["msgs"]] == ["smile 😀 \"quoted\" \\ tab\t end"]
    run(body())


CRAFTED_CONVS = ["x" * 300, "a}b", "{c:x}", "abc def", "中文", "*", "a\nb", "../meta",
                 "%s", "x" * 64]


@pytest.mark.parametrize("conv", CRAFTED_CONVS, ids=range(len(CRAFTED_CONVS)))
def test_crafted_conversation_ids(cluster, conv):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        agent = await connect(cluster.n2, "agent", "msgpack")
        sup = await connect(cluster.n1, "supervisor", "json")
        answers = [
            await cust.request("history", conv=conv),
            await cust.request("msg.send", conv=conv, text="x", cid=new_id("c")),
            await cust.request("typing", conv=conv),
            await agent.request("conv.accept", conv=conv),
            await agent.request("conv.close", conv=conv),
            await sup.request("conv.join", conv=conv),
            await sup.request("history", conv=conv),
        ]
        for f in answers:
            assert f["type"] == "error" and f["code"] in ("bad_request", "not_found", "too_large"), f
        for c in (cust, agent, sup):
            await c.ping()
    run(body())


ODD_SUBS = ["张 三", "a}b{c", "x:y:z", "u" * 128, "mail@example.com", "emoji😀"]


@pytest.mark.parametrize("sub", ODD_SUBS, ids=range(len(ODD_SUBS)))
def test_odd_user_ids(cluster, sub):
    async def body():
        sub_c = sub + "-" + new_id("c")[-6:] if len(sub) < 100 else sub[:-6] + new_id("c")[-6:]
        cust = await connect(cluster.n1, "customer", "msgpack", sub=sub_c, name="名字 😀")
        dev2 = await connect(cluster.n2, "customer", "json", sub=sub_c, name="名字 😀")
        agent = await connect(cluster.n2, "agent", "json", sub="agent " + sub[:90] + new_id("")[-7:])
        conv = await open_assigned(cust, agent)
        mid, ts, cid = await send_msg(cust, conv, "hi")
        assert_msg(await agent.next_push("msg", conv=conv), conv, cust, "hi", cid, mid, ts)
        assert_msg(await dev2.next_push("msg", conv=conv), conv, cust, "hi", cid, mid, ts)
        mid, ts, cid = await send_msg(agent, conv, "hello")
        for c in (cust, dev2):
            assert_msg(await c.next_push("msg", conv=conv), conv, agent, "hello", cid, mid, ts)
        lst = (await dev2.ok("conv.list"))["convs"]
        assert [x["conv"] for x in lst] == [conv] and lst[0]["customer"] == sub_c
        await agent.ok("conv.close", conv=conv)
    run(body())


def test_several_processes_on_one_port(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="multi", processes=2)

    async def body():
        custs = [await connect(g, "customer", ("json", "msgpack")[i % 2]) for i in range(6)]
        agents = [await connect(g, "agent", ("msgpack", "json")[i % 2]) for i in range(6)]
        nodes = {c.node for c in custs + agents}
        assert all(n.startswith(g.name) for n in nodes), nodes
        m = g.metrics()
        assert m.get("kefu_connections", role="customer") == 6, "metrics of all processes"
        assert m.get("kefu_connections", role="agent") == 6
        pairs = []
        for c, a in zip(custs, agents):
            conv = await open_assigned(c, a)
            pairs.append((c, a, conv))
        for c, a, conv in pairs:
            mid, _, _ = await send_msg(c, conv, "to my agent")
            assert (await a.next_push("msg", conv=conv))["id"] == mid
            mid, _, _ = await send_msg(a, conv, "to my customer")
            assert (await c.next_push("msg", conv=conv))["id"] == mid
        # a second device of customer 0 somewhere on the port sees the traffic too, by the
        # client rules: live, or (when the other process routed from a presence copy made
        # before this device registered) through the `resync` that follows (protocol.md)
        dev2 = await connect(g, "customer", "json", sub=custs[0].user, name=custs[0].name)
        f = Follower(dev2, pairs[0][2])
        await f.heal()
        mid, _, _ = await send_msg(agents[0], pairs[0][2], "both devices")
        for _ in range(60):
            await f.pump(0.1)
            if mid in f.held:
                break
        assert mid in f.held, "the second device never saw the message, live or healed"
        assert (await custs[0].next_push("msg", conv=pairs[0][2]))["id"] == mid
        # SIGTERM reaches every process: all clients get 1001, the master exits 0
        g.proc.send_signal(signal.SIGTERM)
        for c in custs + agents + [dev2]:
            assert await c.expect_close(6) == (1001, "server shutting down")
        rc = await asyncio.to_thread(g.proc.wait, 10)
        assert rc == 0, f"exit status {rc}"
    run(body())


def test_node_dies_users_reconnect_elsewhere(spawn, cluster):
    """A node killed with SIGKILL leaves stale presence; users reconnecting to another node
    are served and reached at once."""
    g = spawn.gateway(cluster.shards, name="doomed")

    async def body():
        cust = await connect(g, "customer", "json")
        agent = await connect(cluster.n2, "agent", "msgpack")
        conv = await open_assigned(cust, agent)
        first, _, _ = await send_msg(cust, conv, "before the crash")
        await agent.next_push("msg", conv=conv)
        os.killpg(g.proc.pid, signal.SIGKILL)      # the node's master and workers
        g.proc.wait(5)
        code, _ = await cust.expect_close(5)
        assert code == 1006
        # messages while the customer is away
        missed = [(await send_msg(agent, conv, f"missed {i}"))[0] for i in range(3)]
        c2 = await Client.open(cluster.n1, "msgpack")
        await c2.hello(cust.token)
        c2.name = cust.name
        msgs, _ = await history_all(c2, conv, after=first)
        assert [m["id"] for m in msgs] == missed
        mid, _, _ = await send_msg(agent, conv, "are you back?")
        assert (await c2.next_push("msg", conv=conv))["id"] == mid
        mid, _, _ = await send_msg(c2, conv, "yes")
        assert (await agent.next_push("msg", conv=conv))["id"] == mid
    g.proc.expect_exit = True     # killed on purpose: its exit status is not a finding
    run(body())


def test_workers_exit_when_master_dies(spawn, cluster):
    """If the master is killed (OOM killer, kill -9), its workers must not live on as orphans
    holding the port and the users' presence: they drain and exit."""
    g = spawn.gateway(cluster.shards, name="orphan")
    g.proc.expect_exit = True

    async def body():
        cust = await connect(g, "customer", "json")
        g.proc.send_signal(signal.SIGKILL)
        g.proc.wait(5)
        code, reason = await cust.expect_close(8)
        assert code in (1001, 1006), (code, reason)
        H.wait_until(lambda: not g.proc.group_alive(), timeout=8,
                     what="the workers of a killed master to exit")
    run(body())
