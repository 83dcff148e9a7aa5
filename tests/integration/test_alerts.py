"""Alerts beyond one conversation's topic (issue 11): trends of customers writing one of the
configured trend_keywords (matched by the gateways on customers' messages, counted per customer
by the worker), and alert.list, the kept alerts that supervisors who were offline read later."""

import asyncio

import kefu_harness as H
from kefu_client import connect, run, send_msg
from worker_helpers import agent_on, open_waiting, rcall, record, wcluster

CONFIG_READ_S = 1.5  # gateways read the published configuration every second


def keyword_events(wc, conv):
    key = H.lifecycle_key(H.part_of(conv))
    entries = rcall(wc, H.EV_TAGS[H.part_of(conv)], "XRANGE", key, "-", "+")
    out = []
    for _id, kv in entries:
        d = dict(zip(kv[::2], kv[1::2]))
        if d.get("ev") == "keyword" and d.get("conv") == conv:
            out.append(d)
    return out


def test_trend_of_customers_writing_a_keyword_alerts(spawn):
    """K = 3 customers writing 退款 within the window raise one alert: not 2 customers, not one
    customer three times, not the agent's answer, not 退 款 written apart."""
    wc = wcluster(spawn, workers=1, trend_threshold=3, trend_window_ms=60000,
                  repeat_threshold=0, trend_keywords="退款, WiFi Down")

    async def body():
        await asyncio.sleep(CONFIG_READ_S)
        sup = await connect(wc.n1, "supervisor", "json")
        await sup.ok("monitor.subscribe")
        agent = await agent_on(wc.n1, max_chats=10)
        a, b, c, d, e = [await connect(wc.n2 if i % 2 else wc.n1, "customer", "json")
                         for i in range(5)]
        ca = await open_waiting(a)
        await agent.next_push("conv.assigned", conv=ca, timeout=5)
        await send_msg(a, ca, "我要退款，谢谢")
        await send_msg(a, ca, "快点退款")               # the same conversation: one event
        ca2 = await open_waiting(a)
        await send_msg(a, ca2, "还是退款的事")           # the same customer: counted once
        f = await connect(wc.n1, "customer", "json")
        cf = await open_waiting(f)
        await agent.next_push("conv.assigned", conv=cf, timeout=5)
        await send_msg(agent, cf, "您是要退款吗？")       # an agent's words do not count
        cb = await open_waiting(b)
        await send_msg(b, cb, "my wifi DOWN again")     # the other keyword
        cc = await open_waiting(c)
        await send_msg(c, cc, "退 款")                   # not the keyword
        await send_msg(c, cc, "申请退款")
        await sup.no_push("alert", within=1.0, kind="trend")  # 2 customers (K-1)
        assert keyword_events(wc, cf) == []
        assert len(keyword_events(wc, ca)) == 1, keyword_events(wc, ca)
        assert keyword_events(wc, cb)[0]["keyword"] == "wifi down"
        cd = await open_waiting(d)
        await send_msg(d, cd, "退款!!")
        al = await sup.next_push("alert", kind="trend", timeout=5)
        assert (al["keyword"], al["count"], al["conv"], al["customer"]) == ("退款", 3, cd, d.user), al
        assert "'退款'" in al["reason"] and "1 min" in al["reason"], al
        assert "topic" not in al, al
        ev = [x for x in record(wc, cd) if x["ev"] == "alert"]
        assert len(ev) == 1 and ev[0]["kind"] == "trend" and ev[0]["by"] == "worker", ev
        # one alert per keyword and window: a fourth customer raises none
        ce = await open_waiting(e)
        await send_msg(e, ce, "退款")
        await sup.no_push("alert", within=1.0, kind="trend")
        assert len(keyword_events(wc, ce)) == 1
    run(body(), timeout=60)


def test_no_keyword_events_without_trend_keywords(spawn):
    wc = wcluster(spawn, workers=1, trend_threshold=1, repeat_threshold=0)

    async def body():
        await asyncio.sleep(CONFIG_READ_S)
        cust = await connect(wc.n1, "customer", "json")
        conv = await open_waiting(cust)
        await send_msg(cust, conv, "退款 refund")
        await asyncio.sleep(0.3)
        assert keyword_events(wc, conv) == []
    run(body(), timeout=60)


COMPLAINT_RULE = '''
rule {
  name = "complaint",
  keywords = { "投诉" },
  priority = "high",
  sensitive = "complaint",
  run = function(c, text) c:handoff("complaint") end,
}
'''


def test_alert_list_shows_alerts_raised_while_the_supervisor_was_offline(spawn, workdir):
    """Trend alerts (threshold 1: each new topic is one) and a bot's sensitive flag raised with no
    supervisor connected are listed later, oldest first, in pages; agents and customers may not
    list them."""
    wc = wcluster(spawn, workers=1, trend_threshold=1, repeat_threshold=0)
    rules = workdir / "alert-rules"
    rules.mkdir()
    (rules / "10_complaint.lua").write_text(COMPLAINT_RULE, encoding="utf-8")
    bot = spawn.gateway(wc.shards, name="wbot", bots_dir=str(rules))

    async def body():
        cust = await connect(wc.n1, "customer", "json")
        convs = [await open_waiting(cust, topic=t) for t in ("billing", "wifi", "refund")]
        bc = await connect(bot, "customer", "json")
        r = await bc.ok("conv.open")
        assert r["state"] == "bot", r
        await send_msg(bc, r["conv"], "我要投诉你们")
        await bc.next_push("conv.state", conv=r["conv"], state="waiting", timeout=5)

        sup = await connect(wc.n2, "supervisor", "json")

        async def listed(**kw):
            return await sup.ok("alert.list", **kw)

        for _ in range(50):
            page = await listed()
            if len(page["alerts"]) >= 4:
                break
            await asyncio.sleep(0.1)
        got = page["alerts"]
        assert [a["kind"] for a in got] == ["trend"] * 3 + ["sensitive"], got
        assert [a["conv"] for a in got[:3]] == convs, got
        assert [a["topic"] for a in got[:3]] == ["billing", "wifi", "refund"], got
        s = got[3]
        assert (s["conv"], s["reason"], s["priority"], s["customer"]) == \
            (r["conv"], "complaint", "high", bc.user), s
        assert page["more"] is False
        assert all("type" not in a for a in got), got
        ids = [a["id"] for a in got]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
        assert all(a["ts"] == int(a["id"].split("-")[0]) for a in got)
        # pages: limit, then on from the last id seen
        p1 = await listed(limit=2)
        assert [a["id"] for a in p1["alerts"]] == ids[:2] and p1["more"] is True, p1
        p2 = await listed(limit=2, since=p1["alerts"][-1]["id"])
        assert [a["id"] for a in p2["alerts"]] == ids[2:] and p2["more"] is False, p2
        # since as a time: from it on
        p3 = await listed(since=got[1]["ts"])
        assert [a["id"] for a in p3["alerts"]][0] in ids[:2]
        assert [a["id"] for a in p3["alerts"]][-2:] == ids[2:], p3
        later = await listed(since=got[-1]["ts"] + 60000)
        assert later["alerts"] == [] and later["more"] is False
        # bad fields
        await sup.err("bad_request", "alert.list", since="yesterday")
        await sup.err("bad_request", "alert.list", since=-1)
        await sup.err("bad_request", "alert.list", limit=0)
        await sup.err("bad_request", "alert.list", limit=501)
        # who may list
        adm = await connect(wc.n1, "admin", "json")
        assert len((await adm.ok("alert.list"))["alerts"]) == 4
        agent = await connect(wc.n1, "agent", "json")
        await agent.err("forbidden", "alert.list")
        await cust.err("forbidden", "alert.list")
    run(body(), timeout=60)
