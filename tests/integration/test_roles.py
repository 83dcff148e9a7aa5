"""Role checks: who may open, accept, list the queue, read, write, close, join; unknown
conversations."""

import pytest

from kefu_client import (PROTOS, assert_from, assert_msg, connect, new_id, open_assigned,
                         open_conv, run, send_msg)


@pytest.mark.parametrize("proto", PROTOS)
def test_customer_denials(cluster, proto):
    async def body():
        a = await connect(cluster.n1, "customer", proto, label="custA")
        b = await connect(cluster.n2, "customer", proto, label="custB")
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(a, agent)
        mid, _, _ = await send_msg(a, conv, "private")
        assert (await agent.next_push("msg", conv=conv))["id"] == mid
        waiting, _ = await open_conv(a)
        await a.err("forbidden", "queue.list")
        await a.err("forbidden", "conv.accept", conv=waiting)
        await b.err("forbidden", "conv.close", conv=conv)
        await a.err("forbidden", "conv.join", conv=conv)
        # customer B and A's conversation
        await b.err("forbidden", "history", conv=conv)
        await b.err("forbidden", "msg.send", conv=conv, text="hi", cid=new_id("c"))
        await b.err("forbidden", "typing", conv=conv)
        await b.err("forbidden", "read", conv=conv, id=mid)
        await b.err("forbidden", "history", conv=waiting)
        assert (await b.ok("conv.list"))["convs"] == []
        await agent.no_push("msg", within=0.2)
        await agent.no_push("typing", within=0.0)
        # still usable
        await b.ping()
        await a.ping()
        await agent.ok("conv.accept", conv=waiting)
        await agent.ok("conv.close", conv=waiting)
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_agent_denials(cluster, proto):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        owner = await connect(cluster.n2, "agent", "json", label="owner")
        other = await connect(cluster.n1, "agent", proto, label="other")
        conv = await open_assigned(cust, owner)
        mid, _, _ = await send_msg(cust, conv, "for my agent only")
        await other.err("forbidden", "conv.open")
        await other.err("forbidden", "conv.join", conv=conv)
        await other.err("forbidden", "history", conv=conv)
        await other.err("forbidden", "msg.send", conv=conv, text="hijack", cid=new_id("c"))
        await other.err("forbidden", "typing", conv=conv)
        await other.err("forbidden", "read", conv=conv, id=mid)
        await other.err("forbidden", "conv.close", conv=conv)
        await other.err("conflict", "conv.accept", conv=conv)
        await other.no_push("msg", within=0.2)
        await cust.no_push("msg", within=0.0)
        await other.ping()
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_supervisor_reads_joins_and_writes(cluster, proto):
    async def body():
        cust = await connect(cluster.n1, "customer", "json", name="王小姐")
        agent = await connect(cluster.n2, "agent", "msgpack", name="Agent Li")
        sup = await connect(cluster.n1, "supervisor", proto, name="Boss Zhao")
        conv = await open_assigned(cust, agent)
        mid, ts, cid = await send_msg(cust, conv, "我要投诉")
        await agent.next_push("msg", conv=conv)
        # read any conversation without joining
        h = await sup.ok("history", conv=conv)
        assert len(h["msgs"]) == 1
        assert_msg(h["msgs"][0], conv, cust, "我要投诉", cid, mid, ts, push=False)
        # not joined: no pushes, no writing
        await sup.err("forbidden", "msg.send", conv=conv, text="hi", cid=new_id("c"))
        await sup.no_push("msg", within=0.2)
        assert conv not in [x["conv"] for x in (await sup.ok("conv.list"))["convs"]]
        # join: pushes from both sides, may write, listed
        await sup.ok("conv.join", conv=conv)
        mid2, ts2, cid2 = await send_msg(cust, conv, "还在吗")
        p = await sup.next_push("msg", conv=conv)
        assert_msg(p, conv, cust, "还在吗", cid2, mid2, ts2)
        await agent.next_push("msg", conv=conv)
        mid3, ts3, cid3 = await send_msg(agent, conv, "在的")
        p = await sup.next_push("msg", conv=conv)
        assert_msg(p, conv, agent, "在的", cid3, mid3, ts3)
        await cust.next_push("msg", conv=conv)
        mid4, ts4, cid4 = await send_msg(sup, conv, "我是主管，我来处理")
        for c in (cust, agent):
            p = await c.next_push("msg", conv=conv)
            assert_msg(p, conv, sup, "我是主管，我来处理", cid4, mid4, ts4)
            assert p["from"]["role"] == "supervisor"
        await cust.ok("typing", conv=conv)
        assert_from(await sup.next_push("typing", conv=conv), cust)
        lst = [x["conv"] for x in (await sup.ok("conv.list"))["convs"]]
        assert conv in lst
        # closing reaches the joined supervisor too
        await agent.ok("conv.close", conv=conv)
        st = await sup.next_push("conv.state", conv=conv, state="closed")
        assert st.get("closed_by") == agent.user, st
        await cust.next_push("conv.state", conv=conv, state="closed")
    run(body())


def test_admin_reads_any_and_lists_queue(cluster):
    async def body():
        cust = await connect(cluster.n2, "customer", "msgpack")
        agent = await connect(cluster.n1, "agent", "json")
        admin = await connect(cluster.n1, "admin", "msgpack")
        conv = await open_assigned(cust, agent)
        mid, _, _ = await send_msg(agent, conv, "hello")
        h = await admin.ok("history", conv=conv)
        assert [m["id"] for m in h["msgs"]] == [mid]
        await admin.ok("queue.list")
        await admin.err("forbidden", "conv.open")
        await admin.ok("conv.join", conv=conv)
        await send_msg(cust, conv, "hi admin")
        p = await admin.next_push("msg", conv=conv)
        assert p["text"] == "hi admin"
        await admin.ok("conv.close", conv=conv)
    run(body())


def test_unknown_conversation_not_found(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        agent = await connect(cluster.n2, "agent", "msgpack")
        sup = await connect(cluster.n1, "supervisor", "json")
        ghost = "no-such-conv-" + new_id("x")
        for c in (cust, agent, sup):
            await c.err("not_found", "history", conv=ghost)
        await cust.err("not_found", "msg.send", conv=ghost, text="hi", cid=new_id("c"))
        await cust.err("not_found", "typing", conv=ghost)
        await cust.err("not_found", "read", conv=ghost, id="1-0")
        await agent.err("not_found", "conv.accept", conv=ghost)
        await agent.err("not_found", "conv.close", conv=ghost)
        await sup.err("not_found", "conv.join", conv=ghost)
        await sup.err("not_found", "conv.close", conv=ghost)
        for c in (cust, agent, sup):
            await c.ping()
    run(body())


def test_queue_list_by_group(cluster):
    """queue.list takes a skill group: an agent may list its own groups, not others';
    a supervisor may list any."""
    async def body():
        agent = await connect(cluster.n1, "agent", "json", skills=["billing"])
        q = await agent.ok("queue.list", group="billing")
        assert isinstance(q["convs"], list)
        await agent.err("forbidden", "queue.list", group="vip-desk")
        await agent.err("bad_request", "queue.list", group="no spaces")
        sup = await connect(cluster.n2, "supervisor", "msgpack")
        await sup.ok("queue.list", group="vip-desk")
    run(body())
