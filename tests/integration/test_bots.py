"""Bots in the gateway (issue 5): FAQ answers over the wire, handoff into the queue, off-hours,
holiday and make-up-day replies under a simulated clock, per-conversation state across a
reconnect to another node, sensitive alerts to supervisors, finishing without a human, queue
waits and no_agent, sandbox escapes falling back to a human, hot reload good and bad."""

import asyncio
import re
import shutil
import signal
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import kefu_harness as H
from kefu_client import PROTOS, connect, new_id, run, send_msg

RETAIL = H.REPO / "lua" / "bots" / "retail"
CST = timezone(timedelta(hours=8))
BOT_NAME = "小智 Kefu Assistant"


def offset_to(y, mo, d, hh, mm):
    """bot_clock_offset_s that puts the bots' clock at this China-time moment now."""
    return int(datetime(y, mo, d, hh, mm, tzinfo=CST).timestamp() - time.time())


def rules_dir(tmp, files=None, copy_retail=False):
    d = Path(tmp) / f"rules-{uuid.uuid4().hex[:6]}"
    if copy_retail:
        shutil.copytree(RETAIL, d, ignore=shutil.ignore_patterns("tests"))
    else:
        d.mkdir(parents=True)
    for name, text in (files or {}).items():
        (d / name).write_text(text, encoding="utf-8")
    return d


def bot_gateway(spawn, cluster, rules, name="bot", offset=None, **opts):
    if offset is None:
        offset = offset_to(2026, 11, 23, 10, 0)     # a Monday morning: open
    return spawn.gateway(cluster.shards, name=name, bots_dir=str(rules), bot_clock_offset_s=offset,
                         **opts)


@pytest.fixture(scope="module")
def bots(cluster, workdir, request):
    """Two bot nodes b1, b2 (retail rules, Monday 10:00 China time) on the session shards."""
    if H.EXTERNAL:
        pytest.skip("needs process control (KEFU_TEST_GATEWAY is set)")
    from conftest import Spawner
    sp = Spawner(workdir / "bots-module")
    rules = rules_dir(workdir, copy_retail=True)
    nodes = [bot_gateway(sp, cluster, rules, name=f"b{i}") for i in (1, 2)]
    yield nodes
    sp.teardown()


OPENED = []     # conversations opened by the current test, closed afterwards


@pytest.fixture(autouse=True)
def _retire_conversations(cluster):
    """Closes every conversation a test opened (through an admin), so none stays in a shared
    queue to disturb the queue-order checks of other test modules."""
    yield
    if not OPENED:
        return
    convs = list(OPENED)
    OPENED.clear()

    async def close_all():
        admin = await connect(cluster.n1, "admin", "json")
        for conv in convs:
            await admin.request("conv.close", conv=conv)
    run(close_all())


def is_bot(f, conv):
    return f.get("conv") == conv and isinstance(f.get("from"), dict) and f["from"].get("role") == "bot"


async def bot_reply(c, conv, timeout=5.0):
    f = await c.next_push("msg", timeout=timeout, match=lambda f: f.get("type") == "msg" and is_bot(f, conv))
    assert f["from"]["id"] == "bot", f
    assert isinstance(f["id"], str) and isinstance(f["ts"], int), f
    return f


async def open_bot(cust, **fields):
    r = await cust.ok("conv.open", **fields)
    OPENED.append(r["conv"])
    assert r.get("state") == "bot", f"conv.open with bots -> {r}"
    return r["conv"], r


async def no_bot_reply(c, conv, within=0.6):
    await asyncio.sleep(within)
    got = [f for f in c.pushes("msg") if is_bot(f, conv)]
    assert not got, f"unexpected bot replies {got}"


def meta_field(cluster, conv, field):
    shard = cluster.shards[H.conv_shard(conv, len(cluster.shards))]
    raw = shard.command("HGET", f"kefu:{{c:{conv}}}:meta", field)
    m = re.match(rb"^\$(\d+)\r\n", raw)
    return raw[m.end():m.end() + int(m.group(1))].decode() if m else None


def wait_metric(g, name, at_least, timeout=8.0):
    return H.wait_until(lambda: g.metrics().get(name) >= at_least, timeout=timeout,
                        what=f"{name} >= {at_least}")


# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("proto", PROTOS)
def test_greeting_and_faq_over_the_wire(bots, proto):
    async def body():
        cust = await connect(bots[0], "customer", proto)
        agent = await connect(bots[1], "agent", "json")
        conv, r = await open_bot(cust, topic="退货")
        st = await cust.ok("conv.list")
        assert [x["state"] for x in st["convs"] if x["conv"] == conv] == ["bot"]
        g = await bot_reply(cust, conv)
        assert "欢迎光临" in g["text"] and g["from"]["name"] == BOT_NAME, g
        await send_msg(cust, conv, "请问怎么退货呀？")
        a = await bot_reply(cust, conv)
        assert "7天无理由退货" in a["text"], a
        await send_msg(cust, conv, "Where is my parcel?")
        a = await bot_reply(cust, conv)
        assert "Track your parcel" in a["text"], a
        # the bot's messages are in the record like any message
        h = await cust.ok("history", conv=conv)
        roles = [(m["from"]["role"], m["text"][:4]) for m in h["msgs"]]
        assert [r for r, _ in roles] == ["bot", "customer", "bot", "customer", "bot"], roles
        # not in the human queue while the bot has it
        q = await agent.ok("queue.list", limit=1000)
        assert conv not in [e["conv"] for e in q["convs"]]
    run(body())


def test_handoff_into_the_queue(bots, cluster):
    async def body():
        cust = await connect(bots[0], "customer", "json")
        agent = await connect(bots[1], "agent", "json")
        conv, _ = await open_bot(cust)
        await bot_reply(cust, conv)
        before = bots[0].metrics().get("kefu_bot_handoffs_total")
        await send_msg(cust, conv, "转人工")
        a = await bot_reply(cust, conv)
        assert "转接人工客服" in a["text"], a
        st = await cust.next_push("conv.state", conv=conv, state="waiting")
        assert st.get("ticket"), st
        assert meta_field(cluster, conv, "state") == "waiting"
        assert meta_field(cluster, conv, "handoff") == "customer asked for a human"
        q = await agent.ok("queue.list", limit=1000)
        assert conv in [e["conv"] for e in q["convs"]], "handed-off conversation not queued"
        acc = await agent.request("conv.accept", conv=conv)
        assert acc["type"] == "ok" or acc.get("code") == "conflict", acc   # the worker may win
        # from now on the customer talks to humans only (a no_agent notice may have come first)
        await asyncio.sleep(0.3)
        cust.frames.clear()
        await send_msg(cust, conv, "运费多少")
        await no_bot_reply(cust, conv)
        assert bots[0].metrics().get("kefu_bot_handoffs_total") >= before + 1
    run(body())


def test_state_survives_a_reconnect_to_another_node(bots):
    """The misses counter lives in the bot state in Redis: the first miss is answered on b1, the
    second (after reconnecting to b2) hands over."""
    async def body():
        sub = new_id("cust")
        cust = await connect(bots[0], "customer", "json", sub=sub)
        conv, _ = await open_bot(cust)
        await bot_reply(cust, conv)
        await send_msg(cust, conv, "我的订单号 1234567890 还没到")
        a = await bot_reply(cust, conv)
        assert "1234567890" in a["text"], a
        await send_msg(cust, conv, "这个东西是什么颜色的")
        a = await bot_reply(cust, conv)
        assert "还没学会" in a["text"], a
        await cust.close()
        cust2 = await connect(bots[1], "customer", "json", sub=sub)
        assert cust2.node != cust.node or True
        await send_msg(cust2, conv, "还是不懂")
        a = await bot_reply(cust2, conv)
        assert "转接人工" in a["text"], f"second miss should hand over: {a}"
        await cust2.next_push("conv.state", conv=conv, state="waiting")
    run(body())


def test_complaint_raises_priority_and_alerts_supervisors(bots, cluster):
    async def body():
        sup = await connect(bots[1], "supervisor", "json")
        staff = cluster.shards[H.key_shard("staff", len(cluster.shards))]
        H.wait_until(lambda: not staff.command("ZSCORE", "kefu:{staff}:supervisors", sup.user)
                     .startswith(b"$-1"), timeout=6, what="the supervisor registered for alerts")
        cust = await connect(bots[0], "customer", "json")
        conv, _ = await open_bot(cust)
        await bot_reply(cust, conv)
        await send_msg(cust, conv, "你们太差劲了，我要投诉！")
        a = await bot_reply(cust, conv)
        assert "非常抱歉" in a["text"], a
        await cust.next_push("conv.state", conv=conv, state="waiting")
        al = await sup.next_push("alert", conv=conv, timeout=5)
        assert al["kind"] == "sensitive" and al["reason"] == "complaint", al
        assert al["priority"] == "high", al
        assert meta_field(cluster, conv, "priority") == "high"
        assert meta_field(cluster, conv, "category") == "complaint"
        assert meta_field(cluster, conv, "tags") == "complaint"
    run(body())


def test_joined_supervisor_sees_the_bot(bots):
    async def body():
        cust = await connect(bots[0], "customer", "json")
        sup = await connect(bots[1], "supervisor", "msgpack")
        conv, _ = await open_bot(cust)
        await bot_reply(cust, conv)
        j = await sup.ok("conv.join", conv=conv)
        assert j["state"] == "bot", j
        await send_msg(cust, conv, "发票怎么开")
        a = await bot_reply(cust, conv)
        b = await bot_reply(sup, conv)
        assert a["id"] == b["id"] and "电子发票" in b["text"], (a, b)
    run(body())


def test_goodbye_finishes_without_a_human(bots):
    async def body():
        cust = await connect(bots[0], "customer", "json")
        conv, _ = await open_bot(cust)
        await bot_reply(cust, conv)
        await send_msg(cust, conv, "thanks, bye")
        a = await bot_reply(cust, conv)
        assert "Thank you" in a["text"], a
        st = await cust.next_push("conv.state", conv=conv, state="closed")
        assert st.get("closed_by") == "bot" and st.get("resolution") == "resolved", st
        lst = await cust.ok("conv.list")
        assert conv not in [x["conv"] for x in lst["convs"]]
        await cust.err("conflict", "msg.send", conv=conv, text="hello?", cid=new_id("c"))
    run(body())


# ---- the simulated clock: off hours, holidays, make-up workdays ----

def test_off_hours_reply_under_a_simulated_clock(spawn, cluster, workdir):
    rules = rules_dir(workdir, copy_retail=True)
    g = bot_gateway(spawn, cluster, rules, offset=offset_to(2026, 11, 28, 22, 30))   # Sat night

    async def body():
        cust = await connect(g, "customer", "json")
        conv, _ = await open_bot(cust)
        n = await bot_reply(cust, conv)
        assert "非工作时间" in n["text"] and "2026-11-29 10:00" in n["text"], n
        await no_bot_reply(cust, conv, within=0.3)          # no greeting besides
        await send_msg(cust, conv, "运费多少")
        a = await bot_reply(cust, conv)
        assert "包邮" in a["text"], a                         # the FAQ still answers
        await send_msg(cust, conv, "人工")
        a = await bot_reply(cust, conv)
        assert "人工客服已下班" in a["text"], a
        await cust.next_push("conv.state", conv=conv, state="waiting")
    run(body())


@pytest.mark.parametrize("when,expect,absent", [
    ((2026, 10, 2, 11, 0), ["国庆节", "2026-10-08 09:00"], "欢迎光临"),    # holiday
    ((2026, 10, 10, 20, 0), ["欢迎光临"], "非工作时间"),                   # make-up Saturday
    ((2026, 10, 17, 20, 0), ["非工作时间"], "欢迎光临"),                   # ordinary Saturday
])
def test_holiday_and_makeup_day(spawn, cluster, workdir, when, expect, absent):
    rules = rules_dir(workdir, copy_retail=True)
    g = bot_gateway(spawn, cluster, rules, offset=offset_to(*when))

    async def body():
        cust = await connect(g, "customer", "json")
        conv, _ = await open_bot(cust)
        f = await bot_reply(cust, conv)
        for e in expect:
            assert e in f["text"], f
        assert absent not in f["text"], f
    run(body())


# ---- waiting: queue_wait and no_agent ----

def test_queue_wait_and_no_agent(spawn, cluster, workdir):
    group = "bt-" + uuid.uuid4().hex[:8]         # a group no agent is in
    rules = rules_dir(workdir, {"10_rules.lua": f"""
rule {{ keywords = "human", reply = "transferring", handoff = {{ group = "{group}" }} }}
on("queue_wait", {{ after = 1 }}, "still waiting after {{waited}}s")
on("queue_wait", {{ after = 2 }}, function(c) c:set_priority("high") end)
on("no_agent", "nobody is free in {{group}}")
on("message", "?")
"""})
    g = bot_gateway(spawn, cluster, rules)

    async def body():
        cust = await connect(g, "customer", "json")
        agent = await connect(g, "agent", "json")
        conv, _ = await open_bot(cust)
        await send_msg(cust, conv, "a human please")
        assert (await bot_reply(cust, conv))["text"] == "transferring"
        await cust.next_push("conv.state", conv=conv, state="waiting")
        texts = [(await bot_reply(cust, conv, timeout=6))["text"] for _ in range(2)]
        assert sorted(texts) == sorted([f"nobody is free in {group}", "still waiting after 1s"]), texts
        H.wait_until(lambda: meta_field(cluster, conv, "priority") == "high", timeout=6,
                     what="the queue_wait rule raising the priority")
        assert meta_field(cluster, conv, "group") == group
        # accepted: the timers stop
        q = await agent.request("conv.accept", conv=conv)
        assert q["type"] == "ok", q
    run(body())


# ---- the sandbox over the wire: every escape ends in a handoff, counted and logged ----

SANDBOX = """
bot { name = "Sandbox" }
on("opened", "hi")
rule { keywords = "loop", run = function() while true do end end }
rule { keywords = "bomb", run = function() local s = string.rep("x", 1 << 30) end }
rule { keywords = "io", run = function() io.open("/etc/passwd") end }
rule { keywords = "exec", run = function() os.execute("touch /tmp/kefu-bot-pwned") end }
rule { keywords = "req", run = function() require("os") end }
rule { keywords = "boom", run = function() error("boom") end }
on("message", function(c, text) c:reply("echo " .. text) end)
"""


def test_sandbox_escapes_fall_back_to_a_human(spawn, cluster, workdir):
    rules = rules_dir(workdir, {"10_rules.lua": SANDBOX})
    g = bot_gateway(spawn, cluster, rules, bot_memory_kb=8192, bot_instruction_budget=100000)

    async def body():
        cust = await connect(g, "customer", "json")
        for word in ("loop", "bomb", "io", "exec", "req", "boom"):
            conv, _ = await open_bot(cust)
            assert (await bot_reply(cust, conv))["text"] == "hi"
            await send_msg(cust, conv, word)
            st = await cust.next_push("conv.state", conv=conv, state="waiting")
            assert st, word
            await no_bot_reply(cust, conv, within=0.1)
            assert meta_field(cluster, conv, "handoff") == "bot_error", word
        # the engine still works
        conv, _ = await open_bot(cust)
        await bot_reply(cust, conv)
        await send_msg(cust, conv, "hello")
        assert (await bot_reply(cust, conv))["text"] == "echo hello"
    run(body())
    m = g.metrics()
    assert m.get("kefu_bot_errors_total") == 6
    assert m.get("kefu_bot_budget_kills_total") == 1
    assert m.get("kefu_bot_memory_kills_total") == 1
    assert m.get("kefu_bot_handoffs_total") == 6
    log = g.proc.log_text()
    assert "10_rules.lua:4: instruction budget" in log and "10_rules.lua:5: memory cap" in log
    assert "io.open is not available" in log and "os.execute is not available" in log
    assert "require is not available" in log and "10_rules.lua:9: boom" in log
    assert not Path("/tmp/kefu-bot-pwned").exists()


def test_rules_that_do_not_load_send_everyone_to_humans(spawn, cluster, workdir):
    rules = rules_dir(workdir, {"10_rules.lua": "rule { keywords = 'x' reply = 'y' }"})
    g = bot_gateway(spawn, cluster, rules)

    async def body():
        cust = await connect(g, "customer", "json")
        conv, _ = await open_bot(cust)
        await cust.next_push("conv.state", conv=conv, state="waiting")
        await no_bot_reply(cust, conv, within=0.2)
    run(body())
    assert g.metrics().get("kefu_bot_rules_loaded") == 0
    assert "not loaded: 10_rules.lua:1:" in g.proc.log_text()


# ---- hot reload ----

def test_hot_reload_good_and_bad(spawn, cluster, workdir):
    rules = rules_dir(workdir, {"10_rules.lua": 'on("message", "v1")'})
    g = bot_gateway(spawn, cluster, rules)

    async def body():
        cust = await connect(g, "customer", "json")
        conv, _ = await open_bot(cust)
        await send_msg(cust, conv, "a")
        assert (await bot_reply(cust, conv))["text"] == "v1"
        (rules / "10_rules.lua").write_text('on("message", "v2")')
        g.proc.send_signal(signal.SIGHUP)
        wait_metric(g, "kefu_bot_reloads_total", 2)
        await send_msg(cust, conv, "b")
        assert (await bot_reply(cust, conv))["text"] == "v2"
        # a broken set: the previous one keeps running, and the log says why
        (rules / "10_rules.lua").write_text('on("message", "v3"')
        (rules / "20_more.lua").write_text('rule { keywords = "x", reply = "y" }')
        g.proc.send_signal(signal.SIGHUP)
        wait_metric(g, "kefu_bot_reload_failures_total", 1)
        await send_msg(cust, conv, "c")
        assert (await bot_reply(cust, conv))["text"] == "v2"
        assert re.search(r"bot rules in \S+ not reloaded: 10_rules\.lua:1: .*; the previous rules keep running",
                         g.proc.log_text())
        assert await cust.ping()        # no connection was dropped
    run(body())


def test_reload_on_file_change(spawn, cluster, workdir):
    rules = rules_dir(workdir, {"10_rules.lua": 'on("message", "before")'})
    g = bot_gateway(spawn, cluster, rules, bot_watch="yes")

    async def body():
        cust = await connect(g, "customer", "json")
        conv, _ = await open_bot(cust)
        await send_msg(cust, conv, "a")
        assert (await bot_reply(cust, conv))["text"] == "before"
        (rules / "10_rules.lua").write_text('on("message", "after the change")')
        wait_metric(g, "kefu_bot_reloads_total", 2, timeout=6)
        await send_msg(cust, conv, "b")
        assert (await bot_reply(cust, conv))["text"] == "after the change"
    run(body())


def test_bots_off_by_default(cluster):
    """Without bots_dir nothing changes: conv.open answers waiting (the rest of the suite relies
    on it); the bot metrics exist and stay at zero."""
    async def body():
        cust = await connect(cluster.n1, "customer", "json")
        r = await cust.ok("conv.open")
        OPENED.append(r["conv"])
        assert r["state"] == "waiting"
    run(body())
    if not H.EXTERNAL:
        m = cluster.n1.metrics()
        assert m.has("kefu_bot_runs_total") and m.get("kefu_bot_runs_total") == 0


def test_customer_ends_the_chat_with_the_bot(bots, cluster):
    """A customer may end a conversation the bot still holds: closed as `abandoned` (no agent
    had it), no survey, and the bot does not answer in it any more."""
    async def body():
        cust = await connect(bots[0], "customer", "json")
        conv, _ = await open_bot(cust)
        await bot_reply(cust, conv)
        r = await cust.ok("conv.close", conv=conv)
        assert r["state"] == "closed", r
        assert meta_field(cluster, conv, "state") == "closed"
        assert meta_field(cluster, conv, "resolution") == "abandoned"
        assert meta_field(cluster, conv, "closed_by") == cust.user
        await cust.no_push("survey.request", within=0.5, conv=conv)
        await cust.err("conflict", "msg.send", conv=conv, text="还在吗", cid=new_id("c"))
        await no_bot_reply(cust, conv)
        await cust.err("conflict", "conv.rate", conv=conv, stars=1)
    run(body())
