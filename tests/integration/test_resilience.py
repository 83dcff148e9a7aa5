"""Regressions from the design review: reloads keep command-line flags, an answer larger than
the output-queue byte limit is not a slow consumer, slow consumers are cut promptly."""

import asyncio
import signal
import time

import kefu_harness as H
from kefu_client import Client, Follower, RawWS, connect, new_id, open_assigned, run, send_msg


def test_sighup_keeps_flag_options(spawn, cluster):
    """jwt_secrets given as a flag (the harness passes every option as a flag) must survive a
    SIGHUP; a reload once fell back to the development secret."""
    g = spawn.gateway(cluster.shards, name="hupflag")

    async def body():
        await connect(g, "customer", "json")
        g.proc.send_signal(signal.SIGHUP)
        H.wait_until(lambda: "SIGHUP: configuration reloaded" in g.proc.log_text(), timeout=5,
                     what="the reload log line")
        c = await connect(g, "customer", "json")      # signed with the flag's secret
        await c.ping()
        dev = await Client.open(g, "json")
        await dev.send({"type": "hello", "token": H.make_token(new_id("c"), "customer",
                                                               secret="kefu-dev-secret-change-me")})
        code, reason = (await dev.expect_close())[:2]
        assert (code, reason) == (4401, "invalid token: bad_signature")
    run(body())


def test_answer_larger_than_outq_limit_is_delivered(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="bigpage", outq_max_bytes=16384,
                      rate_per_s=100000, rate_burst=100000)

    async def body():
        cust = await connect(g, "customer", "json")
        agent = await connect(g, "agent", "json")
        conv = await open_assigned(cust, agent)
        for i in range(8):
            await send_msg(agent, conv, ("%d" % i) * 4000)
        await asyncio.sleep(0.3)
        page = await cust.ok("history", conv=conv, limit=8)   # ~32 KB in one frame
        assert len(page["msgs"]) == 8
        await cust.ping()
        assert not cust.closed
        assert g.metrics().get("kefu_closes_total", reason="slow_consumer") == 0
    run(body())


def test_slow_consumer_cut_promptly(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="slowcut", outq_max_bytes=65536, outq_max_msgs=64,
                      rate_per_s=100000, rate_burst=100000)

    async def body():
        tok = H.make_token(new_id("cust"), "customer")
        raw = RawWS(g, query="token=" + tok, protocol="kefu.v1.json", rcvbuf=4096)
        assert raw.recv_obj("json")["type"] == "welcome"
        raw.send_text(b'{"type":"conv.open","req":1}')
        conv = raw.recv_obj("json")["conv"]
        agent = await connect(g, "agent", "json")
        await agent.ok("conv.accept", conv=conv)
        for i in range(300):
            await agent.send({"type": "msg.send", "req": agent.next_req(), "conv": conv,
                              "text": "大" * 2700, "cid": f"f{i}"})
        H.wait_until(lambda: g.metrics().get("kefu_closes_total", reason="slow_consumer") == 1,
                     timeout=20, what="the slow-consumer close")
        t0 = time.monotonic()
        # the socket is shut down at once: reading drains what was in flight, then EOF
        await asyncio.to_thread(raw.read_until_close, 10)
        assert time.monotonic() - t0 < 5, "the slow consumer's socket lingered"
        raw.close()
        await agent.ping()
    run(body(), timeout=60)


def test_new_device_misses_nothing_with_presence_cache(spawn, cluster):
    """Nodes cache a user's presence for presence_cache_ms when routing. A device that connects
    on a node the user was not on, while the other side sends steadily, is welcomed at once;
    following the client rules (first history call, prev gaps, the `presence` resync sent once
    older copies have expired) it gets every message, from history or as a push."""
    opts = {"presence_cache_ms": 300, "rate_per_s": 100000, "rate_burst": 100000}
    g1 = spawn.gateway(cluster.shards, name="pc1", **opts)
    g2 = spawn.gateway(cluster.shards, name="pc2", **opts)
    g3 = spawn.gateway(cluster.shards, name="pc3", **opts)

    async def body():
        cust = await connect(g1, "customer", "json")
        agent = await connect(g2, "agent", "json")
        conv = await open_assigned(cust, agent)
        sent = []
        stop = asyncio.Event()

        async def sender():
            i = 0
            while not stop.is_set():
                r = await agent.ok("msg.send", conv=conv, text=f"m{i}", cid=f"pc-{i}")
                sent.append(r["id"])
                i += 1
                await asyncio.sleep(0.002)

        task = asyncio.create_task(sender())
        await asyncio.sleep(0.5)     # g2 now caches the customer's presence: node pc1 only
        dev2 = await connect(g3, "customer", "json", sub=cust.user)
        f = Follower(dev2, conv)
        await f.heal()
        for _ in range(10):
            await f.pump(0.1)
        stop.set()
        await task
        for _ in range(10):
            await f.pump(0.1)
        missing = [i for i in sent if i not in f.held]
        assert not missing, f"{len(missing)} of {len(sent)} messages reached neither history " \
                            f"nor pushes of the new device (first: {missing[:3]})"
    run(body(), timeout=60)


def test_logs_mask_personal_data(spawn, cluster):
    """The log names who authenticated by the user's tag only: nothing of a phone number or an
    e-mail address (not even masked), and never a token."""
    g = spawn.gateway(cluster.shards, name="mask", log_level="info")

    async def body():
        phone = await connect(g, "customer", "json", sub="13812345678")
        mail = await connect(g, "customer", "json", sub="jane.doe@example.com")
        await phone.ping()
        await mail.ping()
        H.wait_until(lambda: f"user {H.user_tag('jane.doe@example.com')}" in g.proc.log_text(),
                     timeout=5, what="the e-mail's tag in the log")
        log = g.proc.log_text()
        assert f"user {H.user_tag('13812345678')}" in log
        assert "13812345678" not in log and "****" not in log  # not even 138****5678
        assert "jane.doe" not in log and "@example.com" not in log
        assert phone.token not in log and mail.token not in log
    run(body())
