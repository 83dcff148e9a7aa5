"""The agent workbench (web/agent/) and the supervisor console (web/console/) in a real browser
(headless Chromium, browser.py) against real gateways, Redis and workers: a customer (a test
client) chats with an agent in Chinese and English, typing and read show both ways, the agent
transfers to a second agent on a phone who closes it; the supervisor sees agents, the queue and
an SLA alert, approves a break, forbids transfers, joins a conversation and assigns a call-back
task; the workbench's gateway dies and the page resumes without gaps or duplicates.

The pages are the ones a gateway serves (the copy compiled into kefu-gateway, under its
Content-Security-Policy, gateway/web.c): a gateway of their own that stays up, allowed to let
them connect to the others (`web_connect_src`); they reach the gateways through the URL
fragment (#gw=ws://...,ws://...&token=...). Set KEFU_SCREENSHOT_DIR=docs/screenshots to refresh
the README's pictures."""

import asyncio
import os
import signal

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

import browser
import kefu_harness as H
from kefu_client import connect, new_id, run, send_msg
from worker_helpers import agent_on, meta, open_waiting, wcluster

WAIT = 15


def no_csp_violations(*drvs):
    for d in drvs:
        v = d.execute_script("return window.cspViolations")
        assert v == [], f"blocked by the content security policy: {v}"


def web_gateway(spawn, wc, name="web"):
    """A gateway of the cluster that serves the pages (its compiled-in copy) and stays up while
    the others die. Its Content-Security-Policy lets them connect to the other gateways' ports
    on the loopback (web_connect_src), as a deployment names its other gateway hosts."""
    return spawn.gateway(wc.shards, name=name, web_connect_src="ws://127.0.0.1:*")


def page_url(web, path, nodes, token, **extra):
    """The page at path (e.g. "agent/") on the gateway web, connecting to nodes."""
    frag = "&".join([f"gw={','.join(n.ws_url for n in nodes)}", f"token={token}"] +
                    [f"{k}={v}" for k, v in extra.items()])
    return f"http://{web.host}:{web.port}/{path}#{frag}"


async def until(drv, cond, timeout=WAIT, what="condition"):
    """Waits for cond(drv) in a thread, so the test's WebSocket clients keep reading."""
    def check(d):
        try:
            return cond(d)
        except Exception:  # noqa: BLE001 - an element replaced while being read
            return False
    return await asyncio.to_thread(WebDriverWait(drv, timeout).until, check, what)


def css(drv, sel):
    return drv.find_elements(By.CSS_SELECTOR, sel)


def text_of(drv, sel):
    """The text of the elements, shown or not (a phone shows one pane at a time); read in one
    script, since the list is redrawn every second (its countdowns)."""
    return drv.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent).join(' ')",
        sel)


def shown(drv):
    """The texts of the messages the page holds (acknowledged ones), in order."""
    return drv.execute_script(
        "return [...document.querySelectorAll('#msgs li[data-id] .b')].map(e => e.textContent)")


async def click(drv, sel):
    """Clicks the element, found again if it was redrawn meanwhile."""
    def go(d):
        css(d, sel)[0].click()
        return True
    await until(drv, go, what=f"click {sel}")


def agent_token(sub, name, **claims):
    return H.make_token(sub, "agent", name=name, skills=["default"], **claims)


async def sign_in(drv):
    Select(drv.find_element(By.ID, "status")).select_by_value("available")
    await until(drv, lambda d: d.find_element(By.ID, "conn").get_attribute("class") == "conn online"
                and d.execute_script("return document.getElementById('status').value") == "available",
                what="signed in")


def test_workbench_chat_transfer_close(spawn):
    wc = wcluster(spawn, workers=1)
    web = web_gateway(spawn, wc)


    a_id, b_id = new_id("agta"), new_id("agtb")

    async def body():
        sup = await connect(wc.n1, "supervisor", "json")
        da = browser.chrome(lang="en-US")
        da.get(page_url(web, "agent/", [wc.n1, wc.n2],
                        agent_token(a_id, "Alice", max_chats=3)))
        await until(da, lambda d: d.find_element(By.ID, "conn").get_attribute("class") == "conn online",
                    what="workbench connected")
        await sign_in(da)

        cust = await connect(wc.n2, "customer", "json", name="张三", channel="web", level=3)
        conv = await open_waiting(cust, topic="订单 order")
        row = f'li[data-conv="{conv}"]'
        await until(da, lambda d: css(d, row), what="the assignment in the list")
        assert "WEB-" in text_of(da, row + " .ticket") and "张三" in text_of(da, row)
        assert "V3" in text_of(da, row) or "L3" in text_of(da, row)
        assert "first reply" in text_of(da, row + " .sla")
        await cust.next_push("conv.state", conv=conv, state="assigned")

        m1, _, _ = await send_msg(cust, conv, "你好，我的订单还没到")
        await until(da, lambda d: text_of(d, row + " .unread") == "1", what="unread count 1")
        browser.shot(da, "workbench-new")
        await click(da, row)
        await until(da, lambda d: "你好，我的订单还没到" in text_of(d, "#msgs"), what="the message shown")
        r = await cust.next_push("read", conv=conv)
        assert r["id"] == m1 and r["from"]["id"] == a_id
        assert text_of(da, row + " .unread") == ""

        box = da.find_element(By.ID, "text")
        box.send_keys("Hello 张三, let me check")
        await cust.next_push("typing", conv=conv)
        box.send_keys(Keys.ENTER)
        got = await cust.next_push("msg", conv=conv)
        assert got["text"] == "Hello 张三, let me check" and got["cid"] and got["prev"] == m1
        # the customer types and reads the agent's message: both show on the workbench
        await cust.ok("typing", conv=conv)
        await until(da, lambda d: "is typing" in d.find_element(By.ID, "typing").text, what="typing")
        await cust.ok("read", conv=conv, id=got["id"])
        await until(da, lambda d: css(d, f'#msgs li[data-id="{got["id"]}"] .read'), what="read mark")
        await send_msg(cust, conv, "Order number 12345, thanks")
        await until(da, lambda d: "Order number 12345" in text_of(d, "#msgs"), what="English message")
        browser.shot(da, "workbench")

        # the record of the conversation
        da.find_element(By.ID, "btn-record").click()
        await until(da, lambda d: "assigned" in text_of(d, "#record"), what="the record")

        # a second agent on a phone, in Chinese
        db = browser.chrome(width=390, height=844, lang="zh-CN")
        # a phone's viewport: a desktop window cannot be made narrower than 500 px
        db.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True})
        db.get(page_url(web, "agent/", [wc.n2, wc.n1],
                        agent_token(b_id, "Bob", max_chats=3)))
        await sign_in(db)

        # transfers forbidden by the supervisor: the agent sees the supervisor's wording
        await sup.ok("group.transfers", group="default", allowed=False,
                     message="请联系主管 / please ask your supervisor")
        da.find_element(By.ID, "btn-transfer").click()
        da.find_element(By.ID, "tr-target").send_keys(b_id)
        da.find_element(By.ID, "tr-go").click()
        await until(da, lambda d: "please ask your supervisor" in d.find_element(By.ID, "tr-error").text,
                    what="the supervisor's wording")
        await sup.ok("group.transfers", group="default", allowed=True)
        da.find_element(By.ID, "tr-note").send_keys("VIP")
        da.find_element(By.ID, "tr-go").click()
        await until(da, lambda d: not css(d, row), what="the conversation gone from agent A")
        st = await cust.next_push("conv.state", conv=conv, state="assigned")
        assert st["agent"] == b_id

        # agent B (phone width): the list, then the conversation with its history
        await until(db, lambda d: css(d, row), what="the transfer on agent B")
        assert "新会话" in db.title or "🔔" in db.title
        browser.shot(db, "workbench-phone-list")
        await click(db, row)
        await until(db, lambda d: "Hello 张三, let me check" in text_of(d, "#msgs")
                    and "你好，我的订单还没到" in text_of(d, "#msgs"), what="history on agent B")
        assert not db.find_element(By.ID, "list").is_displayed(), "phone: one pane at a time"
        assert "由 " + a_id in db.find_element(By.ID, "conv-title").text
        Select(db.find_element(By.ID, "canned")).select_by_index(1)   # the greeting
        assert "张三" in db.find_element(By.ID, "text").get_attribute("value")
        db.find_element(By.ID, "send").click()
        got = await cust.next_push("msg", conv=conv)
        assert got["from"]["id"] == b_id and "很高兴为您服务" in got["text"]
        browser.shot(db, "workbench-phone-chat")

        db.find_element(By.ID, "btn-close").click()
        Select(db.find_element(By.ID, "cl-resolution")).select_by_value("unresolved")
        Select(db.find_element(By.ID, "cl-category")).select_by_value("fault")
        db.find_element(By.ID, "cl-go").click()
        st = await cust.next_push("conv.state", conv=conv, state="closed")
        assert st["resolution"] == "unresolved" and st.get("category") == "fault", st
        m = meta(wc, conv)
        assert m["state"] == "closed" and m["agent"] == b_id
        await until(db, lambda d: "未解决" in text_of(d, row), what="closed in the list")
        await click(db, "#back")
        await click(db, row + " button.dismiss")
        await until(db, lambda d: not css(d, row), what="the closed conversation dismissed")

        # agent A asks for a meal break: with one of two agents left it waits for approval
        Select(da.find_element(By.ID, "status")).select_by_value("away")
        await until(da, lambda d: "waiting for approval" in d.find_element(By.ID, "pending").text,
                    what="the pending break")
        assert da.find_element(By.ID, "notice").text, "the rule's message is shown"
        await sup.ok("break.approve", agent=a_id)
        await until(da, lambda d: "approved" in d.find_element(By.ID, "notice").text
                    and not d.find_element(By.ID, "pending").is_displayed()
                    and d.execute_script("return document.getElementById('status').value") == "away",
                    what="the break approved")
        no_csp_violations(da, db)
    run(body(), timeout=90)


def test_workbench_reconnects_without_gaps(spawn):
    """The gateway the workbench is connected to dies: the page reconnects to the other one,
    fetches what it missed (history after its last id), shows every message once and in order,
    and sends what was typed meanwhile once (the same cid)."""
    wc = wcluster(spawn, workers=1)
    # a third gateway serves the page (which must not die with the one it talks to) and
    # carries the customer, so that it can write while the page has no gateway
    n3 = web_gateway(spawn, wc, name="wc")

    async def body():
        da = browser.chrome(lang="en-US")
        da.get(page_url(n3, "agent/", [wc.n1, wc.n2],
                        agent_token(new_id("agt"), "Alice")))
        # 25 messages before an agent is there: the assignment carries the last 20, the page
        # reads the earlier ones on demand
        cust = await connect(n3, "customer", "json", name="Carol")
        conv = await open_waiting(cust)
        early = [f"early {i}" for i in range(25)]
        for text in early:
            await send_msg(cust, conv, text)
        await sign_in(da)
        row = f'li[data-conv="{conv}"]'
        await click(da, row)
        await until(da, lambda d: "early 24" in text_of(d, "#msgs"), what="the assignment's messages")
        assert shown(da) == early[5:]
        await click(da, "#msgs li button")
        await until(da, lambda d: "early 0" in text_of(d, "#msgs"), what="the earlier messages")
        await send_msg(cust, conv, "one 一")
        await until(da, lambda d: "one 一" in text_of(d, "#msgs"), what="the first message")

        # n2 is held stopped while n1 dies, so that the page stays offline (it could otherwise
        # be back on n2 between two polls) while it types and the customer writes
        os.killpg(wc.n2.proc.pid, signal.SIGSTOP)
        try:
            wc.n1.proc.expect_exit = True
            wc.n1.proc.kill_group()
            await until(da, lambda d: "online" not in d.find_element(By.ID, "conn").get_attribute("class"),
                        what="the page noticed")
            da.find_element(By.ID, "text").send_keys("typed while offline", Keys.ENTER)
            for text in ("two 二", "three 三"):
                await send_msg(cust, conv, text)
        finally:
            os.killpg(wc.n2.proc.pid, signal.SIGCONT)
        on_n2 = lambda d: (d.find_element(By.ID, "conn").get_attribute("class") == "conn online"
                           and d.find_element(By.ID, "conn").get_attribute("data-url") == wc.n2.ws_url)
        await until(da, on_n2, timeout=30, what="the page back online, on the other gateway")
        await until(da, lambda d: "three 三" in text_of(d, "#msgs"), timeout=30,
                    what="the missed messages after the reconnect")
        got = await cust.next_push("msg", conv=conv, timeout=20)
        assert got["text"] == "typed while offline"
        await until(da, lambda d: "typed while offline" in text_of(d, "#msgs li[data-id]"),
                    what="the sent message acknowledged")
        texts = shown(da)
        hist = [m["text"] for m in (await cust.ok("history", conv=conv))["msgs"]]
        assert texts == hist, (texts, hist)
        assert sorted(texts) == sorted(early + ["one 一", "two 二", "three 三", "typed while offline"])
        await cust.no_push("msg", within=0.5)   # stored and delivered once
    run(body(), timeout=90)

def test_console_agents_queue_alert_break_join(spawn):
    wc = wcluster(spawn, workers=1, sla_first_response_ms="*=1000", sla_alert_after_ms=300,
                  callback_grace_ms=300)
    web = web_gateway(spawn, wc)

    async def body():
        ds = browser.chrome(width=1440, height=1000, lang="en-US")
        sup_id = new_id("sup")
        ds.get(page_url(web, "console/", [wc.n1, wc.n2],
                        H.make_token(sup_id, "supervisor", name="Susan")))
        await until(ds, lambda d: d.find_element(By.ID, "conn").get_attribute("class") == "conn online",
                    what="console connected")
        a1 = await agent_on(wc.n1, max_chats=1, name="Amy")
        a2 = await agent_on(wc.n2, max_chats=1, name="Ben")
        await until(ds, lambda d: "Amy" in text_of(d, f'tr[data-agent="{a1.user}"]')
                    and "Ben" in text_of(d, f'tr[data-agent="{a2.user}"]'), what="both agents listed")

        custs = {}
        for i, text in enumerate(["我要退款", "where is my parcel?", "还在吗"]):
            c = await connect(wc.n1 if i % 2 else wc.n2, "customer", "json", channel="web",
                              name=f"客户{i}")
            conv = await open_waiting(c)
            custs[conv] = c
            await send_msg(c, conv, text)
        # two assigned (one each, max_chats 1), the third waits in the default queue
        await until(ds, lambda d: text_of(d, 'tr[data-group="default"] .waiting') == "1",
                    what="the queue of the default group")
        await until(ds, lambda d: "1/1" in text_of(d, f'tr[data-agent="{a1.user}"]')
                    and "1/1" in text_of(d, f'tr[data-agent="{a2.user}"]'), what="the loads")
        # nobody answers: the first-response SLA alert arrives
        await until(ds, lambda d: css(d, '#alerts li[data-kind="sla.first_response"]'),
                    what="an SLA alert")

        # a meal break that the rule holds (1 of 2 would stay): the supervisor approves it
        r = await a2.ok("agent.status", status="away", reason="meal")
        assert r["pending"] == "meal", r
        await until(ds, lambda d: css(d, f'tr[data-agent="{a2.user}"] button.approve'),
                    what="the break request")
        browser.shot(ds, "console-break")
        await click(ds, f'tr[data-agent="{a2.user}"] button.approve')
        d = await a2.next_push("break.decision", decision="approved")
        assert d["reason"] == "meal"
        await until(ds, lambda d: "away" in text_of(d, f'tr[data-agent="{a2.user}"]'),
                    what="the agent away")

        # transfers out of the default group forbidden from the console
        await click(ds, 'tr[data-group="default"] button.toggle')
        await until(ds, lambda d: "forbidden" in text_of(d, 'tr[data-group="default"]'),
                    what="transfers forbidden")
        held = next(iter(a1.pushes("conv.assigned")))["conv"]
        f = await a1.err("forbidden", "conv.transfer", conv=held, to_group="default")
        assert "supervisor" in f["message"], f

        # the figures of today
        def opened_today(d):
            d.find_element(By.CSS_SELECTOR, "#stats button").click()
            return int(text_of(d, "#stats-table tr:last-child .opened") or 0) >= 3
        await until(ds, opened_today, what="today's figures")
        assert css(ds, "#chart-days rect") and css(ds, "#chart-hours rect")
        browser.shot(ds, "console")

        # join the alerted conversation and write in it
        li = css(ds, '#alerts li[data-kind="sla.first_response"]')[0]
        conv = li.get_attribute("data-conv")
        await click(ds, f'#alerts li[data-conv="{conv}"] button.join')
        first = (await custs[conv].ok("history", conv=conv))["msgs"][0]["text"]
        await until(ds, lambda d: first in text_of(d, "#msgs"), what="the joined conversation")
        ds.find_element(By.ID, "text").send_keys("主管已加入 / a supervisor joined")
        ds.find_element(By.ID, "send").click()
        m = await custs[conv].next_push("msg", conv=conv)
        assert m["from"]["role"] == "supervisor" and m["text"] == "主管已加入 / a supervisor joined"
        await send_msg(custs[conv], conv, "谢谢 thanks")
        await until(ds, lambda d: "谢谢 thanks" in text_of(d, "#msgs"), what="the customer's reply")
        ds.execute_script("window.scrollTo(0, 0)")
        browser.shot(ds, "console-joined")

        # a customer leaves mid-conversation: the alert and the call-back task show; the
        # supervisor assigns the task to an agent
        left = next(c for cv, c in custs.items() if cv != conv)
        await left.close()
        await until(ds, lambda d: css(d, '#alerts li[data-kind="customer_left"]'),
                    what="the customer_left alert")
        await until(ds, lambda d: css(d, "#callbacks tr[data-task] input"), what="the call-back task")
        box = css(ds, "#callbacks tr[data-task] input")[0]
        box.clear()
        box.send_keys(a1.user)
        await click(ds, "#callbacks tr[data-task] button.assign")
        p = await a1.next_push("callback.assigned")
        assert p["task"]["assignee"] == a1.user

        # the supervisor takes the joined conversation over: its handler now, without being an
        # available agent; the customer and the agent are told, and the supervisor closes it
        held_by = meta(wc, conv)["agent"]
        agent = a1 if held_by == a1.user else a2
        await click(ds, "#take-over")
        st = await custs[conv].next_push(
            "conv.state", match=lambda f: f["type"] == "conv.state" and f.get("agent") == sup_id)
        assert st["agent_name"] == "Susan" and st["from"] == held_by, st
        await agent.next_push("conv.state", match=lambda f: f.get("conv") == conv
                              and f.get("agent") == sup_id)
        await until(ds, lambda d: d.find_element(By.ID, "watch").get_attribute("data-handler") == sup_id
                    and not d.find_element(By.ID, "take-over").is_displayed()
                    and d.find_element(By.ID, "close-conv").is_displayed(), what="taken over")
        assert meta(wc, conv)["agent"] == sup_id
        await agent.err("forbidden", "msg.send", conv=conv, text="mine?", cid=new_id("cid"))
        ds.find_element(By.ID, "text").send_keys("我来处理 / I am handling this now")
        ds.find_element(By.ID, "send").click()
        m = await custs[conv].next_push("msg", conv=conv)
        assert m["from"]["id"] == sup_id and m["text"] == "我来处理 / I am handling this now"
        await until(ds, lambda d: "I am handling this now" in text_of(d, "#msgs li[data-id]"),
                    what="the supervisor's message acknowledged")
        ds.execute_script("document.getElementById('watch-card').scrollIntoView()")
        browser.shot(ds, "console-takeover")
        await click(ds, "#close-conv")
        st = await custs[conv].next_push("conv.state", conv=conv, state="closed")
        assert st["resolution"] == "resolved", st
        await until(ds, lambda d: not d.find_element(By.ID, "close-conv").is_displayed(),
                    what="closed")
        no_csp_violations(ds)
        # a console opened later shows the alerts raised before it (alert.list)
        ds.refresh()
        await until(ds, lambda d: css(d, f'#alerts li[data-kind="sla.first_response"][data-conv="{conv}"]')
                    and css(d, '#alerts li[data-kind="customer_left"]'),
                    what="the earlier alerts after a reload")
        no_csp_violations(ds)
    run(body(), timeout=90)
