"""A customer who leaves mid-conversation (DOMAIN.md, sensitive issues): when their last
connection closes while a conversation of theirs is waiting or assigned, and they are not
connected again anywhere within callback_grace_ms, the assigned agent and the supervisors get an
`alert` of kind customer_left (priority high for a complaint or a sensitive conversation), the
record gets a customer_left entry, and a call-back task is created, which supervisors list,
assign and complete (callback.list, callback.assign, callback.done)."""

import asyncio
import time
import uuid

from kefu_client import connect, run, send_msg
from worker_helpers import agent_on, assigned_to, open_waiting, rcall, record

GRACE_MS = 800
DEADLINE_MS = 7_200_000

# A small rule set: the words of a complaint classify it, a threat flags it sensitive; either
# hands the conversation to a human.
RULES = """
bot { name = "Bot" }
rule { keywords = {"complain"}, category = "complaint", handoff = "complaint" }
rule { keywords = {"lawyer"}, sensitive = "threatens legal action", handoff = true }
rule { keywords = {"human"}, handoff = true }
"""


class Setup:
    def __init__(self, spawn, workers=1, bots=False, cluster=False, **wopts):
        shards = spawn.redis_cluster().addrs[:3] if cluster else [spawn.redis().addr]
        gopts = {}
        if bots:
            d = spawn.workdir / f"rules-{uuid.uuid4().hex[:6]}"
            d.mkdir(parents=True)
            (d / "rules.lua").write_text(RULES, encoding="utf-8")
            gopts["bots_dir"] = str(d)
        self.n1 = spawn.gateway(shards, name="ca", **gopts)
        self.n2 = spawn.gateway(shards, name="cb", **gopts)
        wopts.setdefault("callback_grace_ms", GRACE_MS)
        wopts.setdefault("offline_grace_ms", 60000)
        self.workers = [spawn.worker(shards, name=f"cw{i}", **wopts) for i in range(workers)]
        self.addrs = shards

    def tasks(self):
        """Every call-back task in Redis: id -> hash."""
        out = {}
        for st in ("open", "assigned", "done"):
            for tid in rcall(self, "cb", "ZRANGE", f"kefu:{{cb}}:{st}", "0", "-1"):
                flat = rcall(self, "cb", "HGETALL", f"kefu:{{cb}}:task:{tid}")
                out[tid] = dict(zip(flat[::2], flat[1::2]))
        return out

    def worker_metric(self, name):
        total = 0
        for w in self.workers:
            st, text, _ = w.http("/metrics")
            assert st == 200
            for line in text.splitlines():
                if line.startswith(name + " "):
                    total += int(float(line.split()[1]))
        return total


def left(events):
    return [e for e in events if e["ev"] == "customer_left"]


async def sup_on(node):
    sup = await connect(node, "supervisor", "json")
    await sup.ok("monitor.subscribe")
    return sup


def test_customer_leaves_and_does_not_come_back(spawn):
    s = Setup(spawn)

    async def body():
        agent = await agent_on(s.n1)
        sup = await sup_on(s.n2)
        cust = await connect(s.n2, "customer", "json")
        conv = await open_waiting(cust, topic="where is my parcel")
        a = await assigned_to(agent, conv)
        ticket = a["ticket"]
        await send_msg(cust, conv, "hello?")
        t0 = time.time()
        await cust.close()
        # nothing during the grace time
        await sup.no_push("alert", within=GRACE_MS / 1000 * 0.6, kind="customer_left")
        f = await sup.next_push("alert", kind="customer_left", timeout=5)
        assert time.time() - t0 >= GRACE_MS / 1000 * 0.9, "alerted before the grace ran out"
        g = await agent.next_push("alert", kind="customer_left", timeout=5)
        assert f == g, (f, g)
        assert (f["conv"], f["customer"], f["agent"], f["ticket"], f["state"]) == \
            (conv, cust.user, agent.user, ticket, "assigned"), f
        assert (f["priority"], f["complaint"], f["sensitive"]) == ("medium", False, False), f
        assert f["reason"] == "customer left during the conversation", f
        task = f["task"]
        # the record
        ev = left(record(s, conv))
        assert len(ev) == 1, ev
        assert (ev[0]["by"], ev[0]["customer"], ev[0]["task"], ev[0]["priority"],
                ev[0]["agent"]) == ("worker", cust.user, task, "medium", agent.user), ev
        # the task, as Redis holds it and as supervisors list it
        t = s.tasks()[task]
        assert (t["conv"], t["customer"], t["ticket"], t["state"], t["assignee"]) == \
            (conv, cust.user, ticket, "open", ""), t
        assert int(t["deadline"]) - int(t["created"]) == DEADLINE_MS, t
        assert f["deadline"] == int(t["deadline"]), (f, t)
        r = await sup.ok("callback.list")
        assert [x["id"] for x in r["tasks"]] == [task], r
        x = r["tasks"][0]
        assert (x["conv"], x["state"], x["priority"], x["overdue"], x["reason"]) == \
            (conv, "open", "medium", False, f["reason"]), x
        # once only: no second alert, one task
        await sup.no_push("alert", within=1.0, kind="customer_left")
        assert len(s.tasks()) == 1
        assert s.worker_metric("kefu_worker_callback_alerts_total") == 1
        assert s.worker_metric("kefu_worker_callback_tasks_created_total") == 1
        assert s.n2.metrics().get("kefu_customer_left_total") == 1
    run(body(), timeout=60)


def test_waiting_customer_who_leaves_is_called_back(spawn):
    """No agent yet: the supervisors are alerted, the task says the customer was waiting."""
    s = Setup(spawn)

    async def body():
        sup = await sup_on(s.n1)
        cust = await connect(s.n2, "customer", "json")
        conv = await open_waiting(cust, topic="billing")
        await cust.close()
        f = await sup.next_push("alert", kind="customer_left", timeout=5)
        assert (f["conv"], f["state"], f["agent"]) == (conv, "waiting", ""), f
        assert f["reason"] == "customer left while waiting in the queue", f
        assert s.tasks()[f["task"]]["conv_state"] == "waiting"
    run(body(), timeout=60)


def test_customer_back_within_grace_on_another_node_cancels(spawn):
    s = Setup(spawn, callback_grace_ms=1500)

    async def body():
        agent = await agent_on(s.n1)
        sup = await sup_on(s.n1)
        cust = await connect(s.n1, "customer", "json")
        conv = await open_waiting(cust)
        await assigned_to(agent, conv)
        await cust.close()
        await asyncio.sleep(0.4)
        back = await connect(s.n2, "customer", "json", sub=cust.user)
        await sup.no_push("alert", within=2.5, kind="customer_left")
        await agent.no_push("alert", within=0.1, kind="customer_left")
        assert left(record(s, conv)) == [] and s.tasks() == {}
        assert s.worker_metric("kefu_worker_callback_cancelled_total") == 1
        # leaving again starts the grace again, counted from this departure
        t0 = time.time()
        await back.close()
        f = await sup.next_push("alert", kind="customer_left", timeout=6)
        assert f["conv"] == conv and time.time() - t0 >= 1.5 * 0.9, f
        assert len(left(record(s, conv))) == 1 and len(s.tasks()) == 1
    run(body(), timeout=60)


def test_nothing_for_a_closed_conversation_or_a_customer_still_connected(spawn):
    s = Setup(spawn)

    async def body():
        agent = await agent_on(s.n1)
        sup = await sup_on(s.n1)
        # a closed conversation
        c1 = await connect(s.n1, "customer", "json")
        conv1 = await open_waiting(c1)
        await assigned_to(agent, conv1)
        await agent.ok("conv.close", conv=conv1)
        await c1.close()
        # still connected on the other node: one of two connections closes
        c2 = await connect(s.n1, "customer", "json")
        c2b = await connect(s.n2, "customer", "json", sub=c2.user)
        conv2 = await open_waiting(c2)
        await assigned_to(agent, conv2)
        await c2.close()
        await sup.no_push("alert", within=GRACE_MS / 1000 + 1.5, kind="customer_left")
        assert left(record(s, conv1)) == [] and left(record(s, conv2)) == []
        assert s.tasks() == {}
        assert s.worker_metric("kefu_worker_callback_checks_total") == 2
        await c2b.ok("conv.list")
    run(body(), timeout=60)


def test_complaint_or_sensitive_is_called_back_first(spawn):
    """A complaint (classified by a bot rule) and a conversation a rule flagged sensitive get
    priority high; an ordinary one medium."""
    s = Setup(spawn, bots=True)

    async def body():
        agent = await agent_on(s.n1, max_chats=10)
        sup = await sup_on(s.n1)
        convs = {}
        for kind, text in (("complaint", "I want to complain about the delivery"),
                           ("sensitive", "my lawyer will hear about this"),
                           ("plain", "a human please")):
            cust = await connect(s.n2, "customer", "json")
            r = await cust.ok("conv.open")
            conv = r["conv"]
            assert r["state"] == "bot", r
            await send_msg(cust, conv, text)
            await assigned_to(agent, conv)
            convs[conv] = kind
            await cust.close()
        got = {}
        for _ in range(3):
            f = await sup.next_push("alert", kind="customer_left", timeout=6)
            got[convs[f["conv"]]] = f
        assert (got["complaint"]["priority"], got["complaint"]["complaint"]) == ("high", True)
        assert "(complaint)" in got["complaint"]["reason"], got["complaint"]
        assert (got["sensitive"]["priority"], got["sensitive"]["sensitive"]) == ("high", True)
        assert "threatens legal action" in got["sensitive"]["reason"], got["sensitive"]
        assert (got["plain"]["priority"], got["plain"]["complaint"],
                got["plain"]["sensitive"]) == ("medium", False, False)
        tasks = s.tasks()
        for kind, f in got.items():
            assert tasks[f["task"]]["priority"] == f["priority"], (kind, tasks)
            assert left(record(s, f["conv"]))[0]["priority"] == f["priority"]
    run(body(), timeout=90)


def test_task_list_assign_done_permissions_and_errors(spawn):
    s = Setup(spawn, callback_deadline_ms=1500)

    async def body():
        a1 = await agent_on(s.n1)
        a2 = await connect(s.n2, "agent", "json", skills=["other"])
        await a2.ok("agent.status", status="available")
        sup = await sup_on(s.n1)
        cust = await connect(s.n2, "customer", "json")
        conv = await open_waiting(cust)
        await assigned_to(a1, conv)
        await cust.close()
        task = (await sup.next_push("alert", kind="customer_left", timeout=5))["task"]

        # who may do what
        other = await connect(s.n1, "customer", "json")
        await other.err("forbidden", "callback.list")
        await a1.err("forbidden", "callback.assign", task=task, agent=a1.user)
        await a1.err("forbidden", "callback.done", task=task)   # not its assignee (nobody is)
        assert (await a1.ok("callback.list"))["tasks"] == []    # agents: their own only
        # bad requests and unknown things
        await sup.err("bad_request", "callback.list", state="later")
        await sup.err("bad_request", "callback.assign", agent=a2.user)
        await sup.err("bad_request", "callback.assign", task="no such/id", agent=a2.user)
        await sup.err("not_found", "callback.assign", task="nope-1", agent=a2.user)
        await sup.err("not_found", "callback.assign", task=task, agent="agent-nobody")
        await sup.err("not_found", "callback.done", task="nope-1")

        # assign to a2: it hears of it and lists it; a1 does not
        r = await sup.ok("callback.assign", task=task, agent=a2.user)
        assert (r["task"]["state"], r["task"]["assignee"]) == ("assigned", a2.user), r
        p = await a2.next_push("callback.assigned", timeout=5)
        assert p["task"]["id"] == task and p["task"]["conv"] == conv, p
        assert [x["id"] for x in (await a2.ok("callback.list"))["tasks"]] == [task]
        assert (await a1.ok("callback.list"))["tasks"] == []
        assert [x["id"] for x in (await sup.ok("callback.list", state="assigned"))["tasks"]] == [task]
        assert (await sup.ok("callback.list", state="open"))["tasks"] == []
        # past its deadline it is overdue
        await asyncio.sleep(1.6)
        x = (await sup.ok("callback.list"))["tasks"][0]
        assert x["overdue"] is True and x["deadline"] < time.time() * 1000, x

        # a1 may not complete a2's task; a2 may
        await a1.err("forbidden", "callback.done", task=task, note="called")
        r = await a2.ok("callback.done", task=task, note="called back, parcel found")
        assert (r["task"]["state"], r["task"]["done_by"], r["task"]["note"], r["task"]["overdue"]) \
            == ("done", a2.user, "called back, parcel found", False), r
        await a2.err("conflict", "callback.done", task=task)
        await sup.err("conflict", "callback.assign", task=task, agent=a1.user)
        assert (await sup.ok("callback.list"))["tasks"] == []
        done = (await sup.ok("callback.list", state="done"))["tasks"]
        assert [x["id"] for x in done] == [task] and done[0]["note"] == "called back, parcel found"
        assert [x["id"] for x in (await sup.ok("callback.list", state="all"))["tasks"]] == [task]
        assert (await a2.ok("callback.list"))["tasks"] == []     # pending ones only by default
        assert [x["id"] for x in (await a2.ok("callback.list", state="done"))["tasks"]] == [task]

        # every change is in the conversation's record, in order
        await asyncio.sleep(0.2)
        evs = [e for e in record(s, conv) if e["ev"] in
               ("customer_left", "callback_assigned", "callback_done")]
        assert [(e["ev"], e.get("task")) for e in evs] == [
            ("customer_left", task), ("callback_assigned", task), ("callback_done", task)], evs
        assert (evs[1]["by"], evs[1]["agent"]) == (sup.user, a2.user), evs
        assert (evs[2]["by"], evs[2]["note"]) == (a2.user, "called back, parcel found"), evs
        # and a supervisor may complete one too: a second departure, a second task
        cust2 = await connect(s.n2, "customer", "json")
        conv2 = await open_waiting(cust2)
        await assigned_to(a1, conv2)
        await cust2.close()
        task2 = (await sup.next_push("alert", kind="customer_left", timeout=5))["task"]
        r = await sup.ok("callback.done", task=task2, note="")
        assert r["task"]["state"] == "done" and r["task"]["done_by"] == sup.user, r
        m = s.n1.metrics().get("kefu_callback_done_total") + s.n2.metrics().get(
            "kefu_callback_done_total")
        assert m == 2 and s.n1.metrics().get("kefu_callback_assigned_total") == 1
    run(body(), timeout=90)


def test_two_workers_create_each_task_once(spawn):
    s = Setup(spawn, workers=2)

    async def body():
        sup = await sup_on(s.n1)
        custs = [await connect(s.n1 if i % 2 else s.n2, "customer", "json") for i in range(4)]
        convs = [await open_waiting(c) for c in custs]
        for c in custs:
            await c.close()
        got = [await sup.next_push("alert", kind="customer_left", timeout=6) for _ in convs]
        assert sorted(f["conv"] for f in got) == sorted(convs), got
        await sup.no_push("alert", within=1.5, kind="customer_left")
        assert len(s.tasks()) == 4
        for conv in convs:
            assert len(left(record(s, conv))) == 1
        assert s.worker_metric("kefu_worker_callback_tasks_created_total") == 4
        assert rcall(s, "cb", "ZCARD", "kefu:{cb}:firing") == 0
        # a worker that died after creating a task leaves its check in the firing set: when the
        # lease runs out another runs it again, and nothing is doubled
        f = got[0]
        due = f["task"][len(f["conv"]) + 1:]
        rcall(s, "cb", "ZADD", "kefu:{cb}:firing", "0", f"{f['customer']}|{due}")
        deadline = time.time() + 5
        while rcall(s, "cb", "ZCARD", "kefu:{cb}:firing") and time.time() < deadline:
            await asyncio.sleep(0.1)
        assert rcall(s, "cb", "ZCARD", "kefu:{cb}:firing") == 0
        await sup.no_push("alert", within=0.5, kind="customer_left")
        assert len(s.tasks()) == 4 and len(left(record(s, f["conv"]))) == 1
        assert s.worker_metric("kefu_worker_callback_tasks_created_total") == 4
    run(body(), timeout=60)


def test_on_a_redis_cluster(spawn):
    """The conversation, the customer, the stream and the tasks on different masters: the
    check, the task and its lifecycle work across slots."""
    s = Setup(spawn, workers=2, cluster=True)

    async def body():
        agent = await agent_on(s.n1)
        sup = await sup_on(s.n2)
        cust = await connect(s.n2, "customer", "json")
        conv = await open_waiting(cust)
        await assigned_to(agent, conv)
        await cust.close()
        f = await sup.next_push("alert", kind="customer_left", timeout=8)
        assert (f["conv"], f["agent"]) == (conv, agent.user), f
        await agent.next_push("alert", kind="customer_left", timeout=5)
        r = await sup.ok("callback.assign", task=f["task"], agent=agent.user)
        assert r["task"]["state"] == "assigned"
        r = await agent.ok("callback.done", task=f["task"], note="ok")
        assert r["task"]["state"] == "done"
        await asyncio.sleep(0.3)
        assert [e["ev"] for e in record(s, conv) if e["ev"].startswith(("customer_", "callback_"))] \
            == ["customer_left", "callback_assigned", "callback_done"]
    run(body(), timeout=90)
