"""Automatic assignment by two workers behind two gateways: queue order (priority, VIP level,
FIFO), queue positions, routing to groups, lowest load first, capacity never exceeded under a
burst of 500 conversations, and manual conv.accept racing the workers."""

import asyncio
import json
import random
import signal
import time

import kefu_harness as H

from kefu_client import connect, new_id, run
from worker_helpers import agent_on, load_of, meta, open_waiting, wcluster

ROUTES = "topic:urgent=default/high, topic:later=default/low, topic:invoice=billing"


def test_queue_order_priority_vip_fifo(spawn):
    wc = wcluster(spawn, routes=ROUTES)

    async def body():
        # (label, topic, level); opened in this order, nobody available yet
        specs = [("m0-1", "question", 0), ("low", "ask me later", 0), ("vip5", "question", 5),
                 ("high0", "URGENT!", 0), ("m0-2", "question", 0), ("high3", "urgent", 3),
                 ("vip1", "question", 1)]
        convs, custs = {}, {}
        for i, (label, topic, level) in enumerate(specs):
            c = await connect(wc.n1 if i % 2 else wc.n2, "customer", "json", level=level)
            convs[label] = await open_waiting(c, topic=topic)
            custs[label] = c
            await asyncio.sleep(0.01)
        assert meta(wc, convs["high0"])["priority"] == "high"
        assert meta(wc, convs["low"])["priority"] == "low"
        assert meta(wc, convs["vip5"])["priority"] == "medium"
        # everyone waiting is told their place: the low-priority one is last
        p = await custs["low"].next_push("queue.position", conv=convs["low"], position=7, timeout=4)
        assert p["waiting"] == 7 and p["group"] == "default", p
        p = await custs["high3"].next_push("queue.position", conv=convs["high3"], timeout=4)
        assert p["position"] == 1, p
        # one agent with room for one conversation takes them in queue order
        agent = await agent_on(wc.n2, max_chats=1)
        want = ["high3", "high0", "vip5", "vip1", "m0-1", "m0-2", "low"]
        got = []
        for _ in want:
            a = await agent.next_push("conv.assigned", timeout=5)
            label = next(k for k, v in convs.items() if v == a["conv"])
            got.append(label)
            st = await custs[label].next_push("conv.state", conv=a["conv"], state="assigned")
            assert st["agent"] == agent.user
            await agent.no_push("conv.assigned", within=0.15)   # never above max_chats 1
            await agent.ok("conv.close", conv=a["conv"])
        assert got == want
    run(body())


def test_routing_groups_and_lowest_load(spawn):
    wc = wcluster(spawn, routes=ROUTES)

    async def body():
        billing = await agent_on(wc.n1, skills=["billing"], max_chats=5)
        a1 = await agent_on(wc.n1, max_chats=5)
        a2 = await agent_on(wc.n2, max_chats=5)
        cust = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust, topic="my Invoice is wrong")
        pa = await billing.next_push("conv.assigned", conv=conv, timeout=5)
        assert pa["group"] == "billing" and pa["topic"] == "my Invoice is wrong"
        # default group: load is balanced between a1 and a2 (lowest load, then longest idle)
        convs = [await open_waiting(cust, topic=f"q{i}") for i in range(6)]
        # the workers keep each agent's load set
        got = set()
        for a in (a1, a2):
            for _ in range(3):
                got.add((await a.next_push("conv.assigned", timeout=5))["conv"])
        l1, l2 = load_of(wc, a1.user), load_of(wc, a2.user)
        assert len(l1) == 3 and len(l2) == 3, (l1, l2)
        assert l1 | l2 == set(convs)
        for c in convs:
            m = meta(wc, c)
            assert m["state"] == "assigned" and m["agent"] in (a1.user, a2.user)
        await billing.no_push("conv.assigned", within=0.1)
    run(body())


def test_burst_of_500_never_exceeds_capacity(spawn):
    wc = wcluster(spawn)
    N, AGENTS, MAX = 500, 10, 3

    async def body():
        agents = [await agent_on(wc.n1 if i % 2 else wc.n2, max_chats=MAX) for i in range(AGENTS)]
        custs = [await connect(wc.n1 if i % 2 else wc.n2, "customer", "json") for i in range(50)]
        held = {a.user: set() for a in agents}
        peak = {a.user: 0 for a in agents}
        closing = {}          # req of a conv.close -> conv
        assigned_to = {}
        violations = []
        stop = asyncio.Event()

        def spy(a):
            """Counts what the agent holds in the order frames arrive: the answer to a close
            comes before any conversation the freed room brings."""
            orig = a._dispatch

            def dispatch(m):
                f = json.loads(m)
                if f.get("type") == "ok" and f.get("req") in closing:
                    held[a.user].discard(closing.pop(f["req"]))
                elif f.get("type") == "conv.assigned":
                    c = f["conv"]
                    if c in assigned_to:
                        violations.append(f"{c} assigned twice: {assigned_to[c]} and {a.user}")
                    assigned_to[c] = a.user
                    held[a.user].add(c)
                    peak[a.user] = max(peak[a.user], len(held[a.user]))
                    if len(held[a.user]) > MAX:
                        violations.append(f"{a.user} holds {len(held[a.user])} > {MAX}")
                orig(m)
            a._dispatch = dispatch

        async def work(a):
            # close what we get after a short while
            while not stop.is_set():
                try:
                    p = await a.next_push("conv.assigned", timeout=0.5)
                except AssertionError:
                    continue
                await asyncio.sleep(random.uniform(0.0, 0.05))
                req = a.next_req()
                closing[req] = p["conv"]
                await a.send({"type": "conv.close", "req": req, "conv": p["conv"]})

        for a in agents:
            spy(a)
        workers = [asyncio.ensure_future(work(a)) for a in agents]
        t0 = time.monotonic()
        opened = await asyncio.gather(*[
            asyncio.gather(*[open_waiting(c, topic=f"burst {k}") for k in range(N // len(custs))])
            for c in custs])
        convs = {c for group in opened for c in group}
        assert len(convs) == N
        deadline = time.monotonic() + 60
        while len(assigned_to) < N and time.monotonic() < deadline and not violations:
            await asyncio.sleep(0.1)
            # Redis agrees with the clients: no load set above max at any sample
            for a in agents:
                assert len(load_of(wc, a.user)) <= MAX
        stop.set()
        await asyncio.gather(*workers)
        assert not violations, violations[:5]
        assert set(assigned_to) == convs, f"{N - len(assigned_to)} never assigned"
        assert max(peak.values()) == MAX
        elapsed = time.monotonic() - t0
        print(f"500 conversations assigned (and closed) in {elapsed:.2f}s")
    run(body(), timeout=90)


def test_manual_accept_races_automatic_assignment(spawn):
    wc = wcluster(spawn)

    async def body():
        auto = await agent_on(wc.n1, max_chats=30)
        manual = await connect(wc.n2, "agent", "json", max_chats=30)
        await manual.ok("agent.status", status="offline")   # registered, never auto-assigned
        cust = await connect(wc.n2, "customer", "json")
        wins = {"auto": set(), "manual": set()}
        convs = []
        for i in range(25):
            conv = await open_waiting(cust, topic=f"race {i}")
            convs.append(conv)
            r = await manual.request("conv.accept", conv=conv)
            if r["type"] == "ok":
                wins["manual"].add(conv)
            else:
                assert r["code"] == "conflict", r
        await asyncio.sleep(1.0)
        for conv in convs:
            m = meta(wc, conv)
            assert m["state"] == "assigned", m
            (wins["manual"] if m["agent"] == manual.user else wins["auto"]).add(conv)
        assert wins["manual"] | wins["auto"] == set(convs)
        assert not wins["manual"] & wins["auto"]
        # every conversation has exactly one agent, and each agent's load is what it holds
        assert load_of(wc, auto.user) == wins["auto"]
        assert load_of(wc, manual.user) == wins["manual"]
        got = set()
        while True:
            try:
                got.add((await auto.next_push("conv.assigned", timeout=0.3))["conv"])
            except AssertionError:
                break
        assert got == wins["auto"]
    run(body())


def test_skill_relaxation_to_fallback_group(spawn):
    wc = wcluster(spawn, routes="topic:vip=vipdesk", fallback_groups="vipdesk=default",
                  relax_after_ms=600, assign_interval_ms=100)

    async def body():
        general = await agent_on(wc.n1)
        cust = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust, topic="vip lounge access")
        m = meta(wc, conv)
        assert m["group"] == "vipdesk"
        # nobody in vipdesk: after 600 ms of waiting the default group may take it
        await general.no_push("conv.assigned", within=0.4)
        p = await general.next_push("conv.assigned", conv=conv, timeout=3)
        assert p["group"] == "vipdesk"
        assert 600 <= p["assigned_at"] - p["created"] < 1500, p
        # a vipdesk agent is preferred before the wait is over
        vip = await agent_on(wc.n2, skills=["vipdesk"])
        conv2 = await open_waiting(cust, topic="vip again")
        await vip.next_push("conv.assigned", conv=conv2, timeout=3)
        await general.no_push("conv.assigned", within=0.2)
    run(body())


def test_sighup_reloads_and_republishes(spawn):
    shards = [spawn.redis()]
    conf = spawn.workdir / "worker.conf"
    conf.write_text('routes = "topic:alpha=ga"\nbreak_meal_pct 60\n')
    w = spawn.worker(shards, config=str(conf))
    staff = H.shard_addr(shards, "staff")

    def published(field):
        return H.redis_call(staff, "HGET", "kefu:{staff}:config", field)
    assert published("routes") == "topic:alpha=ga" and published("break_meal_pct") == "60"
    conf.write_text('routes = "topic:beta=gb"\n')
    w.proc.send_signal(signal.SIGHUP)
    H.wait_until(lambda: published("routes") == "topic:beta=gb", what="republished routes")
    assert published("break_meal_pct") == "70"       # back to the default
    # a bad file is refused and the running configuration kept
    conf.write_text('routes = "topic:gamma"\n')
    w.proc.send_signal(signal.SIGHUP)
    H.wait_until(lambda: "configuration not reloaded" in w.proc.log_text(), what="refusal")
    assert w.proc.alive() and published("routes") == "topic:beta=gb"
