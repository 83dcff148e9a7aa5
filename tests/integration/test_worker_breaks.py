"""Agent states and breaks: the ratio rules per group (meal 70 %, restroom 80 %, other one at a
time, handover 50 %), queued requests approved or denied by a supervisor or granted once they
fit, the refuse policy, away agents getting nothing new, and offline after the grace period."""

import asyncio

from kefu_client import connect, run
from worker_helpers import agent_on, load_of, open_waiting, wcluster


async def state_push(agent, status, timeout=3.0):
    return await agent.next_push("agent.state", status=status, timeout=timeout)


def test_break_ratios_queue_approve_deny_grant(spawn):
    wc = wcluster(spawn, routes="*=team")

    async def body():
        sup = await connect(wc.n1, "supervisor", "json")
        await sup.ok("monitor.subscribe")
        a = [await agent_on(wc.n1 if i % 2 else wc.n2, skills=["team"], max_chats=5)
             for i in range(5)]
        # meal: 4 of 5 stay (80 % >= 70 %)
        r = await a[0].ok("agent.status", status="away", reason="meal")
        assert (r["status"], r["reason"], r["pending"]) == ("away", "meal", ""), r
        # a second meal would leave 3 of 5 (60 %): queued, with the reason why
        r = await a[1].ok("agent.status", status="away", reason="meal")
        assert (r["status"], r["pending"]) == ("available", "meal"), r
        assert "70%" in r["message"] and "3 of 5" in r["message"], r
        p = await sup.next_push("monitor", kind="break", state="pending", agent=a[1].user)
        assert p["reason"] == "meal"
        snap = await sup.ok("monitor.subscribe")
        assert [b["agent"] for b in snap["breaks"]] == [a[1].user]
        # the supervisor approves it anyway
        r = await sup.ok("break.approve", agent=a[1].user)
        assert r["decision"] == "approved" and r["reason"] == "meal"
        d = await a[1].next_push("break.decision", decision="approved")
        assert d["by"] == sup.user
        st = await state_push(a[1], "away")
        assert st["reason"] == "meal"
        await sup.next_push("monitor", kind="break", state="approved", agent=a[1].user)
        # restroom needs 80 %: 2 of 5 would remain -> queued, then denied
        r = await a[2].ok("agent.status", status="away", reason="restroom")
        assert r["pending"] == "restroom" and "80%" in r["message"], r
        await sup.ok("break.deny", agent=a[2].user, note="busy hour")
        d = await a[2].next_push("break.decision", decision="denied")
        assert d["note"] == "busy hour" and d["reason"] == "restroom"
        await sup.err("not_found", "break.deny", agent=a[2].user)
        await a[2].err("forbidden", "break.approve", agent=a[2].user)
        # other: one at a time per group
        r = await a[2].ok("agent.status", status="away", reason="other")
        assert r["status"] == "away", r
        r = await a[3].ok("agent.status", status="away", reason="other")
        assert r["pending"] == "other" and "at most 1" in r["message"], r
        # handover needs 50 %: only a3 (pending) and a4 are available of 5
        r = await a[4].ok("agent.status", status="away", reason="handover")
        assert r["pending"] == "handover", r
        # a2 comes back: a3's "other" now fits and is granted by itself
        r = await a[2].ok("agent.status", status="available")
        assert r["status"] == "available"
        st = await state_push(a[3], "away")
        assert st["reason"] == "other"
        await sup.next_push("monitor", kind="break", state="granted", agent=a[3].user)
        # away agents get no new conversations; the available ones (a2, a4) share them
        cust = await connect(wc.n2, "customer", "json")
        convs = {await open_waiting(cust, topic=f"t{i}") for i in range(4)}
        for ag in (a[2], a[4]):
            for _ in range(2):
                await ag.next_push("conv.assigned", timeout=5)
        assert load_of(wc, a[2].user) | load_of(wc, a[4].user) == convs
        for i in (0, 1, 3):
            await a[i].no_push("conv.assigned", within=0.05)
            assert load_of(wc, a[i].user) == set()
        # an away agent keeps its conversations; going offline drops a pending request
        r = await a[4].ok("agent.status", status="offline")
        assert r["status"] == "offline" and r["pending"] == ""
        snap = await sup.ok("monitor.subscribe")
        assert snap["breaks"] == []
        by = {x["agent"]: x for x in snap["agents"]}
        assert by[a[4].user]["load"] == 2 and by[a[4].user]["status"] == "offline"
        assert by[a[0].user]["status"] == "away" and by[a[0].user]["reason"] == "meal"
        # bad requests
        await a[0].err("bad_request", "agent.status", status="away")
        await a[0].err("bad_request", "agent.status", status="away", reason="nap")
        await a[0].err("bad_request", "agent.status", status="busy")
        await a[0].err("bad_request", "agent.status", status="available", reason="meal")
        off = await connect(wc.n1, "agent", "json", skills=["team"])
        await off.err("conflict", "agent.status", status="away", reason="meal")
        c2 = await connect(wc.n1, "customer", "json")
        await c2.err("forbidden", "agent.status", status="available")
    run(body())


def test_break_refused_by_policy(spawn):
    wc = wcluster(spawn, workers=1, break_policy="refuse")

    async def body():
        a1 = await agent_on(wc.n1, skills=["pair"])
        await agent_on(wc.n2, skills=["pair"])
        f = await a1.err("conflict", "agent.status", status="away", reason="meal")
        assert "meal break needs 70% of group pair online: 1 of 2 would remain" in f["message"]
        r = await a1.ok("agent.status", status="away", reason="other")
        assert r["status"] == "away"
    run(body())


def test_offline_after_grace_and_back_within_it(spawn):
    wc = wcluster(spawn, offline_grace_ms=800, presence_check_ms=100)

    async def body():
        sup = await connect(wc.n1, "supervisor", "json")
        await sup.ok("monitor.subscribe")
        keep = await agent_on(wc.n1, max_chats=5)
        tok_agent = await agent_on(wc.n2, max_chats=5)
        user, token = tok_agent.user, tok_agent.token
        # every device gone: marked disconnected, no new conversations, then offline
        await tok_agent.close()
        p = await sup.next_push("monitor", kind="agent", agent=user, timeout=3,
                                match=lambda f: f.get("kind") == "agent" and f.get("agent") == user
                                and f.get("connected") is False)
        assert p["status"] == "available"
        cust = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust)
        a = await keep.next_push("conv.assigned", conv=conv, timeout=3)
        assert a["conv"] == conv
        p = await sup.next_push("monitor", timeout=3,
                                match=lambda f: f.get("agent") == user and f.get("status") == "offline")
        # an agent that comes back within the grace period keeps its status
        from kefu_client import Client
        c = await Client.open(wc.n1, "json")
        await c.hello(keep.token)
        await keep.close()
        await asyncio.sleep(0.3)
        snap = await sup.ok("monitor.subscribe")
        by = {x["agent"]: x for x in snap["agents"]}
        assert by[keep.user]["status"] == "available", by[keep.user]
        assert by[user]["status"] == "offline"
        assert token
    run(body())
