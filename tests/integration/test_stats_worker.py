"""Statistics kept by the worker from lifecycle events (issue 11; worker/stats.c): a scripted
day of conversations, then every counter of the day compared with what the test computes by
hand from the conversations' own records (meta), in the worker's time zone."""

import datetime
import os
import zoneinfo

import kefu_harness as H
from kefu_client import connect, run, send_msg
from worker_helpers import agent_on, meta, open_waiting, rcall, wcluster

TZ = "Asia/Shanghai"


def local(ms):
    return datetime.datetime.fromtimestamp(int(ms) / 1000, zoneinfo.ZoneInfo(TZ))


def day_key(ms):
    return local(ms).strftime("%Y%m%d")


def counters(wc, day):
    flat = rcall(wc, "st:" + day, "HGETALL", f"kefu:{{st:{day}}}:n")
    return {k: int(v) for k, v in zip(flat[::2], flat[1::2])}


def expected(metas, fcr_taken_back):
    """The model of docs/architecture.md ("Statistics"), computed from the metas."""
    want = {}

    def add(metric, dim, value, v=1):
        if dim != "all" and not value:
            return
        k = f"{metric}|{dim}|{value}"
        want[k] = want.get(k, 0) + v

    def add4(metric, m, v=1):
        add(metric, "all", "", v)
        add(metric, "channel", m["channel"], v)
        add(metric, "group", m["group"], v)
        add(metric, "agent", m.get("agent", ""), v)

    for conv, m in metas.items():
        add("opened", "all", "")
        add("opened", "channel", m["channel"])
        add("opened", "group", m["group"])
        add("opened", "hour", local(m["created"]).strftime("%H"))
        add4("closed", m)
        add("closed", "hour", local(m["closed_at"]).strftime("%H"))
        if m["resolution"] == "resolved":
            add4("resolved", m)
            add4("fcr", m, 0 if conv in fcr_taken_back else 1)
        if m["resolution"] == "abandoned":
            for dim in ("all", "channel", "group"):
                add("abandoned", dim, "" if dim == "all" else m[dim])
        if m.get("first_response"):
            start = int(m["queued_us"]) // 1000 if int(m.get("queued_us", "0")) > 0 \
                else int(m["created"])
            add4("fr_n", m)
            add4("fr_ms", m, max(0, int(m["first_response"].split("-")[0]) - start))
        if m.get("agent") and m.get("assigned_at"):
            add4("ht_n", m)
            add4("ht_ms", m, max(0, int(m["closed_at"]) - int(m["assigned_at"])))
            add4("offered", m)
        met = 1 if m.get("breaches", "0") == "0" else 0
        add("sla_n", "all", "")
        add("sla_n", "priority", m["priority"])
        add("sla_met", "all", "", met)
        add("sla_met", "priority", m["priority"], met)
        add("count", "category", m.get("category", ""))
        add("count", "topic", m.get("topic", ""))
        if m.get("rating"):
            add4("rated", m)
            add4("stars_sum", m, int(m["rating"]))
            add4("stars_" + m["rating"], m)
    return {k: v for k, v in want.items() if v or k.startswith("fcr|") or k.startswith("sla_met|")}


def test_a_scripted_day_counts_as_computed_by_hand(spawn):
    wc = wcluster(spawn, workers=2, stats_timezone=TZ, fcr_days=7,
                  routes="channel:app=vip/high,channel:mail=backoffice/low,*=default",
                  sla_first_response_ms="app=300,*=60000", sla_alert_after_ms=0,
                  repeat_threshold=0, trend_threshold=0)

    async def body():
        a1 = await agent_on(wc.n1, max_chats=5)
        a2 = await agent_on(wc.n2, skills=("vip",), max_chats=5)
        c1 = await connect(wc.n2, "customer", "json")
        c2 = await connect(wc.n1, "customer", "msgpack", channel="app")
        c3 = await connect(wc.n2, "customer", "json", channel="mail")

        # 1: web, resolved at once, rated 5; its customer comes back on the same topic (4)
        k1 = await open_waiting(c1, topic="refund")
        await a1.next_push("conv.assigned", conv=k1, timeout=5)
        await send_msg(c1, k1, "我的退款还没到")
        await send_msg(a1, k1, "您好，我来查一下")
        await a1.ok("conv.close", conv=k1, category="consultation")
        await c1.ok("conv.rate", conv=k1, stars=5)
        # 2: app -> group vip, priority high; the agent answers after the 300 ms first-response
        # deadline (a breach), closes unresolved, rated 2
        k2 = await open_waiting(c2, topic="login")
        await a2.next_push("conv.assigned", conv=k2, timeout=5)
        await a2.next_push("sla.warning", conv=k2, timeout=5)
        await send_msg(a2, k2, "sorry for the wait")
        await a2.ok("conv.close", conv=k2, resolution="unresolved", category="fault")
        await c2.ok("conv.rate", conv=k2, stars=2)
        # 3: mail goes to a group nobody staffs: the customer leaves the queue
        k3 = await open_waiting(c3)
        await c3.ok("conv.close", conv=k3)
        # 4: customer 1 again on "refund": conversation 1 was not resolved at first contact
        k4 = await open_waiting(c1, topic="refund")
        await a1.next_push("conv.assigned", conv=k4, timeout=5)
        await send_msg(a1, k4, "还是退款的问题吗？")
        await a1.ok("conv.close", conv=k4, category="consultation")

        convs = [k1, k2, k3, k4]
        metas = {k: meta(wc, k) for k in convs}
        assert int(metas[k2].get("breaches", "0")) >= 1, metas[k2]
        assert metas[k2]["group"] == "vip" and metas[k2]["priority"] == "high", metas[k2]
        assert metas[k3]["resolution"] == "abandoned", metas[k3]
        days = {day_key(m["created"]) for m in metas.values()} | \
            {day_key(m["closed_at"]) for m in metas.values()}
        assert len(days) == 1, f"the test ran across midnight in {TZ}: {days}"
        day = days.pop()
        want = expected(metas, fcr_taken_back={k1})

        def settled():
            got = counters(wc, day)
            return got if all(got.get(k) == v for k, v in want.items()) else None
        try:
            got = H.wait_until(settled, timeout=10, what="the day's statistics")
        except AssertionError:
            got = counters(wc, day)
            diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
            raise AssertionError(f"counters differ (got, want): {diff}")
        extra = {k: v for k, v in got.items() if k not in want and v}
        assert not extra, f"counted beyond the model: {extra}"
        # the hand computation is not vacuous
        assert got["fcr|all|"] == 1 and got["resolved|all|"] == 2 and got["opened|all|"] == 4
        assert got["sla_met|priority|high"] == 0 and got["sla_n|priority|high"] == 1

        # first-response times for percentiles, the day's closed conversations and agents
        fr = rcall(wc, "st:" + day, "ZRANGE", f"kefu:{{st:{day}}}:fr:all|", "0", "-1",
                   "WITHSCORES")
        assert sorted(fr[::2]) == sorted([k1, k2, k4]), fr
        closed = rcall(wc, "st:" + day, "ZRANGE", f"kefu:{{st:{day}}}:closed", "0", "-1")
        assert sorted(closed) == sorted(convs)
        agents = rcall(wc, "st:" + day, "HGETALL", f"kefu:{{st:{day}}}:agent")
        assert dict(zip(agents[::2], agents[1::2])) == {
            k1: a1.user, k2: a2.user, k3: "", k4: a1.user}
        # the day's keys expire at the local midnight that ends the day + stats_days (400)
        at = rcall(wc, "st:" + day, "EXPIRETIME", f"kefu:{{st:{day}}}:n")
        end = datetime.datetime.strptime(day, "%Y%m%d").replace(tzinfo=zoneinfo.ZoneInfo(TZ))
        assert at == int((end + datetime.timedelta(days=401)).timestamp()), (at, day)

        # /metrics: the two workers together counted each conversation once
        ms = [H.Metrics(w.http("/metrics")[1]) for w in wc.workers]
        tot = lambda name, **lb: sum(m.get(name, **lb) for m in ms)  # noqa: E731
        assert tot("kefu_worker_conversations_total", event="opened") == 4
        assert tot("kefu_worker_conversations_total", event="closed", channel="web",
                   group="default") == 2
        assert tot("kefu_worker_conversations_total", event="abandoned") == 1
        assert tot("kefu_worker_ratings_total", stars="2") == 1
        assert tot("kefu_worker_sla_conversations_total", priority="high", met="no") == 1
        assert tot("kefu_worker_first_response_seconds_count", channel="web") == 2
        assert all(not m.bad_lines for m in ms), [m.bad_lines for m in ms]
    run(body(), timeout=90)


def test_a_share_applies_once(spawn):
    """stats_apply.lua: the same "<kind>|<conv>" a second time (an event handled again after
    its worker died) changes nothing; a malformed call changes nothing either."""
    r = spawn.redis()
    src = open(os.path.join(os.path.dirname(__file__), "..", "..", "lua", "redis",
                            "stats_apply.lua")).read()
    keys = ["kefu:{st:20261129}:seen", "kefu:{st:20261129}:n", "kefu:{st:20261129}:closed"]
    args = ["closed|k1", "1900000000", "i", "2", "closed|all|", "1", "z", "3", "k1", "1234"]
    assert r.call("EVAL", src, "3", *keys, *args) == 1
    assert r.call("EVAL", src, "3", *keys, *args) == 0
    assert r.call("HGET", keys[1], "closed|all|") == "1"
    assert r.call("ZSCORE", keys[2], "k1") == "1234"
    bad = ["closed|k2", "1900000000", "i", "2", "closed|all|", "1", "x", "2", "a", "1"]
    try:
        r.call("EVAL", src, "3", *keys, *bad)
        raise AssertionError("a bad operation was accepted")
    except Exception as e:  # noqa: BLE001 - the harness raises on error replies
        assert "bad operation" in str(e), e
    assert r.call("HGET", keys[1], "closed|all|") == "1"
    assert r.call("SISMEMBER", keys[0], "closed|k2") == 0
    assert r.call("TTL", keys[1]) > 0


def test_an_unknown_time_zone_stops_the_worker_at_start(spawn):
    r = spawn.redis()
    w = spawn.worker([r], name="badtz", ready=False, stats_timezone="Mars/Olympus")
    assert w.proc.wait(10) == 2
    w.proc.expect_exit = True
    assert "stats_timezone: unknown time zone 'Mars/Olympus'" in w.proc.log_text()
