"""kefu-export --redis: without an archive database the closed conversations stay in Redis for
retention_days, and the export reads them there (found through the statistics' per-day index
kefu:{st:D}:closed) with the same range, filters, formats and masking as from PostgreSQL. Real
redis-server (stand-alone and a Redis Cluster), gateways and a worker; the same conversations
archived in PostgreSQL export to the same rows from either source."""

import csv
import datetime
import io
import json

import pytest

import kefu_harness as H
import test_export
from kefu_client import connect, run
from test_archive import served, slow
from worker_helpers import agent_on, meta, open_waiting, rcall, record, wcluster

TZ = "Asia/Shanghai"
PHONE_TEXT = "您好，我的手机号是 138-1234-5678，邮箱 zhang.san@example.com"
ID_TEXT = "身份证 11010119900307123X，订单号 A-2026"
CSV_TEXT = '含逗号, "引号" 和\n换行'
RAW = ["138-1234-5678", "zhang.san@example.com", "11010119900307123X", "13700001111"]


def export(*args, check=True):
    """Runs kefu-export without --db (test_export.export); stdout as text."""
    return test_export.export(None, *args, db=False, check=check)


def lines(*args):
    return [json.loads(line) for line in export(*args).stdout.splitlines()]


def parse_csv(text):
    return list(csv.DictReader(io.StringIO(text, newline="")))


def scripted(wc):
    """Three closed conversations (web by a1 with personal data and a rating, app by a2 in
    group vip, web by a1 with a CSV-hostile text) and one still open; returns
    (convs in closing order, a1, a2)."""
    async def body():
        a1 = await agent_on(wc.n1, name="王芳 13912345678")
        a2 = await agent_on(wc.n2, skills=("vip",))
        c1 = await connect(wc.n2, "customer", "json", name="张三 zhang.san@example.com")
        c2 = await connect(wc.n1, "customer", "json", channel="app")
        c3 = await connect(wc.n1, "customer", "json")
        k1 = await served(wc, a1, c1, [PHONE_TEXT, ID_TEXT], topic="退款 +86 13812345678")
        await a1.ok("conv.close", conv=k1, resolution="resolved", category="complaint")
        await c1.ok("conv.rate", conv=k1, stars=4, comment="回电 13700001111 谢谢")
        k2 = await served(wc, a2, c2, ["app 登录不了"])
        await a2.ok("conv.close", conv=k2, resolution="unresolved")
        k3 = await served(wc, a1, c3, [CSV_TEXT])
        await a1.ok("conv.close", conv=k3)
        await open_waiting(await connect(wc.n2, "customer", "json"))  # open: not exported
        return [k1, k2, k3], a1.user, a2.user
    return run(body(), timeout=60 * slow())


def day(ms, tz=None):
    t = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)
    if tz:
        t = t.astimezone(datetime.timezone(datetime.timedelta(hours=8)))
    return t.date().isoformat()


def check_redis_export(wc):
    convs, a1, a2 = scripted(wc)
    k1, k2, k3 = convs
    src = ["--redis", wc.addrs[0]]
    # the worker adds each close to the statistics' day index from the lifecycle event
    H.wait_until(lambda: [c["conv"] for c in lines(*src)] == convs, timeout=10 * slow(),
                 what="the three closed conversations in the export")
    metas = {k: meta(wc, k) for k in convs}

    def ids(*args):
        return [c["conv"] for c in lines(*src, *args)]

    # the range: the UTC day of the closes, and Shanghai's (the workers' stats_timezone is
    # Shanghai's: the index days differ from the export's)
    closed = [int(metas[k]["closed_at"]) for k in convs]
    first, last = day(min(closed)), day(max(closed))
    assert ids("--from", first, "--to", last) == convs
    before = (datetime.date.fromisoformat(first) - datetime.timedelta(days=1)).isoformat()
    after = (datetime.date.fromisoformat(last) + datetime.timedelta(days=1)).isoformat()
    assert ids("--to", before) == [] and ids("--from", after) == []
    sh_first, sh_last = day(min(closed), TZ), day(max(closed), TZ)
    assert ids("--timezone", TZ, "--from", sh_first, "--to", sh_last) == convs
    # the filters
    assert ids("--channel", "app") == [k2]
    assert ids("--channel", "web") == [k1, k3]
    assert ids("--group", "vip") == [k2]
    assert ids("--group", "default,vip") == convs
    assert ids("--agent", a1) == [k1, k3]
    assert ids("--agent", a2, "--channel", "web") == []
    assert ids("--channel", "web", "--group", "default", "--agent", a1) == [k1, k3]

    # jsonl, nested; masked by default (user ids too: those of the tests hold digit runs)
    p1, p2, _ = lines(*src, "--no-mask")
    assert (p1["channel"], p1["group"], p1["agent"]) == ("web", "default", a1)
    assert (p2["channel"], p2["group"], p2["agent"]) == ("app", "vip", a2)
    c1, c2, c3 = lines(*src)
    assert c1["resolution"] == "resolved" and c1["category"] == "complaint"
    assert c1["ticket"] == metas[k1]["ticket"] and c1["ticket"]
    assert c1["rating"] == 4 and c1["rating_comment"] == "回电 137****1111 谢谢"
    assert c2["rating"] is None and c2["rating_comment"] is None and c2["qa_score"] is None
    assert c1["closed_at"].endswith("+00:00") and c1["assigned_at"] and c1["first_response_at"]
    assert c1["topic"] == "退款 +861****5678"
    assert c1["customer_name"] == "张三 z***@example.com" and c1["agent_name"] == "王芳 139****5678"
    assert [m["text"] for m in c1["messages"]] == [
        "您好，我的手机号是 138****5678，邮箱 z***@example.com",
        "身份证 110****123X，订单号 A-2026", "好的，马上为您处理"]
    assert [m["role"] for m in c1["messages"]] == ["customer", "customer", "agent"]
    assert [e["ev"] for e in c1["events"]] == [e["ev"] for e in record(wc, k1)]
    assert c1["events"][-1]["ev"] == "rated"
    assert c1["meta"]["state"] == "closed" and c1["meta"]["ticket"] == metas[k1]["ticket"]
    assert c1["meta"]["customer_name"] == "张三 z***@example.com"
    assert c1["meta"]["created"] == metas[k1]["created"]   # a time: not masked
    assert [m["text"] for m in c3["messages"]][0] == CSV_TEXT
    for args in ([], ["--format", "csv"], ["--what", "messages"], ["--what", "events"],
                 ["--what", "messages", "--format", "csv"]):
        out = export(*src, *args).stdout
        for raw in RAW:
            assert raw not in out, (args, raw)
    # --no-mask: as Redis holds it
    plain = lines(*src, "--no-mask", "--channel", "web")
    assert [m["text"] for m in plain[0]["messages"]][:2] == [PHONE_TEXT, ID_TEXT]
    assert plain[0]["rating_comment"] == "回电 13700001111 谢谢"

    # flat: one line per message or event, led by its conversation; CSV
    msgs = lines(*src, "--what", "messages", "--group", "vip", "--no-mask")
    assert [(m["conv"], m["text"]) for m in msgs] == [(k2, "app 登录不了"), (k2, "好的，马上为您处理")]
    assert msgs[0]["agent"] == a2 and msgs[0]["channel"] == "app"
    evs = lines(*src, "--what", "events", "--agent", a2)
    assert [e["ev"] for e in evs] == [e["ev"] for e in record(wc, k2)]
    rows = parse_csv(export(*src, "--format", "csv", "--timezone", TZ).stdout)
    assert [r["conv"] for r in rows] == convs
    assert rows[0]["messages"] == "3" and rows[0]["events"] == str(len(record(wc, k1)))
    assert rows[0]["closed_at"].endswith("+08:00") and rows[1]["rating"] == ""
    mrows = parse_csv(export(*src, "--format", "csv", "--what", "messages", "--no-mask").stdout)
    assert [r["text"] for r in mrows if r["conv"] == k3] == [CSV_TEXT, "好的，马上为您处理"]
    assert len(mrows) == 3 + 2 + 2


def test_export_from_redis_without_archive(spawn):
    wc = wcluster(spawn, workers=1, stats_timezone=TZ,
                  routes="channel:app=vip/medium,*=default")
    check_redis_export(wc)
    convs = [c["conv"] for c in lines("--redis", wc.addrs[0])]
    # bytes that are not UTF-8 (Redis written by something else than the gateway) become '?',
    # as the archive stores them, rather than breaking the line
    k3 = convs[2]
    rcall(wc, "c:" + k3, "HSET", f"kefu:{{c:{k3}}}:meta", "note", b"bad \xff\xfe 13812345678")
    c3 = lines("--redis", wc.addrs[0], "--no-mask")[2]
    assert c3["conv"] == k3 and c3["meta"]["note"] == "bad ?? 13812345678"
    assert lines("--redis", wc.addrs[0])[2]["meta"]["note"] == "bad ?? 138****5678"
    # a closed conversation whose keys are gone (retention, trim) is skipped, not an error
    k = lines("--redis", wc.addrs[0], "--channel", "app")[0]["conv"]
    rcall(wc, "c:" + k, "DEL", *[f"kefu:{{c:{k}}}:{x}" for x in ("meta", "msgs", "log")])
    assert [c["conv"] for c in lines("--redis", wc.addrs[0], "--channel", "app")] == []


def test_export_from_redis_cluster(spawn):
    """The same on a Redis Cluster of 3 masters, given one node: the day indexes and the
    conversations' keys on the others are reached through the slot map and MOVED."""
    if H.EXTERNAL:
        pytest.skip("starts its own Redis Cluster")
    spawn.use_cluster = True
    wc = wcluster(spawn, workers=1, stats_timezone=TZ,
                  routes="channel:app=vip/medium,*=default")
    check_redis_export(wc)


def test_export_redis_errors():
    r = export("--redis", f"{H.HOST}:{H.free_port()}", check=False)
    assert r.returncode == 3 and "cannot reach Redis" in r.stderr and r.stdout == ""
    r = export("--redis", "localhost:notaport", check=False)
    assert r.returncode == 2 and "--redis must be HOST:PORT" in r.stderr
    r = export("--redis", "localhost:6379", "--db", "postgresql://x/y", check=False)
    assert r.returncode == 2 and "give one source" in r.stderr
    assert "--redis HOST:PORT" in export("--help").stdout


def without_archive_marks(row):
    """A conversation row with the archive's own meta fields (archived_first, archived_at,
    archived_by: written into Redis by the pass, so the archived meta lags behind) taken out."""
    m = row["meta"] if isinstance(row["meta"], dict) else json.loads(row["meta"])
    row["meta"] = {k: v for k, v in m.items() if not k.startswith("archived_")}
    return row


def test_redis_export_equals_archive_export(spawn):
    """The same closed conversations, archived in PostgreSQL (masked at rest) and still in Redis
    (archive_trim_s not yet passed): both sources give the same export, masked or not for what
    the archive does not mask at rest, byte for byte for the messages and events."""
    pg = spawn.postgres()
    wc = wcluster(spawn, workers=1, stats_timezone=TZ, archive_db=pg.url, archive_delay_s=0,
                  archive_trim_s=3600, routes="channel:app=vip/medium,*=default")
    convs, a1, a2 = scripted(wc)

    def archived():
        rows = pg.sql("SELECT conv, rating FROM kefu_conversations")
        return {r[0] for r in rows} == set(convs) and \
            dict(rows)[convs[0]] == "4"
    H.wait_until(archived, timeout=20 * slow(), what="archived, with the rating")
    redis, db = ["--redis", wc.addrs[0]], ["--db", pg.url]
    H.wait_until(lambda: len(export(*redis).stdout.splitlines()) == 3, timeout=10 * slow(),
                 what="the day index")
    for args in (["--what", "messages"], ["--what", "events"],
                 ["--what", "messages", "--format", "csv", "--timezone", TZ],
                 ["--what", "events", "--format", "csv", "--group", "vip"],
                 ["--what", "messages", "--agent", a1, "--channel", "web"]):
        assert export(*redis, *args).stdout == export(*db, *args).stdout, args
    for args in ([], ["--timezone", TZ], ["--channel", "app"], ["--agent", a1]):
        got = [without_archive_marks(c) for c in lines(*redis, *args)]
        want = [without_archive_marks(c) for c in lines(*db, *args)]
        assert got == want, args
    got = [without_archive_marks(r) for r in parse_csv(export(*redis, "--format", "csv").stdout)]
    want = [without_archive_marks(r) for r in parse_csv(export(*db, "--format", "csv").stdout)]
    assert got == want and len(got) == 3
