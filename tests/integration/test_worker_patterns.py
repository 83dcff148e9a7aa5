"""Patterns across conversations that supervisors must hear of (DOMAIN.md, sensitive issues):
one customer's conversations about the same category or topic ending unsatisfied (closed
unresolved, or rated 2 or less) repeat_threshold times, and trend_threshold customers opening
conversations on the same topic; each raises one `alert` per window to monitoring supervisors
and enters the conversation's record."""

import asyncio

from kefu_client import connect, run
from worker_helpers import agent_on, open_waiting, record, wcluster


def test_repeat_unsatisfied_conversations_alert_once(spawn):
    wc = wcluster(spawn, workers=1, repeat_threshold=3, trend_threshold=0)

    async def body():
        agent = await agent_on(wc.n1, max_chats=10)
        sup = await connect(wc.n2, "supervisor", "json")
        await sup.ok("monitor.subscribe")
        cust = await connect(wc.n2, "customer", "json")

        async def conversation(topic, close, stars=None):
            conv = await open_waiting(cust, topic=topic)
            await agent.next_push("conv.assigned", conv=conv, timeout=5)
            await agent.ok("conv.close", conv=conv, **close)
            if stars:
                await cust.ok("conv.rate", conv=conv, stars=stars)
            return conv

        # satisfied: resolved and rated well; does not count
        await conversation("Refund not received", {}, stars=5)
        unsat = [await conversation("refund  NOT received ", {"resolution": "unresolved",
                                                               "category": "complaint"}),
                 await conversation("Refund not received", {}, stars=1)]
        await sup.no_push("alert", within=1.0, kind="repeat")
        unsat.append(await conversation("refund not received", {"resolution": "unresolved"}))
        a = await sup.next_push("alert", kind="repeat", timeout=5)
        assert (a["topic"], a["count"], a["customer"]) == ("refund not received", 3, cust.user), a
        assert sorted(a["convs"]) == sorted(unsat) and a["conv"] == unsat[-1], a
        assert "refund not received" in a["reason"], a
        # the category was unsatisfying only once (complaint): no alert for it
        assert not [f for f in sup.pushes("alert") if f.get("category")], sup.pushes("alert")
        ev = [e for e in record(wc, unsat[-1]) if e["ev"] == "alert"]
        assert len(ev) == 1 and ev[0]["kind"] == "repeat" and ev[0]["by"] == "worker", ev
        # one alert per window: a fourth does not raise another
        await conversation("refund not received", {"resolution": "unresolved"})
        await sup.no_push("alert", within=1.0, kind="repeat")
        st, text, _ = wc.workers[0].http("/metrics")
        assert st == 200 and "\nkefu_worker_pattern_alerts_total 1\n" in text, text
    run(body(), timeout=60)


def test_trend_of_customers_on_one_topic_alerts(spawn):
    wc = wcluster(spawn, workers=1, trend_threshold=3, trend_window_ms=60000,
                  repeat_threshold=0)

    async def body():
        sup = await connect(wc.n1, "supervisor", "json")
        await sup.ok("monitor.subscribe")
        custs = [await connect(wc.n2, "customer", "json") for _ in range(4)]
        await open_waiting(custs[0], topic="WiFi down")
        await open_waiting(custs[0], topic="wifi down")      # the same customer counts once
        await open_waiting(custs[1], topic="Wifi   DOWN")
        await open_waiting(custs[2], topic="password reset")  # another topic
        await sup.no_push("alert", within=1.0, kind="trend")
        conv = await open_waiting(custs[3], topic=" wifi down")
        a = await sup.next_push("alert", kind="trend", timeout=5)
        assert (a["topic"], a["count"], a["conv"]) == ("wifi down", 3, conv), a
        assert any(e["ev"] == "alert" and e["kind"] == "trend" for e in record(wc, conv))
    run(body(), timeout=60)


def test_trend_compares_whole_topics_and_counts_customers_back_after_the_window(spawn):
    """Chinese topics count as themselves (退款 is not 退货), and a customer whose earlier
    conversation left the window counts again when they come back, while other customers keep
    the topic's count alive."""
    wc = wcluster(spawn, workers=1, trend_threshold=3, trend_window_ms=1500,
                  repeat_threshold=0)

    async def body():
        sup = await connect(wc.n1, "supervisor", "json")
        await sup.ok("monitor.subscribe")
        a, b, c, d = [await connect(wc.n2, "customer", "json") for _ in range(4)]
        await open_waiting(a, topic="退款")
        await open_waiting(b, topic="退货")   # another topic: 退货 is not 退款
        await asyncio.sleep(0.9)
        await open_waiting(d, topic="退款")   # 2 customers: no alert yet
        await sup.no_push("alert", within=0.8, kind="trend")
        await open_waiting(a, topic="退款 ")  # a is back, after its first one left the window
        conv = await open_waiting(c, topic="退款")
        f = await sup.next_push("alert", kind="trend", timeout=5)
        assert (f["topic"], f["count"], f["conv"]) == ("退款", 3, conv), f
    run(body(), timeout=60)
