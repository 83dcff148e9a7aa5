"""Operations: metrics counters, a Redis Cluster master's outage and recovery, SIGTERM drain."""

import asyncio
import signal
import time

import kefu_harness as H
from kefu_client import (Client, RawWS, connect, new_id, open_assigned, open_conv, run,
                         send_msg)


def test_metrics_counters(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="metrics")

    async def body():
        m0 = g.metrics()
        for role in ("customer", "agent", "supervisor", "admin", "unauthenticated"):
            assert m0.has("kefu_connections", role=role), f"kefu_connections{{role={role}}}"
            assert m0.get("kefu_connections", role=role) == 0
        assert m0.get("kefu_redis_slots_up") == 16384 and m0.get("kefu_redis_masters_up") == 1
        cust = await connect(g, "customer", "json")
        agent = await connect(g, "agent", "msgpack")
        sup = await connect(g, "supervisor", "json")
        adm = await connect(g, "admin", "msgpack")
        pending = await Client.open(g, "json")
        H.wait_until(lambda: all(g.metrics().get("kefu_connections", role=r) == 1 for r in (
            "customer", "agent", "supervisor", "admin", "unauthenticated")),
            what="one connection per role")
        conv = await open_assigned(cust, agent)
        cid = new_id("c")
        await cust.ok("msg.send", conv=conv, text="one", cid=cid)
        await cust.ok("msg.send", conv=conv, text="one", cid=cid)      # dup: not stored again
        await send_msg(agent, conv, "two")
        await send_msg(agent, conv, "three")
        await cust.send_raw("{oops")
        await cust.next_frame("error")
        await cust.err("forbidden", "queue.list")
        await cust.err("not_found", "history", conv="nope-" + new_id("x"))
        m1 = g.metrics()
        assert m1.get("kefu_messages_stored_total") - m0.get("kefu_messages_stored_total") == 3
        for code in ("bad_request", "forbidden", "not_found"):
            assert m1.get("kefu_errors_total", code=code) - \
                m0.get("kefu_errors_total", code=code) == 1, f"kefu_errors_total{{code={code}}}"
        # frames: at least what this test sent and received
        assert m1.get("kefu_frames_in_total") - m0.get("kefu_frames_in_total") >= 13
        assert m1.get("kefu_frames_out_total") - m0.get("kefu_frames_out_total") >= 14
        H.wait_until(lambda: g.metrics().get("kefu_redis_commands_total") >
                     m0.get("kefu_redis_commands_total"), what="kefu_redis_commands_total grows")
        # close everything: gauges go back to zero
        for c in (cust, agent, sup, adm, pending):
            await c.close()
        H.wait_until(lambda: all(g.metrics().get("kefu_connections", role=r) == 0 for r in (
            "customer", "agent", "supervisor", "admin", "unauthenticated")),
            what="connections back to 0")
    run(body())


def test_redis_master_outage_and_recovery(spawn):
    """A Redis Cluster without replicas loses one master (kill -9) and gets it back empty: the
    gateways stay ready (every gateway reaches the same cluster: taking them out of a load
    balancer would help nobody) and say how much is served; what lives on the other masters
    works throughout; once the master is back, presence lost with its data is stored again:
    after the clients' resync, chat works without waiting for a presence heartbeat."""
    rc = spawn.redis_cluster(replicas=0)
    g1 = spawn.gateway(rc.addrs, name="ra", redis_timeout_ms=1000)
    g2 = spawn.gateway(rc.addrs, name="rb", redis_timeout_ms=1000)
    slots = rc.slots()
    keep = {rc.master_of(f"kefu:{{n:{g.name}-0}}:inbox", slots).port for g in (g1, g2)}
    victim = next(m for m in rc.masters_now(slots) if m.port not in keep)

    def on_victim(conv):
        return rc.master_of(f"kefu:{{c:{conv}}}:meta", slots) is victim

    async def body():
        # presence keys of these users live on the master that will restart (and lose them)
        cust = await connect(g1, "customer", "json", sub=rc.user_id("cust", slots, on=victim))
        agent = await connect(g2, "agent", "msgpack", sub=rc.user_id("agen", slots, on=victim))
        convs = {False: [], True: []}
        for _ in range(40):
            conv = await open_assigned(cust, agent)
            convs[on_victim(conv)].append(conv)
            if len(convs[False]) >= 2 and len(convs[True]) >= 2:
                break
        assert len(convs[False]) >= 2 and len(convs[True]) >= 2, f"placement: {convs}"
        victim.stop(signal.SIGKILL)
        H.wait_until(lambda: all(g.metrics().get("kefu_redis_masters_up") == 2 for g in (g1, g2)),
                     timeout=6, what="the lost master seen by both nodes")
        for g in (g1, g2):
            assert g.status("/readyz") == 200, "a partial outage took the node out of the pool"
            assert g.status("/healthz") == 200
            m = g.metrics()
            assert 0 < m.get("kefu_redis_slots_up") < 16384
            assert m.get("kefu_redis_masters") == 3
        # conversations on the lost master: unavailable, within the timeout
        for conv in convs[True]:
            t0 = time.monotonic()
            await cust.err("unavailable", "msg.send", conv=conv, text="during outage",
                           cid=new_id("c"), _timeout=6)
            await agent.err("unavailable", "history", conv=conv, _timeout=6)
            assert time.monotonic() - t0 < 2 * 1.0 + 2, "unavailable later than redis_timeout_ms"
        # conversations on the other masters still work for storing and reading
        for conv in convs[False]:
            mid, _, _ = await send_msg(cust, conv, "on a live master")
            h = await agent.ok("history", conv=conv)
            assert mid in [x["id"] for x in h["msgs"]]
        # the connections stay
        await cust.ping()
        await agent.ping()
        assert not cust.closed and not agent.closed
        # restart the master on the same port (its data is gone: no persistence)
        victim.start()
        H.wait_until(lambda: all(g.metrics().get("kefu_redis_slots_up") == 16384
                                 for g in (g1, g2)),
                     timeout=15, what="every slot served again after the master restarted")
        # Both nodes register their users' presence (lost with the master's data) again at
        # once. A lookup answered before that may still be reused for presence_cache_ms, so a
        # push may miss its user until then: that is what the resync (redis_restart) sent
        # presence_cache_ms + 500 ms later covers. From then on chat works across the nodes
        # (fresh conversations on both sides) without waiting for a presence heartbeat.
        for c in (cust, agent):
            rs = await c.next_push("resync", reason="redis_restart", timeout=10)
            assert "conv" not in rs, rs
        seen = set()
        for _ in range(40):
            conv = await open_assigned(cust, agent)
            seen.add(on_victim(conv))
            mid, _, _ = await send_msg(cust, conv, "after recovery")
            p = await agent.next_push("msg", conv=conv, timeout=5)
            assert p["id"] == mid
            mid, _, _ = await send_msg(agent, conv, "welcome back")
            p = await cust.next_push("msg", conv=conv, timeout=5)
            assert p["id"] == mid
            if seen == {False, True}:
                break
        # a new connection on either node works too
        for g in (g1, g2):
            c2 = await connect(g, "customer", "msgpack")
            await open_conv(c2)
    run(body(), timeout=80)


def test_sigterm_drains(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="drain", drain_timeout_ms=1500)

    async def body():
        cust = await connect(g, "customer", "json")
        agent = await connect(g, "agent", "msgpack")
        pending = await Client.open(g, "json")
        conv = await open_assigned(cust, agent)
        await send_msg(cust, conv, "before shutdown")
        await agent.next_push("msg", conv=conv)
        # a client that never reads and never answers the close handshake
        stuck = RawWS(g, query="token=" + H.make_token(new_id("cust"), "customer"),
                      rcvbuf=4096)
        t0 = time.monotonic()
        g.proc.send_signal(signal.SIGTERM)
        for c in (cust, agent, pending):
            assert await c.expect_close(5) == (1001, "server shutting down"), c.label
        rc = await asyncio.to_thread(g.proc.wait, 8)
        elapsed = time.monotonic() - t0
        stuck.close()
        assert rc == 0, f"exit status {rc} after SIGTERM:\n{g.proc.tail()}"
        assert elapsed < 6, f"drain took {elapsed:.1f}s with drain_timeout_ms 1500"
    run(body())
    # the other nodes keep serving
    assert cluster.n1.status("/readyz") == 200

