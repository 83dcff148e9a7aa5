"""The customer widget (web/widget.js) in headless Chromium on the demo page, against real
gateways, Redis, the retail bots and a kefu-worker; the agent is a protocol client
(kefu_client). Screenshots go to $KEFU_SCREENSHOT_DIR (docs/screenshots for the README)."""

import asyncio
import os
import signal
import threading
import time
import urllib.parse

import pytest

import kefu_harness as H
from kefu_client import close_all, history_all, new_id
from test_bots import offset_to, rules_dir
from worker_helpers import agent_on

browser = pytest.importorskip("browser")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT = 15


class Loop:
    """An asyncio loop in a thread for the protocol clients, beside the synchronous browser."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=WAIT):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self):
        try:
            self.run(close_all(), 5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture
def aio():
    lp = Loop()
    yield lp
    lp.stop()


def start_kefu(spawn, nodes=1, bots=True, offset=None, **gw):
    shards = [spawn.redis()]
    opts = {"web_connect_src": "ws://127.0.0.1:*"}
    if bots:
        opts["bots_dir"] = str(rules_dir(spawn.workdir, copy_retail=True))
        opts["bot_clock_offset_s"] = offset if offset is not None else offset_to(2026, 11, 23, 10, 0)
    opts.update(gw)
    gws = [spawn.gateway(shards, name=f"g{i}", **opts) for i in range(nodes)]
    spawn.worker(shards, name="wk", offline_grace_ms=60000)
    return gws


def demo_url(page_node, gateways, token, **extra):
    frag = {"token": token, "gateways": ",".join(g.ws_url for g in gateways), **extra}
    return f"http://{page_node.host}:{page_node.port}/demo/#" + urllib.parse.urlencode(frag)


def customer_token(name="Li Lei"):
    return H.make_token(new_id("cust"), "customer", name=name, channel="web")


def wait(drv, cond, what, timeout=WAIT):
    return WebDriverWait(drv, timeout).until(lambda d: cond(d), message=what)


def texts(drv, sel):
    return [e.text for e in drv.find_elements(By.CSS_SELECTOR, sel)]


def has_text(sel, text):
    return lambda d: any(text in t for t in texts(d, sel))


def send(drv, text):
    box = drv.find_element(By.CSS_SELECTOR, ".kefu-input")
    box.send_keys(text)
    drv.find_element(By.CSS_SELECTOR, ".kefu-send").click()


def open_widget(drv):
    wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, ".kefu-launcher"), "the launcher")
    drv.find_element(By.CSS_SELECTOR, ".kefu-launcher").click()
    wait(drv, lambda d: d.find_element(By.CSS_SELECTOR, ".kefu-panel").is_displayed(), "the panel")


def test_widget_chat_with_bot_agent_and_survey(spawn, aio):
    (g,) = start_kefu(spawn)
    agent = aio.run(agent_on(g, name="Wang Fang"))
    drv = browser.chrome(lang="en-US")
    drv.get(demo_url(g, [g], customer_token()))
    assert texts(drv, ".kefu-launcher-text") == ["Chat with us"]
    browser.shot(drv, "widget-launcher")
    open_widget(drv)
    # the retail bot greets, and hands off when asked for a human
    wait(drv, has_text(".kefu-bot .kefu-text", "welcome"), "the bot's greeting")
    send(drv, "I want a human agent please")
    push = aio.run(agent.next_push("conv.assigned", timeout=WAIT))
    conv = push["conv"]
    wait(drv, has_text(".kefu-sub", "Wang Fang is serving you"), "the agent's name")
    # messages both ways, Chinese and English
    aio.run(agent.ok("msg.send", conv=conv, text="您好，我是王芳，请问有什么可以帮您？", cid="a1"))
    wait(drv, has_text(".kefu-theirs .kefu-text", "我是王芳"), "the agent's Chinese message")
    send(drv, "我的订单 12345 还没到 — my order has not arrived")
    m = aio.run(agent.next_push("msg", conv=conv, timeout=WAIT))
    assert m["text"] == "我的订单 12345 还没到 — my order has not arrived" and m["cid"].startswith("w-")
    # the customer's panel is open: the widget says it read the agent's message
    r = aio.run(agent.next_push("read", conv=conv, timeout=WAIT))
    assert r["from"]["role"] == "customer"
    # the agent reads: "Read" under the customer's message; the agent types: an indicator
    aio.run(agent.ok("read", conv=conv, id=m["id"]))
    wait(drv, has_text(".kefu-mine.kefu-read .kefu-meta", "Read"), "the read mark")
    aio.run(agent.ok("typing", conv=conv))
    wait(drv, has_text(".kefu-typing", "Wang Fang is typing"), "the typing indicator")
    # the customer types: the agent sees it
    drv.find_element(By.CSS_SELECTOR, ".kefu-input").send_keys("t")
    aio.run(agent.next_push("typing", conv=conv, timeout=WAIT))
    drv.find_element(By.CSS_SELECTOR, ".kefu-input").clear()
    aio.run(agent.ok("msg.send", conv=conv, text="It ships today. 今天发货。", cid="a2"))
    wait(drv, has_text(".kefu-theirs .kefu-text", "It ships today"), "the agent's English message")
    wait(drv, lambda d: d.find_element(By.CSS_SELECTOR, ".kefu-typing").get_attribute("hidden"),
         "the typing indicator gone with the message")
    browser.shot(drv, "widget-chat")
    # the agent closes; the customer rates 4 stars with a comment
    aio.run(agent.ok("conv.close", conv=conv, resolution="resolved", category="consultation"))
    wait(drv, has_text(".kefu-note", "The chat has ended"), "the closed notice")
    wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, ".kefu-survey .kefu-star"), "the survey")
    drv.find_elements(By.CSS_SELECTOR, ".kefu-star")[3].click()
    drv.find_element(By.CSS_SELECTOR, ".kefu-comment").send_keys("Quick and kind, 谢谢")
    browser.shot(drv, "widget-survey")
    drv.find_element(By.CSS_SELECTOR, ".kefu-rate").click()
    rated = aio.run(agent.next_push("conv.rated", conv=conv, timeout=WAIT))
    assert rated["stars"] == 4 and rated["comment"] == "Quick and kind, 谢谢"
    wait(drv, has_text(".kefu-thanks", "Thank you"), "the thanks")
    # every message shown once, in the order stored
    hist, _ = aio.run(history_all(agent, conv))
    shown = texts(drv, ".kefu-msg .kefu-text")
    assert shown == [h["text"] for h in hist], (shown, hist)


def test_widget_queue_then_customer_ends_the_chat(spawn, aio):
    (g,) = start_kefu(spawn, bots=False)
    drv = browser.chrome(lang="en-US")
    drv.get(demo_url(g, [g], customer_token(), open="1"))
    wait(drv, lambda d: d.find_element(By.CSS_SELECTOR, ".kefu-panel").is_displayed(), "the panel")
    # nobody is available: the customer waits and sees the place in the queue
    wait(drv, has_text(".kefu-note", "You are number 1 in the queue"), "the queue position")
    browser.shot(drv, "widget-queue")
    agent = aio.run(agent_on(g, name="Zhao Lei"))
    push = aio.run(agent.next_push("conv.assigned", timeout=WAIT))
    wait(drv, has_text(".kefu-sub", "Zhao Lei is serving you"), "the agent's name")
    drv.find_element(By.CSS_SELECTOR, ".kefu-end").click()
    drv.find_element(By.CSS_SELECTOR, ".kefu-yes").click()
    st = aio.run(agent.next_push("conv.state", conv=push["conv"], timeout=WAIT))
    assert st["state"] == "closed" and st["resolution"] == "customer_closed"
    wait(drv, lambda d: d.find_elements(By.CSS_SELECTOR, ".kefu-survey"), "the survey")
    wait(drv, lambda d: d.find_element(By.CSS_SELECTOR, ".kefu-restart").is_displayed(),
         "a new chat offered")


class Paused:
    """A gateway stopped with SIGSTOP: it accepts TCP (the kernel does) but answers nothing,
    so the widget can neither reach it nor give up on it until it is resumed."""

    def __init__(self, g):
        self.g = g

    def __enter__(self):
        os.killpg(self.g.proc.pid, signal.SIGSTOP)   # the master and its gateway process
        return self

    def __exit__(self, *exc):
        try:
            os.killpg(self.g.proc.pid, signal.SIGCONT)
        except ProcessLookupError:   # killed while stopped
            pass


def kill(g):
    """SIGKILL to the gateway's master and its processes at once: a crashed host."""
    g.proc.expect_exit = True
    os.killpg(g.proc.pid, signal.SIGKILL)
    g.proc.wait(10)


def test_widget_survives_its_gateway_being_killed(spawn, aio):
    g1, g2, g3 = start_kefu(spawn, nodes=3, bots=False)
    agent = aio.run(agent_on(g3, name="Chen Jing"))
    drv = browser.chrome(lang="en-US")
    # the page and the agent are on g3; the widget is given g1 and g2 and connects to g1 first
    drv.get(demo_url(g3, [g1, g2], customer_token(), open="1"))
    push = aio.run(agent.next_push("conv.assigned", timeout=WAIT))
    conv = push["conv"]
    wait(drv, has_text(".kefu-sub", "Chen Jing is serving you"), "assigned")
    send(drv, "hello before the crash")
    aio.run(agent.next_push("msg", conv=conv, timeout=WAIT))
    aio.run(agent.ok("msg.send", conv=conv, text="answer one", cid="b1"))
    wait(drv, has_text(".kefu-theirs .kefu-text", "answer one"), "answer one")

    # g1 dies while g2 cannot answer yet: what the agent writes meanwhile reaches nobody live,
    # and only the widget's catch-up after the reconnect (history after=last) can show it
    with Paused(g2):
        kill(g1)
        for i in range(3):
            aio.run(agent.ok("msg.send", conv=conv, text=f"while you were away {i}", cid=f"c{i}"))
        wait(drv, lambda d: d.find_element(By.CSS_SELECTOR, ".kefu-banner").is_displayed(),
             "the offline banner")
    wait(drv, has_text(".kefu-theirs .kefu-text", "while you were away 2"), "the missed messages")

    # now g2 dies while a new g1 cannot answer: the customer's message waits, then goes once
    g1b = spawn.gateway(g2.redis_addrs, name="g1b", port=g1.port,
                        web_connect_src="ws://127.0.0.1:*")
    with Paused(g1b):
        kill(g2)
        send(drv, "typed during the outage")
        aio.run(agent.ok("msg.send", conv=conv, text="and one more", cid="c9"))
        assert drv.find_elements(By.CSS_SELECTOR, ".kefu-pending")
    got = aio.run(agent.next_push("msg", conv=conv, timeout=WAIT))
    assert got["text"] == "typed during the outage"
    wait(drv, has_text(".kefu-theirs .kefu-text", "and one more"), "the last agent message")
    # a message sent into a gateway that hangs, then dies, unanswered: sent again to the next
    # one with the same cid, stored once
    g2b = spawn.gateway(g2.redis_addrs, name="g2b", port=g2.port,
                        web_connect_src="ws://127.0.0.1:*")
    with Paused(g1b):
        send(drv, "sent into a hung gateway")
        kill(g1b)
    got = aio.run(agent.next_push("msg", conv=conv, timeout=WAIT))
    assert got["text"] == "sent into a hung gateway"
    send(drv, "after the reconnect")
    got = aio.run(agent.next_push("msg", conv=conv, timeout=WAIT))
    assert got["text"] == "after the reconnect"
    assert g2b.proc.alive()
    wait(drv, lambda d: not d.find_elements(By.CSS_SELECTOR, ".kefu-pending"), "all acknowledged")
    hist, _ = aio.run(history_all(agent, conv))
    want = [h["text"] for h in hist]
    assert len(want) == len(set(want)) == 9, want   # stored once each
    wait(drv, lambda d: texts(d, ".kefu-msg .kefu-text") == want,
         f"every message shown once, in order: {want}")
    assert not drv.find_element(By.CSS_SELECTOR, ".kefu-banner").is_displayed()
    browser.shot(drv, "widget-reconnected")


def test_widget_phone_in_chinese_off_hours(spawn, aio):
    # Sunday 23:00 China time: the retail calendar is closed
    (g,) = start_kefu(spawn, offset=offset_to(2026, 11, 22, 23, 0))
    drv = browser.chrome(width=390, height=844, lang="zh-CN")
    drv.get(demo_url(g, [g], customer_token("韩梅梅")))
    wait(drv, has_text(".kefu-launcher-text", "联系客服"), "the Chinese launcher")
    browser.shot(drv, "widget-phone-launcher")
    open_widget(drv)
    wait(drv, has_text(".kefu-bot .kefu-text", "非工作时间"), "the off-hours notice")
    panel = drv.find_element(By.CSS_SELECTOR, ".kefu-panel").rect
    width = drv.execute_script("return window.innerWidth")
    height = drv.execute_script("return window.innerHeight")
    assert panel["x"] == 0 and panel["width"] == width and panel["height"] == height, panel
    assert texts(drv, ".kefu-title") == ["在线客服"]
    assert drv.find_element(By.CSS_SELECTOR, ".kefu-input").get_attribute("placeholder") == "请输入消息…"
    send(drv, "你好，请问退货怎么办理？")
    wait(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".kefu-bot")) >= 2, "the bot's answer")
    browser.shot(drv, "widget-phone-zh")


class Shop(threading.Thread):
    """Another site (its own origin, a plain HTTP server) that embeds the widget from the
    gateway's origin with data-token-url, under the Content-Security-Policy docs/web.md tells
    such sites to set."""

    def __init__(self, gw, token):
        import http.server

        gw_origin = f"http://{gw.host}:{gw.port}"
        page = (f'<!doctype html><meta charset="utf-8"><title>shop</title><h1>Another shop</h1>'
                f'<script src="{gw_origin}/widget.js" data-token-url="/kefu/token" async></script>')
        csp = (f"default-src 'self'; script-src 'self' {gw_origin}; style-src 'self' {gw_origin}; "
               f"connect-src 'self' ws://{gw.host}:{gw.port}")

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/kefu/token":
                    t = token() if callable(token) else token
                    body, ctype = t.encode(), "text/plain"
                else:
                    body, ctype = page.encode(), "text/html; charset=utf-8"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("Content-Security-Policy", csp)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        super().__init__(target=self.server.serve_forever, daemon=True)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_widget_embedded_by_another_site_with_a_token_url(spawn, aio):
    (g,) = start_kefu(spawn, bots=False)
    agent = aio.run(agent_on(g, name="Sun Li"))
    shop = Shop(g, customer_token("Guest"))
    shop.start()
    try:
        drv = browser.chrome(lang="en-GB")
        drv.get(shop.url)
        open_widget(drv)
        # the style sheet came from the gateway too: the panel is laid out (fixed, 370 px)
        assert drv.find_element(By.CSS_SELECTOR, ".kefu-panel").rect["width"] == 370
        push = aio.run(agent.next_push("conv.assigned", timeout=WAIT))
        wait(drv, has_text(".kefu-sub", "Sun Li is serving you"), "assigned")
        send(drv, "hello from another site")
        m = aio.run(agent.next_push("msg", conv=push["conv"], timeout=WAIT))
        assert m["text"] == "hello from another site" and m["from"]["name"] == "Guest"
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors   # no CSP violation, no failed load
    finally:
        shop.stop()


def test_widget_renews_an_expired_token_from_its_token_url(spawn, aio):
    (g,) = start_kefu(spawn, bots=False, jwt_leeway_s=0)
    agent = aio.run(agent_on(g, name="Sun Li"))
    sub = new_id("cust")
    minted = []

    def token():   # a short-lived token, fresh on every call of the token URL (5 s: on a
        # loaded machine 2 s could run out before the page had its welcome, again and again)
        minted.append(H.make_token(sub, "customer", ttl=5, name="Guest", channel="web"))
        return minted[-1]

    shop = Shop(g, token)
    shop.start()
    try:
        drv = browser.chrome(lang="en-US")
        drv.get(shop.url)
        open_widget(drv)
        push = aio.run(agent.next_push("conv.assigned", timeout=WAIT))
        wait(drv, has_text(".kefu-sub", "Sun Li is serving you"), "assigned")
        first = len(minted)
        exp = H.jwt_decode_unverified(minted[-1])[1]["exp"]
        wait(drv, lambda d: time.time() > exp + 1, "the session's token to expire")
        # the gateway refuses the message (token expired); the widget fetches a new token,
        # reconnects and sends it again
        send(drv, "sent with an expired session")
        m = aio.run(agent.next_push("msg", conv=push["conv"], timeout=WAIT))
        assert m["text"] == "sent with an expired session"
        assert len(minted) > first
        wait(drv, lambda d: not d.find_elements(By.CSS_SELECTOR, ".kefu-pending"), "acknowledged")
        assert texts(drv, ".kefu-mine .kefu-text") == ["sent with an expired session"]
    finally:
        shop.stop()


def test_desk_pages_load_from_the_gateway_under_its_policy(spawn, aio):
    """The workbench and the console, served by the gateway itself with its
    Content-Security-Policy, connect to it (their own origin's /ws) and the browser reports no
    error: nothing they need is blocked."""
    (g,) = start_kefu(spawn, bots=False, web_connect_src=None)
    base = f"http://{g.host}:{g.port}"
    drv = browser.chrome(lang="en-US")
    for path, role, extra in (("/agent/", "agent", {"skills": ["default"], "max_chats": 3}),
                              ("/console/", "supervisor", {"skills": ["default"]})):
        sub = new_id(role[:4])
        tok = H.make_token(sub, role, name=f"Desk {role}", **extra)
        drv.get(f"{base}{path}#token={tok}")
        # signed in: the gateway sees the user online on a WebSocket from the page
        wait(drv, lambda d: g.metrics().get("kefu_connections", role=role) == 1,
             f"{path} connected")
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, (path, errors)
