"""The widget and the agent workbench talking to each other, both pages served by the gateway
(issue 12): a customer on the demo page gets the retail bot, asks for a human and is assigned to
an agent in the workbench; they chat in Chinese and English (the greeting from the configured
canned replies), typing and read marks show on both sides; the agent transfers the conversation
to a second agent's workbench, who closes it with a resolution and category; the customer rates
it. No protocol test client in between: every frame comes from one of the pages."""

import pytest

import kefu_harness as H
from kefu_client import new_id
from kefu_client import connect, run
from test_bots import offset_to, rules_dir
from test_widget import customer_token, demo_url, has_text, open_widget, send

browser = pytest.importorskip("browser")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

WAIT = 20
CANNED = "greeting=您好，我是{agent}，{customer}您好|closing=感谢您的咨询，再见 Thank you, bye"


def start(spawn, bots=False, **wopts):
    """One gateway serving the pages (with the retail bots in business hours), and a worker
    publishing the canned replies."""
    shards = [spawn.redis()]
    gw = {"web_connect_src": "ws://127.0.0.1:*"}
    if bots:
        gw["bots_dir"] = str(rules_dir(spawn.workdir, copy_retail=True))
        gw["bot_clock_offset_s"] = offset_to(2026, 11, 23, 10, 0)
    g = spawn.gateway(shards, name="g0", **gw)
    spawn.worker(shards, name="wk", offline_grace_ms=60000, **wopts)
    return g


def wait(drv, cond, what, timeout=WAIT):
    def check(d):
        try:
            return cond(d)
        except Exception:  # noqa: BLE001 - an element redrawn while being read
            return False
    return WebDriverWait(drv, timeout).until(check, message=what)


def text_of(drv, sel):
    return drv.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent).join(' ')",
        sel)


def workbench(base, agent_id, name, lang):
    tok = H.make_token(agent_id, "agent", name=name, skills=["default"], max_chats=3)
    desk = browser.chrome(lang=lang)
    desk.get(f"{base}/agent/#token={tok}")
    wait(desk, lambda d: d.find_element(By.ID, "conn").get_attribute("class") == "conn online",
         "the workbench connected")
    Select(desk.find_element(By.ID, "status")).select_by_value("available")
    wait(desk, lambda d: d.execute_script("return document.getElementById('status').value")
         == "available", "the agent signed in")
    return desk


def test_widget_and_workbench_chat_close_and_rate(spawn):
    g = start(spawn, bots=True, canned_replies=CANNED)
    base = f"http://{g.host}:{g.port}"
    agent_id, second_id = new_id("agt"), new_id("agt")
    desk = workbench(base, agent_id, "Wang Fang", "zh-CN")

    cust = browser.chrome(lang="en-US")
    cust.get(demo_url(g, [g], customer_token(name="Li Lei")))
    open_widget(cust)
    wait(cust, has_text(".kefu-bot .kefu-text", "welcome"), "the bot's greeting")
    send(cust, "Hello, 我想查一下订单")
    send(cust, "I want a human agent please")
    # the worker assigns the conversation to the only available agent: the workbench lists it
    wait(desk, lambda d: d.find_elements(By.CSS_SELECTOR, "#convs li[data-conv]"),
         "the assignment in the workbench")
    row = desk.find_elements(By.CSS_SELECTOR, "#convs li[data-conv]")[0]
    conv = row.get_attribute("data-conv")
    wait(cust, has_text(".kefu-sub", "Wang Fang"), "the agent's name in the widget")
    row.click()
    wait(desk, lambda d: "我想查一下订单" in text_of(d, "#msgs"), "the customer's message")
    assert "I want a human agent please" in text_of(desk, "#msgs")

    # the greeting from the worker's canned_replies, with the names filled in
    wait(desk, lambda d: "greeting: " in text_of(d, "#canned option"), "the configured replies")
    Select(desk.find_element(By.ID, "canned")).select_by_index(1)
    assert desk.find_element(By.ID, "text").get_attribute("value") == "您好，我是Wang Fang，Li Lei您好"
    desk.find_element(By.ID, "send").click()
    wait(cust, has_text(".kefu-theirs .kefu-text", "我是Wang Fang"), "the greeting")
    # the agent types: the widget shows it; then answers in Chinese and English
    box = desk.find_element(By.ID, "text")
    box.send_keys("李先生")
    wait(cust, has_text(".kefu-typing", "Wang Fang"), "the agent typing, in the widget")
    box.send_keys(" — hello, let me look")
    box.send_keys(Keys.ENTER)
    wait(cust, has_text(".kefu-theirs .kefu-text", "let me look"), "the agent's reply")
    # the customer's panel is open: the workbench marks its message read
    wait(desk, lambda d: d.find_elements(By.CSS_SELECTOR, "#msgs li.mine .read"),
         "read, in the workbench")

    # the customer types and answers; the workbench shows both
    cust.find_element(By.CSS_SELECTOR, ".kefu-input").send_keys("订单号 12345")
    wait(desk, lambda d: d.find_element(By.ID, "typing").text.strip() != "",
         "the customer typing, in the workbench")
    cust.find_element(By.CSS_SELECTOR, ".kefu-send").click()
    wait(desk, lambda d: "订单号 12345" in text_of(d, "#msgs"), "the customer's second message")
    wait(cust, has_text(".kefu-mine.kefu-read .kefu-meta", "Read"), "read, in the widget")

    # a second agent signs in; the first transfers the conversation to them
    desk2 = workbench(base, second_id, "Zhao Lei", "en-US")
    desk.find_element(By.ID, "btn-transfer").click()
    desk.find_element(By.ID, "tr-target").send_keys(second_id)
    desk.find_element(By.ID, "tr-note").send_keys("order 12345")
    desk.find_element(By.ID, "tr-go").click()
    row2 = f'#convs li[data-conv="{conv}"]'
    wait(desk2, lambda d: d.find_elements(By.CSS_SELECTOR, row2), "the transfer in workbench 2")
    wait(desk, lambda d: not d.find_elements(By.CSS_SELECTOR, row2),
         "the conversation gone from workbench 1")
    wait(cust, has_text(".kefu-sub", "Zhao Lei"), "the new agent's name in the widget")
    desk2.find_element(By.CSS_SELECTOR, row2).click()
    wait(desk2, lambda d: "订单号 12345" in text_of(d, "#msgs") and "let me look"
         in text_of(d, "#msgs"), "the history in workbench 2")
    box2 = desk2.find_element(By.ID, "text")
    box2.send_keys("Your order ships today. 今天发货。")
    box2.send_keys(Keys.ENTER)
    wait(cust, has_text(".kefu-theirs .kefu-text", "Your order ships today"), "agent 2's message")

    # the second agent closes with a resolution and a category; the customer rates
    desk2.find_element(By.ID, "btn-close").click()
    Select(desk2.find_element(By.ID, "cl-resolution")).select_by_value("resolved")
    Select(desk2.find_element(By.ID, "cl-category")).select_by_value("consultation")
    desk2.find_element(By.ID, "cl-go").click()
    wait(cust, lambda d: d.find_elements(By.CSS_SELECTOR, ".kefu-survey .kefu-star"), "the survey")
    cust.find_elements(By.CSS_SELECTOR, ".kefu-star")[4].click()
    cust.find_element(By.CSS_SELECTOR, ".kefu-comment").send_keys("很好 thanks")
    cust.find_element(By.CSS_SELECTOR, ".kefu-rate").click()
    wait(cust, has_text(".kefu-thanks", "Thank you"), "the thanks")

    flat = H.redis_call(H.shard_addr(g.redis_addrs, "c:" + conv), "HGETALL",
                        f"kefu:{{c:{conv}}}:meta")
    m = dict(zip(flat[::2], flat[1::2]))
    assert (m["state"], m["resolution"], m["category"], m["agent"], m["rating"]) == (
        "closed", "resolved", "consultation", second_id, "5"), m
    # the widget shows every message once, in the stored order (the bot's included)
    stored = H.redis_call(H.shard_addr(g.redis_addrs, "c:" + conv), "XRANGE",
                          f"kefu:{{c:{conv}}}:msgs", "-", "+")
    texts = [dict(zip(kv[::2], kv[1::2]))["text"] for _, kv in stored]
    shown_cust = [e.text for e in cust.find_elements(By.CSS_SELECTOR, ".kefu-msg .kefu-text")]
    assert shown_cust == texts, (shown_cust, texts)
    assert "您好，我是Wang Fang，Li Lei您好" in texts and "Your order ships today. 今天发货。" in texts
    browser.shot(desk2, "together-workbench")
    browser.shot(cust, "together-widget")


def test_canned_list_gives_the_workers_lines_to_staff_only(spawn):
    g = start(spawn, canned_replies=CANNED + "|=no label|empty=")

    async def body():
        agent = await connect(g, "agent", "msgpack")
        r = await agent.ok("canned.list")
        assert r["replies"] == [
            {"label": "greeting", "text": "您好，我是{agent}，{customer}您好"},
            {"label": "closing", "text": "感谢您的咨询，再见 Thank you, bye"},
            {"label": "", "text": "no label"}], r
        sup = await connect(g, "supervisor", "json")
        assert len((await sup.ok("canned.list"))["replies"]) == 3
        cust = await connect(g, "customer", "json")
        await cust.err("forbidden", "canned.list")
    run(body())


def test_canned_list_is_empty_without_the_option(spawn):
    g = start(spawn)

    async def body():
        agent = await connect(g, "agent", "json")
        assert (await agent.ok("canned.list"))["replies"] == []
    run(body())
