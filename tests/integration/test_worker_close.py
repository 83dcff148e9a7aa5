"""Closing and rating: category and outcome recorded, the survey request, conv.rate once per
conversation, only by its customer, within the window; the record of every state change."""

import asyncio

from kefu_client import connect, run, send_msg
from worker_helpers import agent_on, load_of, meta, open_waiting, record, rcall, wcluster


def test_close_survey_and_rating_rules(spawn):
    wc = wcluster(spawn, workers=1, rate_window_ms=1500)

    async def body():
        agent = await agent_on(wc.n1)
        sup = await connect(wc.n2, "supervisor", "json")
        cust = await connect(wc.n2, "customer", "json")
        other = await connect(wc.n1, "customer", "json")
        conv = await open_waiting(cust, topic="wifi broken")
        await agent.next_push("conv.assigned", conv=conv, timeout=3)
        await send_msg(cust, conv, "it does not work")
        first, _, _ = await send_msg(agent, conv, "您好，很高兴为您服务")
        await sup.ok("conv.join", conv=conv)

        # not closed yet
        await cust.err("conflict", "conv.rate", conv=conv, stars=5)
        await agent.err("bad_request", "conv.close", conv=conv, category="rant")
        r = await agent.ok("conv.close", conv=conv, resolution="unresolved", category="fault")
        st = await cust.next_push("conv.state", conv=conv, state="closed")
        assert st["category"] == "fault" and st["resolution"] == "unresolved"
        sv = await cust.next_push("survey.request", conv=conv)
        assert (sv["min"], sv["max"]) == (1, 5) and sv["expires_at"] > 0
        m = meta(wc, conv)
        assert (m["closed_by"], m["resolution"], m["category"]) == (agent.user, "unresolved", "fault")

        # who may rate, how
        await cust.err("bad_request", "conv.rate", conv=conv, stars=0)
        await cust.err("bad_request", "conv.rate", conv=conv, stars=6)
        await cust.err("bad_request", "conv.rate", conv=conv)
        await cust.err("bad_request", "conv.rate", conv=conv, stars="5")
        await cust.err("too_large", "conv.rate", conv=conv, stars=4, comment="x" * 1025)
        await other.err("forbidden", "conv.rate", conv=conv, stars=1)
        await agent.err("forbidden", "conv.rate", conv=conv, stars=5)
        await cust.err("not_found", "conv.rate", conv="0" * 24, stars=5)
        r = await cust.ok("conv.rate", conv=conv, stars=4, comment="fixed by a restart")
        assert r["stars"] == 4
        p = await agent.next_push("conv.rated", conv=conv)
        assert p["stars"] == 4 and p["comment"] == "fixed by a restart"
        await sup.next_push("conv.rated", conv=conv)
        f = await cust.err("conflict", "conv.rate", conv=conv, stars=5)
        assert "already" in f["message"]
        m = meta(wc, conv)
        assert (m["rating"], m["rating_comment"]) == ("4", "fixed by a restart")

        # the window closes
        late = await open_waiting(cust)
        await agent.next_push("conv.assigned", conv=late, timeout=3)
        await agent.ok("conv.close", conv=late)
        await asyncio.sleep(1.7)
        f = await cust.err("conflict", "conv.rate", conv=late, stars=5)
        assert "window" in f["message"]

        # the record: every state change with its time and actor
        evs = record(wc, conv)
        names = [e["ev"] for e in evs]
        assert names == ["opened", "queued", "assigned", "first_response", "closed", "rated"], names
        by = {e["ev"]: e for e in evs}
        assert by["opened"]["by"] == cust.user and by["assigned"]["by"] == "worker"
        assert by["assigned"]["agent"] == agent.user
        assert by["first_response"]["by"] == agent.user and by["first_response"]["id"] == first
        assert by["first_response"]["ts"] == first.split("-")[0]
        assert by["closed"]["by"] == agent.user and by["closed"]["category"] == "fault"
        assert by["rated"]["stars"] == "4"
        assert all(int(e["ts"]) > 0 for e in evs)
        # staff read it with conv.record; customers may not
        r = await sup.ok("conv.record", conv=conv)
        assert [e["ev"] for e in r["events"]] == names
        assert isinstance(r["events"][0]["ts"], int)
        await cust.err("forbidden", "conv.record", conv=conv)
    run(body())


def test_survey_can_be_switched_off(spawn):
    wc = wcluster(spawn, workers=1, survey="no")

    async def body():
        agent = await agent_on(wc.n1)
        cust = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust)
        await agent.next_push("conv.assigned", conv=conv, timeout=3)
        await agent.ok("conv.close", conv=conv)
        await cust.next_push("conv.state", conv=conv, state="closed")
        await cust.no_push("survey.request", within=0.3)
        await cust.ok("conv.rate", conv=conv, stars=3)
    run(body())


def test_customer_leaves_the_queue(spawn):
    """A customer ends a chat nobody took yet: it leaves the queue, the record says who and
    `abandoned`, no survey (nobody served them), and it cannot be closed twice."""
    wc = wcluster(spawn, workers=1)

    async def body():
        cust = await connect(wc.n1, "customer", "json")
        other = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust, topic="never mind")
        queue = "kefu:{q:default}:waiting"
        assert rcall(wc, "q:default", "ZSCORE", queue, conv) is not None
        await other.err("forbidden", "conv.close", conv=conv)
        f = await cust.err("bad_request", "conv.close", conv=conv, category="complaint")
        assert "set by staff" in f["message"], f
        r = await cust.ok("conv.close", conv=conv)
        assert r["state"] == "closed", r
        assert rcall(wc, "q:default", "ZSCORE", queue, conv) is None
        m = meta(wc, conv)
        assert (m["state"], m["closed_by"], m["resolution"]) == ("closed", cust.user, "abandoned")
        closed = [e for e in record(wc, conv) if e["ev"] == "closed"]
        assert len(closed) == 1 and closed[0]["by"] == cust.user, closed
        assert closed[0]["resolution"] == "abandoned"
        await cust.no_push("survey.request", within=0.8, conv=conv)
        f = await cust.err("conflict", "conv.rate", conv=conv, stars=1)   # nobody served them
        assert "before an agent took it" in f["message"], f
        await cust.err("conflict", "conv.close", conv=conv)
        assert conv not in [e["conv"] for e in (await cust.ok("conv.list"))["convs"]]
    run(body())


def test_customer_ends_an_assigned_chat(spawn):
    """A customer ends a chat an agent has: the agent is told (closed_by the customer), the
    customer still gets the survey, and the agent's capacity is free for the next one."""
    wc = wcluster(spawn, workers=1)

    async def body():
        agent = await agent_on(wc.n2, max_chats=1)
        cust = await connect(wc.n1, "customer", "json")
        conv = await open_waiting(cust, topic="where is my parcel")
        await agent.next_push("conv.assigned", conv=conv, timeout=3)
        await send_msg(agent, conv, "您好，请问有什么可以帮您？")
        assert load_of(wc, agent.user) == {conv}
        await cust.ok("conv.close", conv=conv)
        st = await agent.next_push("conv.state", conv=conv, state="closed")
        assert st["closed_by"] == cust.user and st["resolution"] == "customer_closed", st
        sv = await cust.next_push("survey.request", conv=conv)
        assert (sv["min"], sv["max"]) == (1, 5)
        m = meta(wc, conv)
        assert (m["closed_by"], m["resolution"]) == (cust.user, "customer_closed")
        assert load_of(wc, agent.user) == set()
        await cust.ok("conv.rate", conv=conv, stars=5)
        # the one chat the agent may hold is free again: the next customer gets them
        nxt = await open_waiting(await connect(wc.n1, "customer", "json"))
        await agent.next_push("conv.assigned", conv=nxt, timeout=3)
    run(body())
