"""Chatting across two nodes: open, queue, accept, messages both ways, typing, read, close,
tickets, the accept race, idempotent resend, resume after reconnect, other-device echo."""

import asyncio
import secrets
import time

import pytest

import kefu_harness as H
from kefu_client import (PROTOS, Client, assert_from, assert_ms, assert_msg, assert_ticket,
                         connect, history_all, id_key, new_id, open_assigned, open_conv, run,
                         send_msg)

PAIRS = [("json", "json"), ("msgpack", "msgpack"), ("json", "msgpack"), ("msgpack", "json")]


async def retire(agent, convs):
    """Accepts and closes waiting conversations so the shared queue stays short."""
    for conv in convs:
        f = await agent.request("conv.accept", conv=conv)
        if f["type"] == "ok":
            await agent.ok("conv.close", conv=conv)


@pytest.mark.parametrize("cproto,aproto", PAIRS)
def test_chat_flow_two_nodes(cluster, cproto, aproto):
    async def body():
        cust = await connect(cluster.n1, "customer", cproto, channel="web", level=3)
        agent = await connect(cluster.n2, "agent", aproto, skills=["billing"], max_chats=5)
        t0 = int(time.time() * 1000)
        conv, r = await open_conv(cust, topic="退款 refund")
        seq1 = assert_ticket(r["ticket"], "web")
        conv2, r2 = await open_conv(cust, topic="second")
        seq2 = assert_ticket(r2["ticket"], "web")
        # unique; not consecutive (16 counters per channel-day), increasing per counter
        assert seq2 != seq1, f"tickets {r['ticket']} then {r2['ticket']}"
        if (seq1 - 1) % H.PARTS == (seq2 - 1) % H.PARTS:
            assert seq2 > seq1, f"tickets {r['ticket']} then {r2['ticket']}"
        assert conv != conv2

        # the queue shows both (FIFO order: test_queue_is_fifo)
        q = await agent.ok("queue.list")
        order = [e["conv"] for e in q["convs"]]
        assert conv in order and conv2 in order
        # queue order (issue 4): priority, then customer level (VIP first), then oldest first
        rank = {"high": 0, "medium": 1, "low": 2}
        keys = [(rank.get(e["priority"], 1), -e["level"], e["created"]) for e in q["convs"]]
        assert keys == sorted(keys), "queue.list is not in queue order"
        e = q["convs"][order.index(conv)]
        assert (e["ticket"], e["channel"], e["topic"], e["customer"]) == \
            (r["ticket"], "web", "退款 refund", cust.user), e
        assert_ms(e["created"])
        assert e["created"] >= t0 - 2000

        # the customer's conv.list
        lst = {x["conv"]: x for x in (await cust.ok("conv.list"))["convs"]}
        assert set(lst) == {conv, conv2}
        x = lst[conv]
        assert (x["ticket"], x["state"], x["channel"], x["topic"], x["customer"], x["last_id"]) == \
            (r["ticket"], "waiting", "web", "退款 refund", cust.user, ""), x
        assert_ms(x["created"])

        # accept -> conv.state to the customer; the conversation leaves the queue
        a = await agent.ok("conv.accept", conv=conv)
        assert a["conv"] == conv and a["state"] == "assigned"
        st = await cust.next_push("conv.state", conv=conv, state="assigned")
        assert st["agent"] == agent.user and "req" not in st
        assert st.get("agent_name") == agent.name, st
        order = [e["conv"] for e in (await agent.ok("queue.list"))["convs"]]
        assert conv not in order and conv2 in order

        # messages both ways
        id1, ts1, cid1 = await send_msg(cust, conv, "你好, I need help")
        p = await agent.next_push("msg", conv=conv)
        assert_msg(p, conv, cust, "你好, I need help", cid1, id1, ts1)
        id2, ts2, cid2 = await send_msg(agent, conv, "您好，很高兴为您服务，请问有什么可以帮您？")
        p = await cust.next_push("msg", conv=conv)
        assert_msg(p, conv, agent, "您好，很高兴为您服务，请问有什么可以帮您？", cid2, id2, ts2)
        assert id_key(id2) > id_key(id1)
        await cust.no_push("msg", within=0.2)
        await agent.no_push("msg", within=0.0)

        # conv.list carries last_id and the agent
        lst = {x["conv"]: x for x in (await cust.ok("conv.list"))["convs"]}
        assert lst[conv]["last_id"] == id2 and lst[conv]["state"] == "assigned"
        assert lst[conv]["agent"] == agent.user
        assert lst[conv2]["last_id"] == ""
        alst = {x["conv"]: x for x in (await agent.ok("conv.list"))["convs"]}
        assert set(alst) == {conv}, "agent's conv.list must hold exactly the assigned conv"
        assert alst[conv]["last_id"] == id2 and alst[conv]["customer"] == cust.user

        # history, both sides
        for c in (cust, agent):
            h = await c.ok("history", conv=conv)
            assert h["more"] is False and len(h["msgs"]) == 2, h
            assert_msg(h["msgs"][0], conv, cust, "你好, I need help", cid1, id1, ts1, push=False)
            assert_msg(h["msgs"][1], conv, agent, "您好，很高兴为您服务，请问有什么可以帮您？",
                       cid2, id2, ts2, push=False)

        # typing and read
        await cust.ok("typing", conv=conv)
        t = await agent.next_push("typing", conv=conv)
        assert_from(t, cust)
        await agent.ok("typing", conv=conv)
        t = await cust.next_push("typing", conv=conv)
        assert_from(t, agent)
        await agent.ok("read", conv=conv, id=id1)
        rd = await cust.next_push("read", conv=conv)
        assert rd["id"] == id1
        assert_from(rd, agent)
        await cust.ok("read", conv=conv, id=id2)
        rd = await agent.next_push("read", conv=conv)
        assert rd["id"] == id2
        assert_from(rd, cust)
        await cust.no_push("typing", within=0.2)
        await cust.no_push("read", within=0.0)
        await agent.no_push("typing", within=0.0)

        # close
        await agent.ok("conv.close", conv=conv, resolution="unresolved")
        st = await cust.next_push("conv.state", conv=conv, state="closed")
        assert st.get("resolution") == "unresolved", st
        assert st.get("closed_by") == agent.user, st
        # the connection that made a change gets no conv.state for it
        await agent.no_push("conv.state", within=0.2)
        await cust.err("conflict", "msg.send", conv=conv, text="hello?", cid=new_id("c"))
        await agent.err("conflict", "msg.send", conv=conv, text="bye", cid=new_id("c"))
        assert [x["conv"] for x in (await cust.ok("conv.list"))["convs"]] == [conv2]
        assert (await agent.ok("conv.list"))["convs"] == []
        await retire(agent, [conv2])
    run(body())


def test_queue_is_fifo(cluster):
    """queue.list is oldest first, also for conversations opened within one millisecond."""
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        agent = await connect(cluster.n2, "agent", "json")
        opened = [(await open_conv(cust))[0] for _ in range(8)]
        q = await agent.ok("queue.list")
        order = [e["conv"] for e in q["convs"] if e["conv"] in opened]
        await retire(agent, opened)
        assert order == opened, "queue.list order differs from the opening order"
    run(body())


def ticket_part(conv):
    """The partition whose counter numbers a conversation's ticket on a stand-alone server: the
    sixteenth of the slot range its keys' slot lies in."""
    return H.key_slot(f"kefu:{{c:{conv}}}:meta") * H.PARTS // 16384


def expected_tickets(convs):
    """Ticket numbers of a fresh channel-day's tickets, in issue order: the k-th ticket of
    partition p is (k - 1) * 16 + p + 1."""
    counters, out = {}, []
    for conv in convs:
        p = ticket_part(conv)
        counters[p] = counters.get(p, 0) + 1
        out.append((counters[p] - 1) * H.PARTS + p + 1)
    return out


LEGACY_MARK = 1_000_000_000  # KF_TICKET_LEGACY_CLOSED


def test_ticket_sequence_per_fresh_channel(cluster):
    chan = "t" + secrets.token_hex(6)

    async def body():
        cust = await connect(cluster.n1, "customer", "json", channel=chan)
        seqs, convs = [], []
        for _ in range(10):  # (more would meet the frame rate limit when retiring them)
            conv, r = await open_conv(cust)
            seqs.append(assert_ticket(r["ticket"], chan))
            assert len(r["ticket"].rsplit("-", 1)[1]) >= 3, "sequence has at least 3 digits"
            convs.append(conv)
        # numbered by the partitioned counters of the conversations' partitions: unique, each
        # partition's increasing, the partition legible as (n - 1) % 16
        assert seqs == expected_tickets(convs), f"fresh channel {chan}: {seqs}"
        assert len(set(seqs)) == len(seqs)
        if cluster.shards:
            day = r["ticket"].split("-")[-2]
            # the single counter of earlier versions is marked for the day, so an old gateway
            # still running gives numbers the partitioned counters never reach
            legacy = f"kefu:{{t:{chan}-{day}}}:seq"
            assert int(H.redis_call(cluster.shards[0].addr, "GET", legacy)) == LEGACY_MARK
            assert H.redis_call(cluster.shards[0].addr, "INCR", legacy) == LEGACY_MARK + 1
        # channel given explicitly wins over the token's channel
        chan2 = "u" + secrets.token_hex(6)
        conv, r = await open_conv(cust, channel=chan2)
        assert assert_ticket(r["ticket"], chan2) == ticket_part(conv) + 1
        convs.append(conv)
        # no channel in the token: web
        c2 = await connect(cluster.n2, "customer", "msgpack")
        conv, r = await open_conv(c2)
        assert_ticket(r["ticket"], "web")
        convs.append(conv)
        agent = await connect(cluster.n2, "agent", "json")
        await retire(agent, convs)
    run(body())


def test_ticket_sequence_atomic_under_concurrency(cluster):
    chan = "k" + secrets.token_hex(6)

    async def body():
        custs = [await connect(cluster.nodes[i % 2], "customer", ("json", "msgpack")[i % 2],
                               channel=chan) for i in range(8)]
        res = await asyncio.gather(*(c.ok("conv.open") for c in custs))
        seqs = sorted(assert_ticket(r["ticket"], chan) for r in res)
        # whatever order the two gateways' requests reached the counters in, each partition
        # handed out 1, 2, ... of its own numbers
        assert seqs == sorted(expected_tickets([r["conv"] for r in res])), \
            f"concurrent tickets: {[r['ticket'] for r in res]}"
        assert len({r["conv"] for r in res}) == 8
        agent = await connect(cluster.n1, "agent", "json")
        await retire(agent, [r["conv"] for r in res])
    run(body())


def test_ticket_upgrade_during_the_day_continues_the_old_counter(cluster, local_only):
    """A day that gateways of an earlier version already numbered (one counter per channel-day,
    kefu:{t:<channel>-<day>}:seq) goes on with that counter, so no number repeats; the gateways
    switch to the partitioned counters from the next day on."""
    chan = "g" + secrets.token_hex(6)
    day = time.strftime("%Y%m%d")
    legacy = f"kefu:{{t:{chan}-{day}}}:seq"
    addr = cluster.shards[0].addr
    H.redis_call(addr, "SET", legacy, "41", "EX", "259200")

    async def body():
        convs, seqs = [], []
        for i in range(4):
            cust = await connect(cluster.nodes[i % 2], "customer", "json", channel=chan)
            conv, r = await open_conv(cust)
            if r["ticket"].split("-")[-2] != day:
                pytest.skip("the day changed during the test")
            seqs.append(assert_ticket(r["ticket"], chan))
            convs.append(conv)
        assert seqs == [42, 43, 44, 45], f"after 41 old tickets: {seqs}"
        # an old gateway still running goes on with the same counter: still no duplicate
        assert H.redis_call(addr, "INCR", legacy) == 46
        cust = await connect(cluster.n1, "customer", "json", channel=chan)
        conv, r = await open_conv(cust)
        assert assert_ticket(r["ticket"], chan) == 47
        convs.append(conv)
        for p in range(H.PARTS):
            assert not H.redis_call(addr, "EXISTS", f"kefu:{{{H.EV_TAGS[p]}}}:ticket:{chan}-{day}")
        agent = await connect(cluster.n2, "agent", "json")
        await retire(agent, convs)
    run(body())


def test_accept_race(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        agents = [await connect(cluster.nodes[i % 2], "agent", ("json", "msgpack")[i % 2],
                                label=f"agent{i}") for i in range(5)]
        for _round in range(3):
            conv, _ = await open_conv(cust)
            res = await asyncio.gather(*(a.request("conv.accept", conv=conv) for a in agents))
            oks = [i for i, f in enumerate(res) if f["type"] == "ok"]
            conflicts = [f for f in res if f["type"] == "error" and f["code"] == "conflict"]
            assert len(oks) == 1 and len(conflicts) == 4, f"accept race answers: {res}"
            winner = agents[oks[0]]
            st = await cust.next_push("conv.state", conv=conv, state="assigned")
            assert st["agent"] == winner.user
            await cust.no_push("conv.state", within=0.3, conv=conv, state="assigned")
            for a in agents:
                convs = [x["conv"] for x in (await a.ok("conv.list"))["convs"]]
                assert (conv in convs) == (a is winner), f"{a.label} conv.list {convs}"
            # the losers may not write into it, the winner may
            await agents[(oks[0] + 1) % 5].err("forbidden", "msg.send", conv=conv, text="x",
                                                cid=new_id("c"))
            await send_msg(winner, conv, "mine")
            await winner.ok("conv.close", conv=conv)
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_idempotent_resend(cluster, proto):
    async def body():
        cust = await connect(cluster.n1, "customer", proto)
        agent = await connect(cluster.n2, "agent", proto)
        conv = await open_assigned(cust, agent)
        cid = new_id("cid")
        r1 = await cust.ok("msg.send", conv=conv, text="once", cid=cid)
        assert r1["dup"] is False
        r2 = await cust.ok("msg.send", conv=conv, text="once", cid=cid)
        assert r2["dup"] is True and r2["id"] == r1["id"], f"{r1} then {r2}"
        # same cid, different text: still the first message
        r3 = await cust.ok("msg.send", conv=conv, text="changed", cid=cid)
        assert r3["dup"] is True and r3["id"] == r1["id"]
        # the agent's cid space is its own
        r4 = await agent.ok("msg.send", conv=conv, text="agent", cid=cid)
        assert r4["dup"] is False and r4["id"] != r1["id"]
        p = await agent.next_push("msg", conv=conv)
        assert p["id"] == r1["id"] and p["text"] == "once"
        await agent.no_push("msg", within=0.3)
        h = await cust.ok("history", conv=conv)
        assert [(m["id"], m["text"]) for m in h["msgs"]] == [(r1["id"], "once"),
                                                             (r4["id"], "agent")], h
    run(body())


def test_concurrent_resend_from_two_nodes(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        dev2 = await connect(cluster.n2, "customer", "msgpack", sub=cust.user, name=cust.name)
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(cust, agent)
        await dev2.next_push("conv.state", conv=conv, state="assigned")
        for i in range(5):
            cid = new_id("cid")
            res = await asyncio.gather(
                cust.ok("msg.send", conv=conv, text=f"m{i}", cid=cid),
                dev2.ok("msg.send", conv=conv, text=f"m{i}", cid=cid))
            assert res[0]["id"] == res[1]["id"], res
            assert sorted([res[0]["dup"], res[1]["dup"]]) == [False, True], res
        h = await agent.ok("history", conv=conv)
        assert [m["text"] for m in h["msgs"]] == [f"m{i}" for i in range(5)]
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_resume_after_reconnect_on_other_node(cluster, proto):
    async def body():
        cust = await connect(cluster.n1, "customer", proto)
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(cust, agent)
        first, _, _ = await send_msg(agent, conv, "before")
        last = (await cust.next_push("msg", conv=conv))["id"]
        assert last == first
        tok, name = cust.token, cust.name
        await cust.close()
        sent = []
        for i in range(12):
            mid, _, cid = await send_msg(agent, conv, f"missed {i}")
            sent.append((mid, f"missed {i}", cid))
        c2 = await Client.open(cluster.n2, proto)
        w = await c2.hello(tok)
        c2.name = name
        msgs, pages = await history_all(c2, conv, after=last, limit=5)
        assert [(m["id"], m["text"], m["cid"]) for m in msgs] == sent
        assert pages == 3
        for m in msgs:
            assert_msg(m, conv, agent, m["text"], m["cid"], push=False)
        ids = [id_key(m["id"]) for m in msgs]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        everything, _ = await history_all(c2, conv)
        assert [m["id"] for m in everything] == [first] + [s[0] for s in sent]
        # live again: the next message arrives as a push, once; pushes of messages already in
        # the history page are allowed (the client skips them by id)
        mid, _, cid = await send_msg(agent, conv, "live")
        p = await c2.next_push("msg", conv=conv, id=mid)
        assert_msg(p, conv, agent, "live", cid, mid)
        await c2.no_push("msg", within=0.3, id=mid)
        known = {m["id"] for m in everything}
        extra = [f["id"] for f in c2.pushes("msg")]
        assert set(extra) <= known, f"pushes of unknown messages after reconnect: {extra}"
        assert len(extra) == len(set(extra)), f"a missed message pushed twice: {extra}"
        msgs, _ = await history_all(c2, conv, after=sent[-1][0])
        assert [m["id"] for m in msgs] == [mid]
        assert w["node"] != cust.node or cluster.n1 is cluster.n2
    run(body())


def test_other_device_echo(cluster):
    async def body():
        dev1 = await connect(cluster.n1, "customer", "json", label="dev1")
        dev2 = await connect(cluster.n2, "customer", "msgpack", sub=dev1.user, name=dev1.name,
                             label="dev2")
        ag1 = await connect(cluster.n1, "agent", "msgpack", label="ag1")
        ag2 = await connect(cluster.n2, "agent", "json", sub=ag1.user, name=ag1.name, label="ag2")
        conv = await open_assigned(dev1, ag1)
        st = await dev2.next_push("conv.state", conv=conv, state="assigned")
        assert st["agent"] == ag1.user
        # the customer's other device also saw the conversation open; the opening one did not
        await dev2.next_push("conv.state", conv=conv, state="waiting")
        await dev1.no_push("conv.state", within=0.1, state="waiting")
        # the accepting agent's other desk sees the assignment, the accepting one does not
        st = await ag2.next_push("conv.state", conv=conv, state="assigned")
        await ag1.no_push("conv.state", within=0.1)
        mid, ts, cid = await send_msg(dev1, conv, "from phone")
        for c in (dev2, ag1, ag2):
            p = await c.next_push("msg", conv=conv)
            assert_msg(p, conv, dev1, "from phone", cid, mid, ts)
        await dev1.no_push("msg", within=0.3)
        mid, ts, cid = await send_msg(ag2, conv, "from desk 2")
        for c in (dev1, dev2, ag1):
            p = await c.next_push("msg", conv=conv)
            assert_msg(p, conv, ag1, "from desk 2", cid, mid, ts)
        await ag2.no_push("msg", within=0.3)
    run(body())


def test_history_paging_and_limits(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer", "msgpack")
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(cust, agent)
        h = await cust.ok("history", conv=conv)
        assert h["msgs"] == [] and h["more"] is False
        ids = [(await send_msg(cust if i % 2 else agent, conv, f"n{i}"))[0] for i in range(7)]
        h = await cust.ok("history", conv=conv, limit=3)
        assert [m["id"] for m in h["msgs"]] == ids[:3] and h["more"] is True
        h = await cust.ok("history", conv=conv, after=ids[2], limit=3)
        assert [m["id"] for m in h["msgs"]] == ids[3:6] and h["more"] is True
        h = await cust.ok("history", conv=conv, after=ids[5], limit=3)
        assert [m["id"] for m in h["msgs"]] == ids[6:] and h["more"] is False
        h = await cust.ok("history", conv=conv, after=ids[6])
        assert h["msgs"] == [] and h["more"] is False
        h = await cust.ok("history", conv=conv)
        assert [m["id"] for m in h["msgs"]] == ids and h["more"] is False
        h = await cust.ok("history", conv=conv, limit=7)
        assert [m["id"] for m in h["msgs"]] == ids and h["more"] is False
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_text_and_field_limits(cluster, proto):
    async def body():
        cust = await connect(cluster.n1, "customer", proto)
        agent = await connect(cluster.n2, "agent", proto)
        conv = await open_assigned(cust, agent)
        await send_msg(cust, conv, "x" * 8192)
        await send_msg(cust, conv, "中" * 2730)              # 8190 bytes
        await cust.err("too_large", "msg.send", conv=conv, text="x" * 8193, cid=new_id("c"))
        await cust.err("too_large", "msg.send", conv=conv, text="中" * 2731, cid=new_id("c"))
        await cust.err("bad_request", "msg.send", conv=conv, text="", cid=new_id("c"))
        await send_msg(cust, conv, "cid 64", cid="c" * 64)
        f = await cust.request("msg.send", conv=conv, text="cid 65", cid="c" * 65)
        assert f["type"] == "error" and f["code"] in ("bad_request", "too_large"), f
        await cust.err("bad_request", "msg.send", conv=conv, text="empty cid", cid="")
        r = await cust.ok("conv.open", topic="t" * 256)
        f = await cust.request("conv.open", topic="t" * 257)
        assert f["type"] == "error" and f["code"] in ("bad_request", "too_large"), f
        f = await cust.request("conv.open", channel="Bad Channel!")
        assert f["type"] == "error" and f["code"] == "bad_request", f
        h = await agent.ok("history", conv=conv)
        assert [len(m["text"].encode()) for m in h["msgs"]] == [8192, 8190, 6]
        await cust.ping()
        await retire(agent, [r["conv"]])
    run(body())


def test_close_rules(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        agent = await connect(cluster.n2, "agent", "msgpack")
        other = await connect(cluster.n1, "agent", "json")
        sup = await connect(cluster.n2, "supervisor", "json")
        conv = await open_assigned(cust, agent)
        mid, _, _ = await send_msg(cust, conv, "bye soon")
        f = await cust.err("bad_request", "conv.close", conv=conv, resolution="resolved")
        assert "set by staff" in f["message"], f
        await other.err("forbidden", "conv.close", conv=conv)
        await agent.ok("conv.close", conv=conv)
        st = await cust.next_push("conv.state", conv=conv, state="closed")
        assert st.get("resolution", "resolved") == "resolved", st
        await agent.err("conflict", "conv.close", conv=conv)
        await sup.err("conflict", "conv.close", conv=conv)
        await other.err("conflict", "conv.accept", conv=conv)
        await cust.err("conflict", "msg.send", conv=conv, text="more", cid=new_id("c"))
        # the record stays readable
        h = await cust.ok("history", conv=conv)
        assert [m["id"] for m in h["msgs"]] == [mid]
        h = await sup.ok("history", conv=conv)
        assert [m["id"] for m in h["msgs"]] == [mid]
        # a supervisor may close someone else's conversation
        conv2 = await open_assigned(cust, agent)
        await sup.ok("conv.close", conv=conv2, resolution="resolved")
        st = await cust.next_push("conv.state", conv=conv2, state="closed")
    run(body())


def test_close_bad_resolution(cluster):
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(cust, agent)
        await agent.err("bad_request", "conv.close", conv=conv, resolution="maybe")
        await agent.ok("conv.close", conv=conv, resolution="resolved")
        st = await cust.next_push("conv.state", conv=conv, state="closed")
        assert st["resolution"] == "resolved"
    run(body())


def test_cross_node_inbox_metrics(cluster, local_only):
    async def body():
        before = cluster.n2.metrics().get("kefu_inbox_entries_total")
        cust = await connect(cluster.n1, "customer", "json")
        agent = await connect(cluster.n2, "agent", "json")
        conv = await open_assigned(cust, agent)
        await send_msg(cust, conv, "via the inbox")
        await agent.next_push("msg", conv=conv)
        H.wait_until(lambda: cluster.n2.metrics().get("kefu_inbox_entries_total") > before,
                     what="kefu_inbox_entries_total grows on the receiving node")
        lag = cluster.n2.metrics()
        assert lag.has("kefu_inbox_lag_ms")
    run(body())
