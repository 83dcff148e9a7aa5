"""Transfers: to another agent (who gets the history), to another group (back in the queue with
the original waiting time), the customer told each time, and a supervisor forbidding transfers
out of a group."""

import kefu_harness as H
from kefu_client import connect, run, send_msg
from worker_helpers import agent_on, load_of, meta, open_waiting, rcall, record, wcluster


def test_transfer_to_agent_and_group(spawn):
    wc = wcluster(spawn, routes="topic:bill=billing")

    async def body():
        a = await agent_on(wc.n1)
        cust = await connect(wc.n2, "customer", "msgpack")
        conv = await open_waiting(cust, topic="hello")
        await a.next_push("conv.assigned", conv=conv, timeout=5)
        await cust.next_push("conv.state", conv=conv, state="assigned")
        b = await agent_on(wc.n2, max_chats=2)
        billing = await connect(wc.n1, "agent", "json", skills=["billing"])
        await billing.ok("agent.status", status="offline")
        m1, _, _ = await send_msg(cust, conv, "my bill is wrong")
        m2, _, _ = await send_msg(a, conv, "let me get a colleague")
        queued_us = meta(wc, conv)["queued_us"]

        # to an agent: the new agent gets the conversation and its history
        r = await a.ok("conv.transfer", conv=conv, to_agent=b.user, note="VIP, be nice")
        assert (r["state"], r["agent"]) == ("assigned", b.user), r
        p = await b.next_push("conv.assigned", conv=conv)
        assert p["transferred_from"] == a.user and p["note"] == "VIP, be nice"
        assert [m["id"] for m in p["msgs"]] == [m1, m2]
        assert p["msgs"][0]["from"]["id"] == cust.user and p["msgs"][0]["text"] == "my bill is wrong"
        st = await cust.next_push("conv.state", conv=conv, state="assigned")
        assert st["agent"] == b.user and st["transferred"] is True and st["from"] == a.user
        await a.err("forbidden", "msg.send", conv=conv, text="still here?", cid="late")
        await send_msg(b, conv, "hello, I take over")
        assert conv not in load_of(wc, a.user) and conv in load_of(wc, b.user)
        assert conv not in {x["conv"] for x in (await a.ok("conv.list"))["convs"]}
        assert conv in {x["conv"] for x in (await b.ok("conv.list"))["convs"]}

        # to a group: waiting again, ahead of a newer conversation of that group
        other = await connect(wc.n1, "customer", "json")
        newer = await open_waiting(other, topic="bill question")
        assert meta(wc, newer)["group"] == "billing"
        r = await b.ok("conv.transfer", conv=conv, to_group="billing")
        assert (r["state"], r["group"]) == ("waiting", "billing"), r
        st = await cust.next_push("conv.state", conv=conv, state="waiting")
        assert st["group"] == "billing" and st["transferred"] is True
        m = meta(wc, conv)
        assert m["queued_us"] == queued_us and m["group"] == "billing" and "agent" not in m
        assert conv not in load_of(wc, b.user)
        # The queue itself, read before anyone signs in to billing (other tests' agents on the
        # shared cluster may take either conversation afterwards).
        q = rcall(wc, "q:billing", "ZRANGE", "kefu:{q:billing}:waiting", 0, -1)
        assert conv in q and newer in q and q.index(conv) < q.index(newer), \
            f"the transferred conversation keeps its waiting time: {q}"
        await billing.ok("agent.status", status="available")
        H.wait_until(lambda: meta(wc, conv).get("state") == "assigned", timeout=5,
                     what="the transferred conversation assigned again")
        evs = [e["ev"] for e in record(wc, conv)]
        assert evs[:3] == ["opened", "queued", "assigned"]
        assert evs.count("transferred") == 2 and evs[-1] == "assigned"
    run(body())


def test_forbidden_transfer_and_errors(spawn):
    wc = wcluster(spawn, workers=1)

    async def body():
        sup = await connect(wc.n1, "supervisor", "json")
        a = await agent_on(wc.n1, max_chats=1)
        cust = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust)
        await a.next_push("conv.assigned", conv=conv, timeout=5)
        full = await agent_on(wc.n2, max_chats=1)
        waiting = await open_waiting(cust)          # goes to `full`, who is then at capacity
        await full.next_push("conv.assigned", conv=waiting, timeout=5)
        b = await agent_on(wc.n2, max_chats=3)
        away = await agent_on(wc.n2, max_chats=3)
        await away.ok("agent.status", status="away", reason="other")
        off = await connect(wc.n2, "agent", "json")
        await off.ok("agent.status", status="offline")
        stranger = await agent_on(wc.n1)

        # the supervisor forbids transfers out of the default group, with its own wording
        r = await sup.ok("group.transfers", group="default", allowed=False,
                         message="请联系主管 / please ask your supervisor")
        assert r["allowed"] is False
        f = await a.err("forbidden", "conv.transfer", conv=conv, to_agent=b.user)
        assert f["message"] == "请联系主管 / please ask your supervisor"
        f = await a.err("forbidden", "conv.transfer", conv=conv, to_group="default")
        snap = await sup.ok("monitor.subscribe")
        assert {g["group"]: g["transfers"] for g in snap["groups"]}["default"] is False
        assert meta(wc, conv)["agent"] == a.user
        # supervisors may still move it
        r = await sup.ok("conv.transfer", conv=conv, to_agent=b.user)
        await b.next_push("conv.assigned", conv=conv)
        await sup.ok("group.transfers", group="default", allowed=True)
        r = await b.ok("conv.transfer", conv=conv, to_agent=a.user)
        assert r["agent"] == a.user
        await a.next_push("conv.assigned", conv=conv)

        # refusals
        await a.err("bad_request", "conv.transfer", conv=conv)
        await a.err("bad_request", "conv.transfer", conv=conv, to_agent=b.user, to_group="x")
        await a.err("bad_request", "conv.transfer", conv=conv, to_group="Bad Group")
        await a.err("not_found", "conv.transfer", conv=conv, to_agent="nobody-here")
        await a.err("not_found", "conv.transfer", conv=conv, to_group="nosuchgroup")
        await a.err("conflict", "conv.transfer", conv=conv, to_agent=off.user)
        await a.err("conflict", "conv.transfer", conv=conv, to_agent=away.user)
        await a.err("conflict", "conv.transfer", conv=conv, to_agent=full.user)
        await a.err("conflict", "conv.transfer", conv=conv, to_agent=a.user)
        await stranger.err("forbidden", "conv.transfer", conv=conv, to_agent=b.user)
        await cust.err("forbidden", "conv.transfer", conv=conv, to_agent=b.user)
        await a.err("not_found", "conv.transfer", conv="0" * 24, to_agent=b.user)
        assert load_of(wc, full.user) == {waiting}
        await full.ok("conv.close", conv=waiting)
        f = await sup.err("conflict", "conv.transfer", conv=waiting, to_agent=b.user)
        assert "not assigned" in f["message"]
        # nothing leaked: loads are what the agents hold
        assert load_of(wc, a.user) == {conv}
        assert load_of(wc, full.user) == set()
        assert conv not in load_of(wc, b.user)
        assert load_of(wc, away.user) == set() and load_of(wc, off.user) == set()
        await sup.err("bad_request", "group.transfers", group="default")
        await a.err("forbidden", "group.transfers", group="default", allowed=False)
    run(body())


def test_supervisor_takes_over(spawn):
    """A supervisor takes a conversation over (conv.transfer to themself) without being an
    available agent: they become its handler, the agent and the customer are told, the worker's
    bookkeeping follows, and the routing never gives them other conversations."""
    wc = wcluster(spawn, workers=1)

    async def body():
        a = await agent_on(wc.n1)
        cust = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust, topic="complaint")
        await a.next_push("conv.assigned", conv=conv, timeout=5)
        await cust.next_push("conv.state", conv=conv, state="assigned")
        sup = await connect(wc.n2, "supervisor", "json", name="主管 Lin")
        await sup.ok("conv.join", conv=conv)
        m1, _, _ = await send_msg(cust, conv, "this is the third time!")
        await sup.next_push("msg", conv=conv, id=m1)
        # transfers are forbidden for the group: a supervisor still may take over
        await sup.ok("group.transfers", group="default", allowed=False)

        r = await sup.ok("conv.transfer", conv=conv, to_agent=sup.user, note="I handle this")
        assert (r["state"], r["agent"]) == ("assigned", sup.user), r
        st = await cust.next_push("conv.state", conv=conv, state="assigned")
        assert (st["agent"], st["agent_name"], st["from"]) == (sup.user, "主管 Lin", a.user), st
        st = await a.next_push("conv.state", conv=conv, state="assigned")
        assert st["agent"] == sup.user and st["transferred"] is True
        p = await sup.next_push("conv.assigned", conv=conv)
        assert p["transferred_from"] == a.user and m1 in [m["id"] for m in p["msgs"]]
        await a.err("forbidden", "msg.send", conv=conv, text="still mine?", cid="late")
        m = meta(wc, conv)
        assert m["agent"] == sup.user and m["agent_name"] == "主管 Lin", m
        # now its handler, not a watcher: its pushes reach the supervisor once
        assert "sup:" + sup.user not in m and sup.user not in m.get("sups", ""), m
        m2, _, _ = await send_msg(cust, conv, "are you the manager?")
        await sup.next_push("msg", conv=conv, id=m2)
        await sup.no_push("msg", conv=conv, id=m2)
        await send_msg(sup, conv, "yes, I am taking care of it")
        assert conv not in load_of(wc, a.user)
        assert load_of(wc, sup.user) == set(), "no state made up for an unregistered supervisor"
        assert conv in {x["conv"] for x in (await sup.ok("conv.list"))["convs"]}
        # the routing does not give the supervisor anything: a new conversation waits for `a`
        other = await open_waiting(cust, topic="another")
        await a.next_push("conv.assigned", conv=other, timeout=5)
        await sup.no_push("conv.assigned", conv=other)
        # taking over twice is a conflict; an agent cannot take over someone else's conversation
        await sup.err("conflict", "conv.transfer", conv=conv, to_agent=sup.user)
        b = await agent_on(wc.n1)
        await b.err("forbidden", "conv.transfer", conv=conv, to_agent=b.user)

        # a supervisor registered as an agent (here away) takes over too, and it counts in their load
        sup2 = await connect(wc.n1, "supervisor", "json", skills=["default"])
        await sup2.ok("agent.status", status="available")
        await sup2.ok("agent.status", status="away", reason="other")
        await sup2.ok("conv.transfer", conv=other, to_agent=sup2.user)
        assert meta(wc, other)["agent"] == sup2.user
        assert load_of(wc, sup2.user) == {other} and other not in load_of(wc, a.user)
        await sup.ok("group.transfers", group="default", allowed=True)

        # and hands it back to an agent, or closes it
        await sup2.ok("conv.transfer", conv=other, to_agent=a.user)
        assert load_of(wc, sup2.user) == set() and meta(wc, other)["agent"] == a.user
        await sup.ok("conv.close", conv=conv, resolution="resolved", category="complaint")
        tr = [e for e in record(wc, conv) if e["ev"] == "transferred"]
        assert len(tr) == 1 and (tr[0]["by"], tr[0]["from"], tr[0]["agent"]) == \
            (sup.user, a.user, sup.user), tr
        closed = [e for e in record(wc, conv) if e["ev"] == "closed"]
        assert closed and closed[0]["agent"] == sup.user, closed
    run(body())
