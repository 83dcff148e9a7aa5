"""Delivery that never goes silent (issue 8): every push names the message before it (gaps are
visible), pushes whose routing fails are retried and else signalled with a resync notice, a
restarted Redis makes every client re-check, backpressure pauses reading instead of timing out,
and the wire is strict (RFC 6455 framing and handshake, NUL strings, stream ids)."""

import asyncio
import contextlib
import os
import signal
import socket
import struct
import subprocess
import threading
import time

import msgpack

import kefu_harness as H
from kefu_client import (OP_TEXT, Client, Follower, RawWS, connect, new_id, open_assigned,
                         open_conv, open_conv_where, run, send_msg)


def fast_gateway(spawn, shards, name, **opts):
    """A dedicated gateway that looks presence up on every push and gives up on Redis fast."""
    o = {"presence_cache_ms": 0, "redis_timeout_ms": 300, "rate_per_s": 100000,
         "rate_burst": 100000}
    o.update(opts)
    return spawn.gateway(shards, name=name, **o)


@contextlib.contextmanager
def one_segment(client):
    """Frames sent inside the block reach the gateway in one TCP segment, so it reads them in
    one loop iteration (and gathers their msg.send into one script call)."""
    sock = client.ws.transport.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    try:
        yield
    finally:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


async def assigned_pair(g):
    """A customer, an agent, and the customer's conversation the agent accepted."""
    cust = await connect(g, "customer")
    agent = await connect(g, "agent")
    return cust, agent, await open_assigned(cust, agent)


# ---- gap detection: prev on pushes and history ----

def test_push_and_history_carry_prev(spawn, cluster):
    g = fast_gateway(spawn, cluster.shards, "prev", presence_cache_ms=100)

    async def body():
        cust, agent, conv = await assigned_pair(g)
        ids = []
        for i in range(4):
            mid, _, _ = await send_msg(cust, conv, f"m{i}")
            ids.append(mid)
        pushes = [await agent.next_push("msg", conv=conv, id=mid) for mid in ids]
        assert [p["prev"] for p in pushes] == [""] + ids[:-1]
        page = await agent.ok("history", conv=conv)
        assert [m["id"] for m in page["msgs"]] == ids
        assert [m["prev"] for m in page["msgs"]] == [""] + ids[:-1]
        # a page after a cursor starts with the cursor as prev
        page = await agent.ok("history", conv=conv, after=ids[1])
        assert [m["prev"] for m in page["msgs"]] == ids[1:-1]
        # the agent's reply chains on the customer's last message
        rid, _, _ = await send_msg(agent, conv, "reply")
        p = await cust.next_push("msg", conv=conv, id=rid)
        assert p["prev"] == ids[-1]
    run(body())


def test_duplicate_send_signals_resync(spawn, cluster):
    """A retried msg.send (same cid) stores nothing; its first push may have been lost with the
    first answer, so the other participants are told to re-check the conversation."""
    g = fast_gateway(spawn, cluster.shards, "dupres", presence_cache_ms=100)

    async def body():
        cust, agent, conv = await assigned_pair(g)
        mid, _, cid = await send_msg(cust, conv, "once")
        await agent.next_push("msg", conv=conv, id=mid)
        r = await cust.ok("msg.send", conv=conv, text="once", cid=cid)
        assert r["dup"] is True and r["id"] == mid
        rs = await agent.next_push("resync", conv=conv)
        assert rs["reason"] == "routing"
        assert g.metrics().get("kefu_resync_sent_total") >= 1
    run(body())


def test_cid_window_is_bounded_and_keyless(spawn, cluster):
    """msg.send recognises a retry among the sender's last cid_window messages of the
    conversation (each sender its own window), stores no key per message, and forgets the
    cids that fell out of the window: a retry of one of those is a new message."""
    g = fast_gateway(spawn, cluster.shards, "cidwin", cid_window=4)
    r = cluster.shards[0]

    async def body():
        cust, agent, conv = await assigned_pair(g)
        conv_keys = lambda: sorted(r.call("KEYS", f"kefu:{{c:{conv}}}*"))  # noqa: E731
        sent = [await send_msg(cust, conv, "c0")]
        keys_before = conv_keys()    # meta and msgs
        sent += [await send_msg(cust, conv, f"c{i}") for i in range(1, 6)]
        # the agent's messages do not push the customer's cids out
        for i in range(5):
            await send_msg(agent, conv, f"a{i}")
        assert conv_keys() == keys_before, "a key per message"
        # the last four are recognised (whatever the window's ids weigh), in any order
        for mid, _, cid in (sent[5], sent[2], sent[4], sent[3]):
            ans = await cust.ok("msg.send", conv=conv, text="again", cid=cid)
            assert ans["dup"] is True and ans["id"] == mid, (cid, ans)
        # the first fell out of a window of 4: stored again, as a new message
        ans = await cust.ok("msg.send", conv=conv, text="c0 again", cid=sent[0][2])
        assert ans["dup"] is False and ans["id"] != sent[0][0], ans
        h = await cust.ok("history", conv=conv)
        assert [m["text"] for m in h["msgs"]] == [f"c{i}" for i in range(6)] + \
            [f"a{i}" for i in range(5)] + ["c0 again"], h
        # a closed conversation still answers a retry from the window, and refuses a new cid
        await agent.ok("conv.close", conv=conv)
        ans = await cust.ok("msg.send", conv=conv, text="late", cid=sent[5][2])
        assert ans["dup"] is True and ans["id"] == sent[5][0], ans
        await cust.err("conflict", "msg.send", conv=conv, text="late", cid=new_id("c"))
    run(body())


# ---- faults on the routing path ----

async def pair_across_masters(g, rc):
    """On a Redis Cluster without replicas: a customer and an assigned agent whose presence both
    live on one master (the victim), their conversation on another, and g's inbox not on the
    victim. Returns (cust, agent, conv, victim)."""
    slots = rc.slots()
    inbox = rc.master_of(f"kefu:{{n:{g.name}-0}}:inbox", slots)
    victim = next(m for m in rc.masters_now(slots) if m is not inbox)
    cust = await connect(g, "customer", sub=rc.user_id("cust", slots, on=victim))
    conv = await open_conv_where(
        cust, lambda c: rc.master_of(f"kefu:{{c:{c}}}:meta", slots) is not victim)
    agent = await connect(g, "agent", sub=rc.user_id("agen", slots, on=victim))
    a = await agent.ok("conv.accept", conv=conv)
    assert a["state"] == "assigned"
    return cust, agent, conv, victim


def test_gap_signalled_after_master_stop(spawn):
    """The master holding the agent's presence stops (a Redis Cluster without replicas); the
    customer's message is stored (its master is up) but cannot be routed. Once the master is
    back the agent gets a resync for the conversation, though no later message arrives, and
    history heals the gap."""
    rc = spawn.redis_cluster(replicas=0)
    g = fast_gateway(spawn, rc.addrs, "gapstop", route_retry_ms=300)

    async def body():
        cust, agent, conv, victim = await pair_across_masters(g, rc)
        last = (await agent.ok("history", conv=conv))["msgs"]
        last_id = last[-1]["id"] if last else None
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            mid, _, _ = await send_msg(cust, conv, "while the agent's shard is stopped")
            H.wait_until(lambda: g.metrics().get("kefu_push_lost_total", cause="presence") >= 1,
                         timeout=10, what="the push given up")
            assert g.metrics().get("kefu_resync_pending") >= 1
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        # the agent follows the client rules: the resync makes it fetch what it missed
        f = Follower(agent, conv, last=last_id or "")
        for _ in range(50):
            await f.pump(0.2)
            if f.resyncs:
                break
        assert f.resyncs == 1
        assert mid in f.healed and mid not in f.live, (mid, f.live, f.from_history, f.gaps)  # healed by history, never pushed
        assert g.metrics().get("kefu_resync_pending") == 0
        # and the conversation goes on in order
        nid, _, _ = await send_msg(cust, conv, "after the fault")
        await f.pump(0.5)
        assert nid in f.live and f.gaps == 0 and f.last == nid
    run(body(), timeout=40)


def test_no_push_lost_across_short_redis_stop(spawn):
    """A lookup that fails is retried in order while route_retry_ms lasts: the push arrives
    live after the master answers again, nothing is given up."""
    rc = spawn.redis_cluster(replicas=0)
    g = fast_gateway(spawn, rc.addrs, "retry", route_retry_ms=15000)

    async def body():
        cust, agent, conv, victim = await pair_across_masters(g, rc)
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            ids = [(await send_msg(cust, conv, f"during {i}"))[0] for i in range(3)]
            await asyncio.sleep(1.0)          # > redis_timeout_ms: the lookups fail
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        pushes = [await agent.next_push("msg", conv=conv, id=mid, timeout=10) for mid in ids]
        assert [p["prev"] for p in pushes[1:]] == ids[:-1]       # in order
        m = g.metrics()
        assert m.get("kefu_push_retries_total") >= 1
        assert sum(m.get("kefu_push_lost_total", cause=c)
                   for c in ("presence", "inbox", "overflow")) == 0
    run(body(), timeout=40)


def test_failed_inbox_write_is_signalled(spawn):
    """An XADD into a node's inbox that fails (the key holds a string) loses that push; it is
    counted, and once the inbox works again the recipient gets a resync and, following the
    client rules, sees the message."""
    r = spawn.redis()
    ga = fast_gateway(spawn, [r], "inbA")
    gb = fast_gateway(spawn, [r], "inbB")

    async def body():
        cust = await connect(ga, "customer")
        conv, _ = await open_conv(cust)
        agent = await connect(gb, "agent")
        await agent.ok("conv.accept", conv=conv)
        f = Follower(agent, conv)
        await f.heal()
        key = "kefu:{n:%s}:inbox" % agent.node
        H.redis_call(r.addr, "DEL", key)
        H.redis_call(r.addr, "SET", key, "not a stream")
        mid, _, _ = await send_msg(cust, conv, "into a broken inbox")
        H.wait_until(lambda: ga.metrics().get("kefu_push_lost_total", cause="inbox") >= 1,
                     timeout=5, what="the failed inbox write counted")
        H.redis_call(r.addr, "DEL", key)
        for _ in range(75):
            await f.pump(0.2)
            if mid in f.held:
                break
        assert mid in f.held, "the message was never seen"
        assert f.resyncs >= 1 and mid in f.healed, "no resync healed the lost push"
        assert ga.metrics().get("kefu_resync_sent_total") >= 1
    run(body(), timeout=40)


def test_route_queue_overflow_is_signalled(spawn):
    """Routes wait in line while the users' master is frozen; beyond route_queue_max a push is
    not queued but its users get a resync, and with the client rules nothing is missed."""
    rc = spawn.redis_cluster(replicas=0)
    g = fast_gateway(spawn, rc.addrs, "overflow", route_queue_max=16, route_retry_ms=15000)

    async def body():
        cust, agent, conv, victim = await pair_across_masters(g, rc)
        f = Follower(agent, conv)
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            ids = [(await send_msg(cust, conv, f"queued {i}"))[0] for i in range(24)]
            m = g.metrics()
            assert m.get("kefu_push_lost_total", cause="overflow") >= 1
            assert m.get("kefu_route_queue") <= 16
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        for _ in range(50):
            await f.pump(0.2)
            if f.resyncs and all(i in f.held for i in ids):
                break
        assert f.resyncs >= 1
        assert all(i in f.held for i in ids), "a message was never seen"
        assert f.healed, "the overflowed pushes came back through history"
    run(body(), timeout=60)


def test_requests_of_one_connection_reach_redis_in_order(spawn, cluster):
    """msg.send requests are gathered per loop iteration and stored by one script call; a
    request that follows them on the same connection (here conv.close, in the same TCP segment)
    must still find the message stored, not be run before it."""
    g = fast_gateway(spawn, cluster.shards, "order")

    async def body():
        cust, agent, conv = await assigned_pair(g)
        r1, r2 = agent.next_req(), agent.next_req()
        with one_segment(agent):
            await agent.send({"type": "msg.send", "req": r1, "conv": conv, "text": "bye",
                              "cid": "last-words"})
            await agent.send({"type": "conv.close", "req": r2, "conv": conv})
        sent, closed = await agent.answer(r1), await agent.answer(r2)
        assert sent["type"] == "ok", sent
        assert closed["type"] == "ok", closed
        page = await cust.ok("history", conv=conv)
        assert [m["text"] for m in page["msgs"]][-1] == "bye"
    run(body(), timeout=30)


def test_a_failing_message_does_not_fail_its_batch(spawn):
    """Messages read in one loop iteration share one script call; one that cannot be stored
    (its stream key holds a string) is answered internal alone, the others are stored."""
    r = spawn.redis()
    g = fast_gateway(spawn, [r], "batcherr")

    async def body():
        _, agent, good = await assigned_pair(g)
        cust2 = await connect(g, "customer")
        bad = await open_assigned(cust2, agent)
        H.redis_call(r.addr, "DEL", "kefu:{c:%s}:msgs" % bad)
        H.redis_call(r.addr, "SET", "kefu:{c:%s}:msgs" % bad, "not a stream")
        reqs = []
        with one_segment(agent):
            for i, conv in enumerate([good, bad, good]):
                reqs.append(agent.next_req())
                await agent.send({"type": "msg.send", "req": reqs[-1], "conv": conv,
                                  "text": f"m{i}", "cid": f"batch-{i}"})
        answers = [await agent.answer(q) for q in reqs]
        assert [a["type"] for a in answers] == ["ok", "error", "ok"], answers
        assert answers[1]["code"] == "internal"
        page = await agent.ok("history", conv=good)
        assert [m["text"] for m in page["msgs"]][-2:] == ["m0", "m2"]
    run(body(), timeout=30)


def test_first_connection_resyncs_after_a_cached_lookup(spawn, cluster):
    """A first connection is welcomed at once. Another node that cached a lookup of the user
    before the registration is told to drop it (so the next push reaches the new connection),
    and since a push may be routed from that copy before the node reads that, the connection
    also gets a resync once the copy has expired (kefu_welcome_resync_total), and so does any
    other connection of the user welcomed on that node meanwhile."""
    opts = {"presence_cache_ms": 2000}
    g1 = fast_gateway(spawn, cluster.shards, "wel1", **opts)
    g2 = fast_gateway(spawn, cluster.shards, "wel2", **opts)
    g3 = fast_gateway(spawn, cluster.shards, "wel3", **opts)

    async def body():
        cust = await connect(g1, "customer")            # nobody looked this user up yet
        conv, _ = await open_conv(cust)
        agent = await connect(g2, "agent")
        await agent.ok("conv.accept", conv=conv)
        mid, _, _ = await send_msg(agent, conv, "g2 looks the customer up and caches it")
        await cust.next_push("msg", conv=conv, id=mid)
        assert g1.metrics().get("kefu_welcome_resync_total") == 0
        assert g2.metrics().get("kefu_presence_cache_drops_total") == 0
        t0 = time.monotonic()
        second = await connect(g3, "customer", sub=cust.user)   # the customer's 2nd device
        assert time.monotonic() - t0 < 1.5, "the welcome waited for the cached copy"
        assert g3.metrics().get("kefu_welcome_resync_total") == 1
        third = await connect(g3, "customer", sub=cust.user)    # registered already: {0}
        H.wait_until(lambda: g2.metrics().get("kefu_presence_cache_drops_total") == 1,
                     timeout=5, what="g2 to drop its copy of the customer's presence")
        f = Follower(second, conv)
        await f.heal()
        mid2, _, _ = await send_msg(agent, conv, "g2 looks the customer up again")
        for _ in range(40):
            await f.pump(0.1)
            if f.resyncs:
                break
        assert mid2 in f.live, "the push after the drop missed the new connection"
        assert f.resyncs == 1, "no resync once the cached copy expired"
        # the resync is for the user: a connection welcomed during the window gets it too
        await third.next_push("resync", timeout=5)
    run(body(), timeout=40)


def test_presence_refresh_reaches_every_user(spawn, cluster):
    """Presence is refreshed a share of the user index per second, so each user once per third
    of presence_ttl_ms (6000 here: half of the users each second). Users joining and leaving
    while the walk is under way must not make it skip anyone: later than every first
    registration's expiry, each connected user's entry was refreshed within the last period."""
    ttl = 6000
    g = spawn.gateway(cluster.shards, name="refresh", presence_ttl_ms=ttl)
    addr = cluster.shards[0].addr

    async def body():
        first = [await connect(g, "customer") for _ in range(30)]
        await asyncio.sleep(2.5)
        gone = first[::3]
        for c in gone:
            await c.close()
        more = [await connect(g, "customer") for _ in range(15)]
        await asyncio.sleep(2.5)
        gone += more[::3]
        for c in more[::3]:
            await c.close()
        await asyncio.sleep(ttl / 1000 + 1.5)
        now_ms = time.time() * 1000
        for c in first + more:
            score = H.redis_call(addr, "ZSCORE", f"kefu:{{u:{c.user}}}:nodes", c.node)
            if c in gone:
                assert score is None, f"{c.user} left but is still present"
            else:
                # refreshed every 2 s (plus a tick of slack): expiry at least now + ttl - 3 s
                assert score is not None and float(score) > now_ms + ttl - 3000, \
                    f"{c.user}: presence expiry {score}, now {now_ms:.0f}"
    run(body())


def test_redis_restart_tells_every_client_to_resync(spawn):
    """A restarted Redis (new run_id) may have lost what it had not persisted: every connected
    client gets a resync (no conv: re-check everything) once presence is registered again."""
    r = spawn.redis()
    g = fast_gateway(spawn, [r], "restart", redis_timeout_ms=1000, presence_cache_ms=100)

    async def body():
        cust = await connect(g, "customer")
        agent = await connect(g, "agent", proto="msgpack")
        await cust.no_push("resync", within=0.3)
        os.kill(r.pid, signal.SIGKILL)
        r.wait(5)
        r.start()
        for c in (cust, agent):
            rs = await c.next_push("resync", timeout=10)
            assert "conv" not in rs and rs["reason"] == "redis_restart"
        # and after it the connection works as before
        await cust.ok("conv.open")
    run(body(), timeout=40)


async def raw_sender(g, tag, n):
    """An assigned pair plus a raw connection of the customer and n msg.send frames for it
    (req i, cid <tag>-i), to be written in one go."""
    cust, agent, conv = await assigned_pair(g)
    tok = H.make_token(cust.user, "customer")
    raw = RawWS(g, query="token=" + tok, protocol="kefu.v1.json")
    assert raw.recv_obj("json")["type"] == "welcome"
    frames = [(OP_TEXT, ('{"type":"msg.send","req":%d,"conv":"%s","text":"%s %d",'
                         '"cid":"%s-%d"}' % (i, conv, tag, i, tag, i)).encode()) for i in range(n)]
    return cust, agent, conv, raw, frames


def test_overload_pauses_reads_and_loses_nothing(spawn):
    """With a tiny in-flight bound the gateway stops reading the sender instead of queueing: every
    message is acknowledged and pushed, none fails, the Redis connection is never reset."""
    r = spawn.redis()
    g = fast_gateway(spawn, [r], "bp", redis_inflight_max=16, presence_cache_ms=100,
                     redis_timeout_ms=5000, overload_shed_ms=0)
    n = 1500

    async def body():
        cust, agent, conv, raw, frames = await raw_sender(g, "bp", n)
        raw.send_frames(frames)
        acked = set()
        deadline = time.monotonic() + 30
        while len(acked) < n and time.monotonic() < deadline:
            m = raw.recv_obj("json", timeout=10)
            if m.get("type") == "ok":
                acked.add(m["req"])
            elif m.get("type") == "error":
                raise AssertionError(f"refused under backpressure: {m}")
        assert len(acked) == n
        seen, prev = 0, None
        while seen < n:
            p = await agent.next_push("msg", conv=conv, timeout=10)
            if prev is not None:
                assert p["prev"] == prev, "gap in the live pushes"
            prev = p["id"]
            seen += 1
        m = g.metrics()
        assert m.get("kefu_rx_pauses_total") >= 1
        assert m.get("kefu_redis_failures_total") == 0
        assert m.get("kefu_rx_paused") == 0
        assert "reconnecting" not in g.proc.log_text()
    run(body(), timeout=60)


def gateway_recvq(g, raw):
    """Bytes the gateway's kernel holds unread from this raw connection (ss, Recv-Q)."""
    lport = raw.sock.getsockname()[1]
    out = subprocess.run(["ss", "-Htn", "state", "established",
                          f"( sport = :{g.port} and dport = :{lport} )"],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0])


def test_held_client_waits_in_its_own_buffers(spawn):
    """While backpressure holds a connection, what its client sends waits in the gateway's
    kernel only up to rcvbuf_bytes (then TCP's window holds the client), not the kernel's
    default of about 800 frames; when Redis is back every frame is acknowledged."""
    r = spawn.redis()
    opts = dict(redis_inflight_max=16, presence_cache_ms=100, redis_timeout_ms=30000,
                overload_shed_ms=0)
    small = fast_gateway(spawn, [r], "rcvsmall", rcvbuf_bytes=4096, **opts)
    auto = fast_gateway(spawn, [r], "rcvauto", rcvbuf_bytes=0, **opts)
    n = 3000

    async def body():
        held = {}
        for g in (small, auto):
            cust, agent, conv, raw, frames = await raw_sender(g, g.name, n)
            data = b"".join(raw.frame(op, p) for op, p in frames)
            raw.sock.settimeout(None)
            t = threading.Thread(target=raw.sock.sendall, args=(data,), daemon=True)
            held[g.name] = (g, raw, t, len(data))
        os.kill(r.pid, signal.SIGSTOP)
        try:
            for g, raw, t, size in held.values():
                t.start()
            time.sleep(1.5)
            q_small = gateway_recvq(small, held[small.name][1])
            q_auto = gateway_recvq(auto, held[auto.name][1])
        finally:
            os.kill(r.pid, signal.SIGCONT)
        assert 0 < q_small <= 2 * 4096, q_small
        assert q_auto > 4 * 4096, f"the kernel's default held only {q_auto} bytes"
        for g, raw, t, size in held.values():
            raw.sock.settimeout(5.0)
            acked = 0
            while acked < n:
                m = raw.recv_obj("json", timeout=20)
                assert m.get("type") == "ok", m
                acked += 1
            t.join(10)
            assert not t.is_alive()
    run(body(), timeout=90)


def test_long_overload_refuses_instead_of_holding(spawn):
    """Redis stalls (SIGSTOP) with commands in flight: the sender is held unread, and after
    overload_shed_ms it is read again and its msg.send refused as overloaded (with retry_ms)
    rather than left waiting; once Redis answers, what was accepted is acknowledged and
    pushed, and sending works again."""
    r = spawn.redis()
    g = fast_gateway(spawn, [r], "shed", redis_inflight_max=16, presence_cache_ms=100,
                     redis_timeout_ms=30000, overload_shed_ms=300)
    n = 200

    async def body():
        cust, agent, conv, raw, frames = await raw_sender(g, "shed", n)
        os.kill(r.pid, signal.SIGSTOP)
        try:
            raw.send_frames(frames)
            refused = {}
            while len(refused) < n - 64:
                m = raw.recv_obj("json", timeout=5)
                assert m.get("type") == "error", m
                refused[m["req"]] = m
        finally:
            os.kill(r.pid, signal.SIGCONT)
        assert all(m["code"] == "overloaded" and m["retry_ms"] > 0 for m in refused.values())
        acked = set()
        while len(acked) + len(refused) < n:
            m = raw.recv_obj("json", timeout=10)
            if m.get("type") == "ok":
                acked.add(m["req"])
            else:
                assert m.get("type") == "error" and m["code"] == "overloaded", m
                refused[m["req"]] = m
        assert acked, "nothing was accepted before the stall"
        page = await agent.ok("history", conv=conv, limit=200)
        stored = {int(m["cid"].split("-")[1]) for m in page["msgs"] if m["cid"].startswith("shed-")}
        assert stored == acked, "stored and acknowledged differ"
        mid, _, _ = await send_msg(cust, conv, "after the overload")
        await agent.next_push("msg", conv=conv, id=mid, timeout=10)
        m = g.metrics()
        assert m.get("kefu_errors_total", code="overloaded") == len(refused)
        assert m.get("kefu_redis_failures_total") == 0
    run(body(), timeout=60)


# ---- strict wire ----

def raw_upgrade(g, request):
    """Sends a hand-written upgrade request; returns (status, response bytes)."""
    with socket.create_connection((g.host, g.port), timeout=5) as s:
        s.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    status = int(buf.split(b" ", 2)[1]) if buf.startswith(b"HTTP/1.") else None
    return status, buf


def upgrade_request(g, version="13", key=None, eol=b"\r\n"):
    key = key if key is not None else "dGhlIHNhbXBsZSBub25jZQ=="
    lines = [b"GET /ws HTTP/1.1", b"Host: %s:%d" % (g.host.encode(), g.port),
             b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Key: " + key.encode(), b"Sec-WebSocket-Version: " + version.encode()]
    return eol.join(lines) + eol + eol


def test_upgrade_is_strict(cluster):
    g = cluster.n1
    assert raw_upgrade(g, upgrade_request(g))[0] == 101
    status, resp = raw_upgrade(g, upgrade_request(g, version="8"))
    assert status == 400 and b"sec-websocket-version: 13" in resp.lower()
    assert raw_upgrade(g, upgrade_request(g, key="c2hvcnQ="))[0] == 400       # 5 bytes
    assert raw_upgrade(g, upgrade_request(g, key="dGhlIHNhbXBsZSBub25jZQ"))[0] == 400
    assert raw_upgrade(g, upgrade_request(g, key="dGhlIHNhbXBsZSBub25jZR=="))[0] == 400
    status, _ = raw_upgrade(g, upgrade_request(g, eol=b"\n"))
    assert status == 400


def frame_unmasked(opcode, payload):
    return struct.pack("!BB", 0x80 | opcode, len(payload)) + payload


def test_unmasked_and_rsv_frames_close_1002(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="strict")
    tok = H.make_token(new_id("cust"), "customer")
    before = g.metrics().get("kefu_closes_total", reason="protocol")
    cases = [frame_unmasked(OP_TEXT, b'{"type":"ping"}')]
    rsv1 = bytearray(RawWS.frame(OP_TEXT, b'{"type":"ping"}'))
    rsv1[0] |= 0x40
    cases.append(bytes(rsv1))
    for data in cases:
        raw = RawWS(g, query="token=" + tok, protocol="kefu.v1.json")
        assert raw.recv_obj("json")["type"] == "welcome"
        raw.sock.sendall(data)
        code, reason, _ = raw.read_until_close(timeout=5)
        assert code == 1002, (data, code, reason)
        # answer the close as a client does, so the server need not wait for its close timeout
        try:
            raw.send_close(1002)
        except OSError:
            pass                                    # the server may have closed already
        raw.close()
    H.wait_until(lambda: g.metrics().get("kefu_closes_total", reason="protocol") == before + 2,
                 timeout=5, what="protocol closes counted")
    assert g.metrics().get("kefu_closes_total", reason="peer") == 0


def test_nul_in_string_answers_with_req(cluster):
    async def body():
        c = await connect(cluster.n1, "customer")
        await c.send_raw('{"type":"msg.send","req":"n1","conv":"x","text":"a\\u0000b","cid":"c"}')
        e = await c.answer("n1")
        assert e["type"] == "error" and e["code"] == "bad_request" and "NUL" in e["message"]
        m = await connect(cluster.n1, "customer", proto="msgpack")
        await m.send_raw(msgpack.packb({"type": "ping", "req": 9, "x": "a\x00b"}))
        e = await m.answer(9)
        assert e["code"] == "bad_request"
        await c.ping()
    run(body())


def test_history_after_out_of_range_is_bad_request(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer")
        conv, _ = await open_conv(cust)
        before = cluster.n1.metrics().get("kefu_errors_total", code="unavailable")
        for bad in ("99999999999999999999-0", "1-18446744073709551616", "-1", "1-"):
            e = await cust.err("bad_request", "history", conv=conv, after=bad)
            assert "after" in e["message"]
        ok = await cust.ok("history", conv=conv, after="18446744073709551615-18446744073709551615")
        assert ok["msgs"] == []
        assert cluster.n1.metrics().get("kefu_errors_total", code="unavailable") == before
    run(body())


def test_unavailable_carries_retry_hint(spawn):
    r = spawn.redis()
    g = fast_gateway(spawn, [r], "hint")

    async def body():
        cust = await connect(g, "customer")
        conv, _ = await open_conv(cust)
        os.kill(r.pid, signal.SIGSTOP)
        try:
            e = await cust.err("unavailable", "msg.send", conv=conv, text="x", cid="h1")
            assert e["retry_ms"] > 0
        finally:
            os.kill(r.pid, signal.SIGCONT)
    run(body(), timeout=30)


# ---- the one-pass msg.send reader (gateway/fastpath.c) agrees with the general decoder ----

def test_fast_msg_send_matches_general_path(spawn, cluster):
    g = fast_gateway(spawn, cluster.shards, "fast", presence_cache_ms=100)

    async def body():
        cust, agent, conv = await assigned_pair(g)
        mp = await connect(g, "agent", proto="msgpack", sub=agent.user)   # the agent's 2nd device
        # escapes of every kind, Chinese as UTF-8 and as \\u, a surrogate pair, quotes in req
        texts = [
            ('"plain"', "plain"),
            ('"line\\nbreak \\"quoted\\" back\\\\slash\\/ tab\\t"', 'line\nbreak "quoted" back\\slash/ tab\t'),
            ('"\\u4f60\\u597d \u4e16\u754c"', "\u4f60\u597d \u4e16\u754c"),
            ('"emoji \\ud83d\\ude00"', "emoji \U0001F600"),
            ('"ctl \\u0001\\b\\f\\r"', "ctl \x01\b\f\r"),
        ]
        for i, (raw, want) in enumerate(texts):
            for req in (f'{100 + i}', f'"r-{i} \\"q\\""', None):
                cid = new_id("cid")
                fields = ['"type":"msg.send"', f'"conv":"{conv}"', f'"text":{raw}', f'"cid":"{cid}"']
                if req is not None:
                    fields.insert(1, f'"req":{req}')
                await cust.send_raw("{" + ", ".join(fields) + "}")
                if req is not None:
                    ans = await cust.answer(json_value(req))
                else:
                    ans = await cust.take_any(["ok"])
                assert ans["type"] == "ok" and ans["dup"] is False and "prev" in ans, ans
                p = await agent.next_push("msg", conv=conv, id=ans["id"])
                assert p["text"] == want and p["cid"] == cid and p["prev"] == ans["prev"]
                assert p["from"]["id"] == cust.user and p["from"]["role"] == "customer"
        page = await agent.ok("history", conv=conv, limit=200)
        assert [m["text"] for m in page["msgs"]][-3:] == [texts[-1][1]] * 3
        # frames the one-pass reader leaves to the general decoder keep their precise errors
        cases = [
            ('{"type":"msg.send","req":1,"conv":"%s","text":"","cid":"c"}' % conv, "bad_request"),
            ('{"type":"msg.send","req":2,"conv":"%s","text":"a\\u0000b","cid":"c"}' % conv, "bad_request"),
            ('{"type":"msg.send","req":3,"conv":"%s","text":"a","text":"b","cid":"c"}' % conv, "bad_request"),
            ('{"type":"msg.send","req":4,"conv":"%s","text":"%s","cid":"c"}' % (conv, "x" * 9000), "too_large"),
            ('{"type":"msg.send","req":5,"conv":"bad conv!","text":"a","cid":"c"}', "bad_request"),
            ('{"type":"msg.send","req":6,"conv":"%s","text":"a","cid":"%s"}' % (conv, "c" * 65), "too_large"),
            ('{"type":"msg.send","req":7,"conv":"%s","text":"a","cid":"c","x":{"y":1}}' % conv, None),
        ]
        for frame, code in cases:
            await cust.send_raw(frame)
            req = json_value(frame.split('"req":', 1)[1].split(",", 1)[0])
            ans = await cust.answer(req)
            if code:
                assert ans["type"] == "error" and ans["code"] == code, (frame[:80], ans)
            else:
                assert ans["type"] == "ok", ans     # unknown fields are ignored, as before
        # the msgpack agent got every push too, re-encoded from the same JSON text
        for _ in range(50):
            got = [m for m in mp.pushes("msg") if m.get("conv") == conv]
            if len(got) >= len(texts) * 3 + 1:
                break
            await asyncio.sleep(0.1)
        assert len(got) == len(texts) * 3 + 1
        assert got[-2]["text"] == texts[-1][1]
    run(body())


def json_value(s):
    import json
    return json.loads(s)
