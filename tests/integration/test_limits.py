"""Abuse and limits: message size (1009), invalid UTF-8 (1007), rate limiting and abuse (4429),
slow consumers (4508), idle timeout (4409); bystanders stay undisturbed."""

import asyncio
import json
import time

import msgpack
import pytest

import kefu_harness as H
from kefu_client import (OP_BIN, OP_CONT, OP_PING, OP_TEXT, PROTOS, Client, RawWS, connect,
                         new_id, open_assigned, run, send_msg)


async def bystander_pair(node, other_node=None):
    """A customer and an agent in an assigned conversation, for checking they are undisturbed."""
    cust = await connect(node, "customer", "json", label="bystander-cust")
    agent = await connect(other_node or node, "agent", "msgpack", label="bystander-agent")
    conv = await open_assigned(cust, agent)
    return cust, agent, conv


async def assert_undisturbed(cust, agent, conv):
    assert not cust.closed and not agent.closed, "a bystander was closed"
    await cust.ping()
    mid, _, _ = await send_msg(cust, conv, "still here " + new_id("x"))
    p = await agent.next_push("msg", conv=conv)
    assert p["id"] == mid
    mid, _, _ = await send_msg(agent, conv, "me too")
    p = await cust.next_push("msg", conv=conv)
    assert p["id"] == mid


def closes(node, reason):
    return node.metrics().get("kefu_closes_total", reason=reason)


# ---------------------------------------------------------------------------------------------
# message size

def test_message_too_large(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="size", max_message_bytes=4096)

    async def body():
        by = await bystander_pair(g)
        before = closes(g, "too_large")
        tok = H.make_token(new_id("cust"), "customer")
        pad = "x" * 5000
        # one text frame over the limit
        c = await Client.open(g, "json")
        await c.hello(tok)
        await c.send_raw('{"type":"ping","req":1,"pad":"' + pad + '"}')
        assert await c.expect_close() == (1009, "message too large")
        # fragments that together exceed the limit
        c = await Client.open(g, "json")
        await c.hello(tok)
        await c.send_raw(['{"type":"ping","req":1,"pad":"', "y" * 2000, "y" * 2000, "y" * 2000,
                          '"}'])
        assert await c.expect_close() == (1009, "message too large")
        # a binary frame over the limit on msgpack, before hello
        c = await Client.open(g, "msgpack")
        await c.send_raw(msgpack.packb({"type": "hello", "token": tok, "pad": pad}))
        assert await c.expect_close() == (1009, "message too large")
        # under the limit, fragmented or not, is fine
        c = await Client.open(g, "json")
        await c.hello(tok)
        await c.send_raw('{"type":"ping","req":1,"pad":"' + "z" * 3900 + '"}')
        assert (await c.answer(1))["type"] == "pong"
        await c.send_raw(['{"type":"ping",', '"req":2,"pad":"', "w" * 1900, "w" * 1900, '"}'])
        assert (await c.answer(2))["type"] == "pong"
        H.wait_until(lambda: closes(g, "too_large") == before + 3,
                     what="kefu_closes_total{reason=too_large} +3")
        await assert_undisturbed(*by)
    run(body())


# ---------------------------------------------------------------------------------------------
# UTF-8

BAD_UTF8 = {
    "ff_byte": b'{"type":"ping","req":1,"x":"\xff"}',
    "lone_continuation": b'{"type":"ping","req":1,"x":"\x80"}',
    "overlong_slash": b'{"type":"ping","req":1,"x":"\xc0\xaf"}',
    "overlong_3byte": b'{"type":"ping","req":1,"x":"\xe0\x80\xaf"}',
    "surrogate": b'{"type":"ping","req":1,"x":"\xed\xa0\x80"}',
    "above_10ffff": b'{"type":"ping","req":1,"x":"\xf4\x90\x80\x80"}',
    "truncated_at_end": b'{"type":"ping","req":1,"x":"a"}\xe4\xbd',
}


@pytest.mark.parametrize("case", sorted(BAD_UTF8))
def test_invalid_utf8_closes_1007(cluster, case):
    node = cluster.n1
    tok = H.make_token(new_id("cust"), "customer")
    raw = RawWS(node, query="token=" + tok, protocol="kefu.v1.json")
    try:
        assert raw.status == 101
        w = raw.recv_obj("json")
        assert w["type"] == "welcome"
        raw.send_text(BAD_UTF8[case])
        code, reason, _ = raw.read_until_close(5)
        assert (code, reason) == (1007, "invalid utf-8")
    finally:
        raw.close()


def test_invalid_utf8_before_hello_and_across_fragments(cluster, local_only):
    node = cluster.n2
    before = closes(node, "invalid_utf8")
    # before authenticating
    raw = RawWS(node, protocol="kefu.v1.json")
    raw.send_text(b'{"type":"hello","token":"\xc3\x28"}')
    assert raw.read_until_close(5)[:2] == (1007, "invalid utf-8")
    raw.close()
    # a valid character split over two fragments is fine ...
    tok = H.make_token(new_id("cust"), "customer")
    raw = RawWS(node, query="token=" + tok, protocol="kefu.v1.json")
    assert raw.recv_obj("json")["type"] == "welcome"
    msg = '{"type":"ping","req":"中文"}'.encode()
    cut = msg.index("中".encode()) + 1
    raw.send_frame(OP_TEXT, msg[:cut], fin=False)
    raw.send_frame(OP_CONT, msg[cut:], fin=True)
    f = raw.recv_obj("json")
    assert f == {"type": "pong", "req": "中文"}
    # ... an invalid sequence split over fragments is not
    raw.send_frame(OP_TEXT, b'{"type":"ping","x":"\xe4', fin=False)
    raw.send_frame(OP_CONT, b'\x28\xad"}', fin=True)
    assert raw.read_until_close(5)[:2] == (1007, "invalid utf-8")
    raw.close()
    H.wait_until(lambda: closes(node, "invalid_utf8") == before + 2,
                 what="kefu_closes_total{reason=invalid_utf8} +2")


# ---------------------------------------------------------------------------------------------
# rate limiting

async def collect_answers(c, reqs, timeout=5.0):
    """The answers to reqs as {req: frame}, plus the error answers that lack a req (see
    test_rate_limited_answers_carry_req) as a list; waits until there are len(reqs)."""
    keys = {r: ("int", repr(r)) for r in reqs}

    def count():
        n = sum(len(c.answers.get(k, [])) for k in keys.values())
        n += sum(1 for f in c.frames if f["type"] == "error")
        return True if n >= len(reqs) else None
    await c._wait(count, timeout, f"{len(reqs)} answers")
    by_req = {r: c.answers.pop(k)[0] for r, k in keys.items() if k in c.answers}
    loose = [f for f in c.frames if f["type"] == "error"]
    c.frames = [f for f in c.frames if f["type"] != "error"]
    return by_req, loose


@pytest.mark.parametrize("proto", PROTOS)
def test_rate_limit_then_abuse_close(spawn, cluster, proto):
    g = spawn.gateway(cluster.shards, name="rate", rate_per_s=5, rate_burst=10,
                      rate_abuse_limit=20)

    async def body():
        by = await bystander_pair(g)
        m0 = g.metrics()
        c = await connect(g, "customer", proto)
        # a burst of 20 requests: about 9 pass, the rest are rate_limited, all answered
        reqs = [c.next_req() for _ in range(20)]
        for r in reqs:
            await c.send({"type": "conv.list", "req": r})
        by_req, loose = await collect_answers(c, reqs)
        answers = list(by_req.values()) + loose
        oks = [a for a in answers if a["type"] == "ok"]
        limited = [a for a in answers if a["type"] == "error" and a["code"] == "rate_limited"]
        assert len(oks) + len(limited) == 20, answers
        assert 5 <= len(oks) <= 12 and len(limited) >= 8, \
            f"{len(oks)} ok, {len(limited)} rate_limited with burst 10"
        assert by_req.get(reqs[0], {}).get("type") == "ok", "the first request of a burst passes"
        # after a pause the bucket has refilled
        await asyncio.sleep(1.6)
        for _ in range(5):
            await c.ok("conv.list")
        # persistent abuse on another connection: a burst well over the limit, closed with
        # 4429 (a raw socket, so the close frame is read even if a TCP reset follows it)
        raw = RawWS(g, query="token=" + H.make_token(new_id("cust"), "customer"),
                    protocol="kefu.v1." + proto)
        assert raw.recv_obj(proto)["type"] == "welcome"
        frames = [{"type": "conv.list", "req": 1000 + i} for i in range(60)]
        raw.send_frames([(OP_TEXT, json.dumps(f).encode()) if proto == "json" else
                         (OP_BIN, msgpack.packb(f)) for f in frames])
        code, reason, seen = await asyncio.to_thread(raw.read_until_close, 5)
        raw.close()
        assert (code, reason) == (4429, "rate limit abuse"), (code, reason, seen)
        # the first connection, below the abuse limit, is still served
        await asyncio.sleep(0.5)
        await c.ok("conv.list")
        assert not c.closed
        m1 = g.metrics()
        assert m1.get("kefu_errors_total", code="rate_limited") - \
            m0.get("kefu_errors_total", code="rate_limited") >= 20
        H.wait_until(lambda: closes(g, "rate_abuse") == m0.get("kefu_closes_total",
                                                                reason="rate_abuse") + 1,
                     what="kefu_closes_total{reason=rate_abuse} +1")
        await assert_undisturbed(*by)
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_rate_limited_answers_carry_req(spawn, cluster, proto):
    """Every request gets exactly one answer echoing its req, rate_limited ones too (else a
    client cannot tell which request to retry)."""
    g = spawn.gateway(cluster.shards, name="ratereq", rate_per_s=5, rate_burst=5,
                      rate_abuse_limit=1000)

    async def body():
        c = await connect(g, "customer", proto)
        reqs = [c.next_req() for _ in range(12)]
        for r in reqs:
            await c.send({"type": "ping", "req": r} if r % 2 else {"type": "conv.list", "req": r})
        answers = [await c.answer(r) for r in reqs]
        assert any(a["type"] == "error" and a["code"] == "rate_limited" for a in answers)
        assert not c.frames, f"answers without req: {c.frames}"
    run(body())


# ---------------------------------------------------------------------------------------------
# slow consumer

def test_slow_consumer_is_closed(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="slow", outq_max_bytes=65536, outq_max_msgs=64,
                      rate_per_s=100000, rate_burst=100000)

    async def body():
        by = await bystander_pair(g)
        before = closes(g, "slow_consumer")
        cust_sub = new_id("cust")
        tok = H.make_token(cust_sub, "customer", name="Sleepy")
        # the customer's connection reads its welcome, opens a conversation, then never reads
        raw = RawWS(g, query="token=" + tok, protocol="kefu.v1.json", rcvbuf=4096)
        assert raw.recv_obj("json")["type"] == "welcome"
        raw.send_text(b'{"type":"conv.open","req":1}')
        r = raw.recv_obj("json")
        assert r["type"] == "ok", r
        conv = r["conv"]
        agent = await connect(g, "agent", "json")
        await agent.ok("conv.accept", conv=conv)
        big = "大" * 2700     # 8100 bytes
        # at most 32 requests in flight: the agent's own answers stay under outq_max_msgs even
        # when the test client reads them late
        for first in range(0, 400, 32):
            reqs = []
            for i in range(first, min(first + 32, 400)):
                req = agent.next_req()
                reqs.append(req)
                await agent.send({"type": "msg.send", "req": req, "conv": conv, "text": big,
                                  "cid": f"flood-{i}"})
            for req in reqs:
                a = await agent.answer(req, timeout=20)
                assert a["type"] == "ok", a
        H.wait_until(lambda: closes(g, "slow_consumer") == before + 1, timeout=10,
                     what="kefu_closes_total{reason=slow_consumer} +1")
        # the raw socket ends (possibly without a close frame, since it read nothing)
        code, reason, _ = await asyncio.to_thread(raw.read_until_close, 15)
        assert code in (None, 4508), (code, reason)
        if code is not None:
            assert reason == "slow consumer"
        raw.close()
        # the agent and the bystanders are fine
        await agent.ping()
        await assert_undisturbed(*by)
        H.wait_until(lambda: g.metrics().get("kefu_connections", role="customer") == 1,
                     what="kefu_connections{role=customer} back to the bystander only")
    run(body(), timeout=80)


# ---------------------------------------------------------------------------------------------
# idle timeout

def test_idle_timeout(spawn, cluster):
    """A client that answers pings (the library does, with empty pongs as RFC 6455 has it)
    stays; a silent one is closed 4409. Values leave room for a once-a-second sweep."""
    g = spawn.gateway(cluster.shards, name="idle", ping_interval_ms=500, idle_timeout_ms=2500)

    async def body():
        before = closes(g, "idle_timeout")
        live = await connect(g, "customer", "json")   # the library answers pings
        tok = H.make_token(new_id("cust"), "customer")
        raw = RawWS(g, query="token=" + tok, protocol="kefu.v1.json")
        t0 = time.monotonic()
        code, reason, seen = await asyncio.to_thread(raw.read_until_close, 8)
        elapsed = time.monotonic() - t0
        raw.close()
        assert (code, reason) == (4409, "idle timeout")
        assert OP_PING in seen, f"the gateway never pinged (frames {seen})"
        assert 2.0 < elapsed < 6, f"idle close after {elapsed:.2f}s with idle_timeout_ms 2500"
        await asyncio.sleep(1.0)
        assert not live.closed, f"a client answering pings was closed: {live.ws.close_code} " \
            f"{live.ws.close_reason!r}"
        await live.ping()
        assert not live.closed
        H.wait_until(lambda: closes(g, "idle_timeout") == before + 1,
                     what="kefu_closes_total{reason=idle_timeout} +1")
    run(body())
