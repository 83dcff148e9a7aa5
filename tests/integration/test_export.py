"""kefu-export against a real PostgreSQL archive (sql/kefu-archive.sql) seeded here by hand: date
ranges in a time zone, the channel / group / agent filters, JSON lines and CSV, masking (by
default, even of an archive kept unmasked) and --no-mask, the error exit statuses, and the
backup and restore of docs/operations.md (deploy/kefu-archive-backup, pg_restore into a new
database, the same export byte for byte)."""

import csv
import datetime
import io
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import kefu_harness as H

REPO = Path(__file__).resolve().parents[2]
SCHEMA = (REPO / "sql" / "kefu-archive.sql").read_text()
BACKUP = REPO / "deploy" / "kefu-archive-backup"


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_complete(prefix):
    return next(prefix + str(c) for c in range(10) if luhn_ok(prefix + str(c)))


CARD = luhn_complete("622202123456789")          # 16 digits, a valid card number
PHONE = "13812345678"
ID18 = "11010119900307123X"
ORDER = next(o for o in (f"2026030100012345{d}" for d in range(10)) if not luhn_ok(o))
TEXT1 = f"你好，我的电话是138-1234-5678，备用 +86 {PHONE}，邮箱 zhangsan@example.com"
TEXT2 = f"身份证 {ID18}，银行卡 {CARD}，订单号 {ORDER}"
TEXT_CSV = '含逗号, "引号" 和\n换行的文字'
RAW_FORMS = ["138-1234-5678", PHONE, "zhangsan@example.com", ID18, CARD, "13900001111",
             "lisi@example.org"]


def ms(iso):
    """Unix milliseconds of an ISO 8601 UTC time."""
    return int(datetime.datetime.fromisoformat(iso).timestamp() * 1000)


# conv, channel, group, agent, closed (UTC); created one hour earlier.
CONVS = [
    ("c5", "web", "default", "a1", "2026-02-28T16:30:00+00:00"),   # 03-01 00:30 in Shanghai
    ("c1", "web", "default", "a1", "2026-03-01T10:00:00+00:00"),
    ("c2", "app", "vip", "a2", "2026-03-01T23:30:00+00:00"),       # 03-02 07:30 in Shanghai
    ("c3", "web", "vip", "a1", "2026-03-02T05:00:00+00:00"),
    ("c4", "wechat", "default", "a2", "2026-03-03T12:00:00+00:00"),
    ("c6", "app", "default", "a3", "2026-03-04T00:00:00+00:00"),   # exactly midnight UTC
]
CLOSED = {c[0]: c[4] for c in CONVS}


def q(s):
    return "'" + s.replace("'", "''") + "'"


def seed_sql():
    """INSERTs for the conversations above: c1 carries the personal data, c4 a CSV-hostile
    text; every conversation has 2 messages and 2 record events."""
    out = []
    for conv, ch, grp, agent, closed in CONVS:
        c_ms = ms(closed)
        o_ms = c_ms - 3600_000
        customer = "13900001111" if conv == "c1" else f"u-{conv}"
        cname = "张三" if conv == "c1" else f"客户{conv}"
        meta = {"customer": customer, "customer_name": cname, "channel": ch, "group": grp,
                "agent": agent, "ticket": f"T20260301-{conv}", "created": str(o_ms),
                "closed_at": str(c_ms), "state": "closed", "note": "联系 lisi@example.org"}
        rating = "5" if conv != "c4" else "NULL"
        comment = q("很满意，谢谢") if conv != "c4" else "NULL"
        out.append(
            "INSERT INTO kefu_conversations (conv, ticket, channel, grp, topic, category, "
            "priority, level, customer, customer_name, agent, agent_name, resolution, closed_by, "
            "created_at, assigned_at, first_response_at, closed_at, rating, rating_comment, "
            "rated_at, meta) VALUES ("
            f"{q(conv)}, {q('T20260301-' + conv)}, {q(ch)}, {q(grp)}, '退款', 'after_sales', "
            f"'normal', '0', {q(customer)}, {q(cname)}, {q(agent)}, {q('客服' + agent)}, "
            f"'resolved', {q(agent)}, to_timestamp({o_ms} / 1000.0), "
            f"to_timestamp({o_ms + 60_000} / 1000.0), to_timestamp({o_ms + 120_000} / 1000.0), "
            f"to_timestamp({c_ms} / 1000.0), {rating}, {comment}, "
            f"to_timestamp({c_ms + 5000} / 1000.0), {q(json.dumps(meta, ensure_ascii=False))});")
        texts = [TEXT1, TEXT2] if conv == "c1" else \
            [TEXT_CSV, "好的"] if conv == "c4" else [f"问题 {conv}", "已解决"]
        # ids out of text order (…-10 after …-9) check the numeric stream order
        for i, (mid, text) in enumerate([(f"{o_ms + 120_000}-9", texts[0]),
                                         (f"{o_ms + 120_000}-10", texts[1])]):
            sender, role, name = (customer, "customer", cname) if i == 0 else \
                (agent, "agent", "客服" + agent)
            out.append(
                "INSERT INTO kefu_messages (conv, id, at, sender, role, name, body, cid) VALUES ("
                f"{q(conv)}, {q(mid)}, to_timestamp({o_ms + 120_000} / 1000.0), {q(sender)}, "
                f"{q(role)}, {q(name)}, {q(text)}, 'cid-{i}');")
        for i, (ev, at, by) in enumerate([("opened", o_ms, customer), ("closed", c_ms, agent)]):
            fields = {"ev": ev, "by": by, "ts": str(at)}
            out.append(
                "INSERT INTO kefu_events (conv, id, at, ev, actor, fields) VALUES ("
                f"{q(conv)}, '{at}-0', to_timestamp({at} / 1000.0), {q(ev)}, {q(by)}, "
                f"{q(json.dumps(fields))});")
    return "\n".join(out)


@pytest.fixture(scope="module")
def pg(tmp_path_factory):
    """One PostgreSQL server for the module, its database `kefu` holding the seeded archive."""
    if H.EXTERNAL:
        pytest.skip("needs process control (KEFU_TEST_GATEWAY is set)")
    server = H.Postgres(tmp_path_factory.mktemp("export-pg")).start()
    try:
        server.sql(SCHEMA)
        server.sql(seed_sql())
        yield server
    finally:
        server.stop()


def export(pg, *args, db=None, env=None, check=True):
    """Runs kefu-export; returns the CompletedProcess (stdout as text)."""
    e = H.child_env()
    e.update(env or {})
    argv = [str(H.find_bin("kefu-export"))]
    if db is not False:
        argv += ["--db", db or pg.url]
    r = subprocess.run(argv + list(args), capture_output=True, env=e, timeout=60)
    r.stdout = r.stdout.decode("utf-8")
    r.stderr = r.stderr.decode("utf-8")
    assert "Sanitizer" not in r.stderr and "runtime error" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, f"kefu-export {args}: {r.returncode}: {r.stderr}"
    return r


def lines(pg, *args, **kw):
    return [json.loads(line) for line in export(pg, *args, **kw).stdout.splitlines()]


def convs(pg, *args, **kw):
    return [c["conv"] for c in lines(pg, *args, **kw)]


def db_url(pg, name):
    return f"postgresql://postgres@{H.HOST}:{pg.port}/{name}"


# ---- ranges and time zones ----

def test_range_utc_days(pg):
    assert convs(pg) == ["c5", "c1", "c2", "c3", "c4", "c6"]
    assert convs(pg, "--from", "2026-03-01", "--to", "2026-03-01") == ["c1", "c2"]
    assert convs(pg, "--from", "2026-03-02") == ["c3", "c4", "c6"]
    # closed at exactly 2026-03-04T00:00Z: the first instant of the 4th, not the 3rd
    assert convs(pg, "--to", "2026-03-03") == ["c5", "c1", "c2", "c3", "c4"]
    assert convs(pg, "--from", "2026-03-04", "--to", "2026-03-04") == ["c6"]
    assert convs(pg, "--from", "2026-03-10") == []


def test_range_in_time_zone(pg):
    # 23:30 UTC on the 1st is 07:30 on the 2nd in Shanghai; 16:30 UTC on 02-28 is the 1st there
    sh = ["--timezone", "Asia/Shanghai"]
    assert convs(pg, *sh, "--from", "2026-03-01", "--to", "2026-03-01") == ["c5", "c1"]
    assert convs(pg, *sh, "--from", "2026-03-02", "--to", "2026-03-02") == ["c2", "c3"]
    assert convs(pg, "--timezone", "+08:00", "--from", "2026-03-02", "--to", "2026-03-02") \
        == ["c2", "c3"]
    # midnight UTC on the 4th is still the 3rd in New York (UTC-5 in March before the 8th)
    assert convs(pg, "--timezone", "America/New_York", "--from", "2026-03-03",
                 "--to", "2026-03-03") == ["c4", "c6"]
    c2 = next(c for c in lines(pg, *sh) if c["conv"] == "c2")
    assert c2["closed_at"] == "2026-03-02T07:30:00.000+08:00"
    assert c2["created_at"] == "2026-03-02T06:30:00.000+08:00"
    c2 = next(c for c in lines(pg) if c["conv"] == "c2")
    assert c2["closed_at"] == "2026-03-01T23:30:00.000+00:00"
    assert c2["rated_at"] == "2026-03-01T23:30:05.000+00:00"
    assert c2["messages"][0]["at"] == "2026-03-01T22:32:00.000+00:00"


# ---- filters ----

def test_filters(pg):
    assert convs(pg, "--channel", "web") == ["c5", "c1", "c3"]
    assert convs(pg, "--channel", "web,app") == ["c5", "c1", "c2", "c3", "c6"]
    assert convs(pg, "--channel", "web", "--channel", "wechat") == ["c5", "c1", "c3", "c4"]
    assert convs(pg, "--group", "vip") == ["c2", "c3"]
    assert convs(pg, "--agent", "a2") == ["c2", "c4"]
    assert convs(pg, "--agent", "a2,a3") == ["c2", "c4", "c6"]
    assert convs(pg, "--channel", "web", "--group", "vip") == ["c3"]
    assert convs(pg, "--channel", "web", "--agent", "a2") == []
    assert convs(pg, "--group", "default", "--from", "2026-03-03") == ["c4", "c6"]
    assert convs(pg, "--channel", "nosuch") == []
    # the filters apply to messages and events alike
    rows = lines(pg, "--what", "messages", "--group", "vip")
    assert [(m["conv"], m["id"].split("-")[1]) for m in rows] == \
        [("c2", "9"), ("c2", "10"), ("c3", "9"), ("c3", "10")]


# ---- formats ----

def test_jsonl_nested(pg):
    rows = lines(pg, "--no-mask")
    assert len(rows) == 6
    c1 = next(c for c in rows if c["conv"] == "c1")
    assert c1["ticket"] == "T20260301-c1" and c1["channel"] == "web"
    assert c1["group"] == "default" and c1["agent"] == "a1" and c1["agent_name"] == "客服a1"
    assert c1["customer_name"] == "张三" and c1["topic"] == "退款"
    assert c1["rating"] == 5 and c1["rating_comment"] == "很满意，谢谢"
    assert c1["qa_score"] is None and c1["qa_at"] is None
    assert c1["meta"]["ticket"] == "T20260301-c1"
    # messages in stream order (…-9 before …-10), events likewise
    assert [m["text"] for m in c1["messages"]] == [TEXT1, TEXT2]
    assert [m["from"] for m in c1["messages"]] == ["13900001111", "a1"]
    assert [m["role"] for m in c1["messages"]] == ["customer", "agent"]
    assert c1["messages"][0]["cid"] == "cid-0"
    assert [e["ev"] for e in c1["events"]] == ["opened", "closed"]
    assert c1["events"][1]["by"] == "a1"
    assert c1["events"][1]["fields"] == {"ev": "closed", "by": "a1",
                                         "ts": str(ms(CLOSED["c1"]))}
    # every conversation has only its own messages and events
    for c in rows:
        assert len(c["messages"]) == 2 and len(c["events"]) == 2, c["conv"]
    # UTF-8 as it is, not \u escapes
    out = export(pg, "--no-mask").stdout
    assert "你好，我的电话是" in out


def test_jsonl_messages_and_events(pg):
    msgs = lines(pg, "--what", "messages", "--no-mask", "--channel", "wechat")
    assert [m["text"] for m in msgs] == [TEXT_CSV, "好的"]
    assert msgs[0]["conv"] == "c4" and msgs[0]["ticket"] == "T20260301-c4"
    assert msgs[0]["agent"] == "a2" and msgs[0]["from"] == "u-c4"
    evs = lines(pg, "--what", "events", "--agent", "a3")
    assert [(e["conv"], e["ev"]) for e in evs] == [("c6", "opened"), ("c6", "closed")]
    assert evs[0]["at"] == "2026-03-03T23:00:00.000+00:00"


def parse_csv(text):
    return list(csv.DictReader(io.StringIO(text, newline="")))


def test_csv(pg):
    out = export(pg, "--format", "csv", "--no-mask").stdout
    assert out.startswith("conv,ticket,channel,group,topic,")
    assert out.endswith("\r\n") and "\r\n" in out
    rows = parse_csv(out)
    assert [r["conv"] for r in rows] == ["c5", "c1", "c2", "c3", "c4", "c6"]
    c1 = rows[1]
    assert c1["customer_name"] == "张三" and c1["rating"] == "5"
    assert c1["messages"] == "2" and c1["events"] == "2"
    assert c1["closed_at"] == "2026-03-01T10:00:00.000+00:00"
    assert json.loads(c1["meta"])["note"] == "联系 lisi@example.org"
    c4 = rows[4]
    assert c4["rating"] == "" and c4["rating_comment"] == ""   # NULL: empty
    msgs = parse_csv(export(pg, "--format", "csv", "--what", "messages", "--no-mask").stdout)
    assert list(msgs[0].keys()) == ["conv", "ticket", "channel", "group", "agent", "id", "at",
                                    "from", "role", "name", "text", "cid"]
    assert len(msgs) == 12
    # a comma, quotes and a newline survive the quoting
    c4m = [m for m in msgs if m["conv"] == "c4"]
    assert c4m[0]["text"] == TEXT_CSV and c4m[1]["text"] == "好的"
    assert [m["text"] for m in msgs if m["conv"] == "c1"] == [TEXT1, TEXT2]
    evs = parse_csv(export(pg, "--format", "csv", "--what", "events",
                           "--timezone", "Asia/Shanghai", "--channel", "app").stdout)
    assert [(e["conv"], e["ev"]) for e in evs] == \
        [("c2", "opened"), ("c2", "closed"), ("c6", "opened"), ("c6", "closed")]
    assert evs[1]["at"] == "2026-03-02T07:30:00.000+08:00"
    assert json.loads(evs[1]["fields"])["ev"] == "closed"


# ---- masking ----

def test_masked_by_default(pg):
    for args in ([], ["--format", "csv"], ["--what", "messages"],
                 ["--what", "messages", "--format", "csv"], ["--what", "events"]):
        out = export(pg, *args).stdout
        for raw in RAW_FORMS:
            assert raw not in out, (args, raw)
    c1 = next(c for c in lines(pg) if c["conv"] == "c1")
    t1, t2 = (m["text"] for m in c1["messages"])
    assert t1.startswith("你好，我的电话是138****5678，") and "z***@example.com" in t1
    assert "****5678" in t1.split("备用")[1]
    assert f"身份证 {ID18[:3]}****{ID18[-4:]}" in t2
    assert f"银行卡 {CARD[:4]}****{CARD[-4:]}" in t2
    assert f"订单号 {ORDER}" in t2     # 17 digits failing the Luhn check: left as it is
    assert c1["customer"] == "139****1111" and c1["messages"][0]["from"] == "139****1111"
    assert c1["events"][0]["by"] == "139****1111"
    assert c1["customer_name"] == "张三"
    # inside meta and record fields: texts masked, times and tickets kept
    assert c1["meta"]["customer"] == "139****1111"
    assert c1["meta"]["note"] == "联系 l***@example.org"
    assert c1["meta"]["created"] == str(ms(CLOSED["c1"]) - 3600_000)
    assert c1["meta"]["ticket"] == "T20260301-c1"
    assert c1["events"][0]["fields"]["by"] == "139****1111"
    assert c1["events"][1]["fields"]["ts"] == str(ms(CLOSED["c1"]))


def test_no_mask(pg):
    out = export(pg, "--no-mask").stdout
    for raw in RAW_FORMS:
        assert raw in out, raw
    c1 = next(c for c in lines(pg, "--no-mask") if c["conv"] == "c1")
    assert c1["customer"] == "13900001111" and c1["meta"]["note"] == "联系 lisi@example.org"


def test_masking_is_idempotent_on_masked_archive(pg):
    """An archive kept masked (the worker's default) exports the same with or without
    masking again."""
    masked = export(pg, "--channel", "web").stdout
    pg.sql("CREATE DATABASE kefu_masked")
    try:
        url = db_url(pg, "kefu_masked")
        pg.sql(SCHEMA, db="kefu_masked")
        c1 = next(c for c in lines(pg, "--channel", "web") if c["conv"] == "c1")
        pg.sql(
            "INSERT INTO kefu_conversations (conv, customer, created_at, closed_at, meta) "
            f"VALUES ('c1', {q(c1['customer'])}, now(), now(), '{{}}');"
            "INSERT INTO kefu_messages (conv, id, at, sender, role, body) VALUES "
            f"('c1', '1-9', now(), 'x', 'customer', {q(c1['messages'][0]['text'])}),"
            f"('c1', '1-10', now(), 'y', 'agent', {q(c1['messages'][1]['text'])});",
            db="kefu_masked")
        again = lines(pg, db=url)[0]
        plain = lines(pg, "--no-mask", db=url)[0]
        assert again["messages"] == plain["messages"] and again["customer"] == plain["customer"]
        assert [m["text"] for m in again["messages"]] == [m["text"] for m in c1["messages"]]
    finally:
        pg.sql("DROP DATABASE kefu_masked", db="postgres")
    assert masked == export(pg, "--channel", "web").stdout


# ---- output file ----

def test_output_file(pg, tmp_path):
    path = tmp_path / "out.csv"
    r = export(pg, "--format", "csv", "-o", str(path))
    assert r.stdout == ""
    assert path.read_bytes() == export(pg, "--format", "csv").stdout.encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    # replaced when the export succeeds, left as it was when it fails
    path.write_text("old")
    r = export(pg, "--channel", "wechat", "-o", str(path))
    assert [json.loads(line)["conv"] for line in path.read_text().splitlines()] == ["c4"]
    path.write_text("old")
    r = export(pg, "-o", str(path), db=f"postgresql://postgres@{H.HOST}:{H.free_port()}/kefu",
               check=False)
    assert r.returncode == 3 and path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


# ---- errors ----

def test_errors(pg, tmp_path):
    def status(*args, **kw):
        r = export(pg, *args, check=False, **kw)
        assert r.stdout == "", args
        return r.returncode, r.stderr

    assert export(pg, "--help", db=False).stdout.startswith("Usage: kefu-export")
    rc, err = status("--from", "2026-02-30")
    assert rc == 2 and "--from must be a date" in err
    rc, err = status("--to", "2026/03/01")
    assert rc == 2 and "--to must be a date" in err
    rc, err = status("--from", "2026-03-05", "--to", "2026-03-01")
    assert rc == 2 and "reversed" in err
    rc, err = status("--timezone", "Mars/Olympus")
    assert rc == 2 and "time zone" in err
    rc, err = status("--format", "xml")
    assert rc == 2 and "--format" in err
    rc, err = status("--what", "ratings")
    assert rc == 2 and "--what" in err
    rc, err = status("--bogus")
    assert rc == 2 and "unknown option" in err
    rc, err = status(db=False)
    assert rc == 2 and "KEFU_ARCHIVE_DB" in err
    # the environment variable stands in for --db
    assert export(pg, db=False, env={"KEFU_ARCHIVE_DB": pg.url}).stdout == export(pg).stdout
    # unreachable: nothing listens there; a database that does not exist
    rc, err = status(db=f"postgresql://postgres@{H.HOST}:{H.free_port()}/kefu")
    assert rc == 3 and "cannot reach the archive database" in err
    rc, err = status(db=db_url(pg, "nosuchdb"))
    assert rc == 3 and "nosuchdb" in err
    # a database without the archive's tables; one of a newer schema
    pg.sql("CREATE DATABASE kefu_empty")
    try:
        rc, err = status(db=db_url(pg, "kefu_empty"))
        assert rc == 4 and "kefu_schema" in err
        pg.sql(SCHEMA, db="kefu_empty")
        pg.sql("DROP TABLE kefu_events", db="kefu_empty")
        rc, err = status(db=db_url(pg, "kefu_empty"))
        assert rc == 4 and "no table kefu_events" in err
        pg.sql(SCHEMA + "UPDATE kefu_schema SET version = 99;", db="kefu_empty")
        rc, err = status(db=db_url(pg, "kefu_empty"))
        assert rc == 4 and "version 99" in err
    finally:
        pg.sql("DROP DATABASE kefu_empty", db="postgres")
    # a user without the right to read the archive: a database error
    pg.sql("CREATE ROLE kefu_noread LOGIN")
    try:
        rc, err = status(db=f"postgresql://kefu_noread@{H.HOST}:{pg.port}/kefu")
        assert rc == 5 and "permission denied" in err
    finally:
        pg.sql("DROP ROLE kefu_noread")
    # an output that cannot be written: nothing left behind
    rc, err = status("-o", str(tmp_path / "no" / "such" / "dir.jsonl"))
    assert rc == 6 and "no/such" in err
    rc, err = status("-o", "/dev/full")
    assert rc == 6
    assert list(tmp_path.iterdir()) == []


# ---- backups and restore ----

def test_backup_and_restore(pg, tmp_path):
    """docs/operations.md, "Archive: backups and restore": the daily dump, then pg_restore into
    a new database gives the same export, byte for byte."""
    env = H.child_env()
    env["PATH"] = f"{H.PG_BIN}:{env['PATH']}"
    env["KEFU_ARCHIVE_DB"] = pg.url
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    # expired dumps (15 days old with a retention of 14) go, a recent one and others stay
    old = dumps / "kefu-archive-20260101T031500Z.dump"
    recent = dumps / "kefu-archive-20260120T031500Z.dump"
    other = dumps / "notes.txt"
    for p in (old, recent, other):
        p.write_text("x")
    os.utime(old, (time.time() - 15 * 86400,) * 2)
    os.utime(recent, (time.time() - 13 * 86400,) * 2)
    os.utime(other, (time.time() - 30 * 86400,) * 2)
    r = subprocess.run([str(BACKUP), str(dumps), "14"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    dump = Path(out[0])
    assert dump.parent == dumps and dump.name.startswith("kefu-archive-") and dump.stat().st_size
    assert out[1:] == [f"removed {old}"]
    assert sorted(p.name for p in dumps.iterdir()) == sorted([dump.name, recent.name, other.name])

    before = {}
    variants = [(), ("--no-mask",), ("--format", "csv", "--timezone", "Asia/Shanghai"),
                ("--what", "messages", "--format", "csv", "--no-mask"), ("--what", "events")]
    for args in variants:
        before[args] = export(pg, *args).stdout.encode()

    # the restore procedure
    pg.sql("CREATE DATABASE kefu_restored")
    try:
        r = subprocess.run([str(H.PG_BIN / "pg_restore"), "--no-owner", "--exit-on-error",
                            "-h", H.HOST, "-p", str(pg.port), "-U", "postgres",
                            "-d", "kefu_restored", str(dump)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        url = db_url(pg, "kefu_restored")
        for args in variants:
            after = export(pg, *args, db=url).stdout.encode()
            assert after == before[args], args
        assert before[()].count(b"\n") == 6
    finally:
        pg.sql("DROP DATABASE kefu_restored", db="postgres")


def test_backup_errors(pg, tmp_path):
    env = H.child_env()
    env["PATH"] = f"{H.PG_BIN}:{env['PATH']}"
    r = subprocess.run([str(BACKUP), str(tmp_path)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "KEFU_ARCHIVE_DB" in r.stderr
    env["KEFU_ARCHIVE_DB"] = pg.url
    r = subprocess.run([str(BACKUP), str(tmp_path), "0"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and "1 day or more" in r.stderr
    # a failed dump leaves no file and removes no old dump
    old = tmp_path / "kefu-archive-20200101T000000Z.dump"
    old.write_text("x")
    os.utime(old, (time.time() - 100 * 86400,) * 2)
    env["KEFU_ARCHIVE_DB"] = f"postgresql://postgres@{H.HOST}:{H.free_port()}/kefu"
    r = subprocess.run([str(BACKUP), str(tmp_path), "14"], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode != 0 and r.returncode != 2
    assert list(tmp_path.iterdir()) == [old]


# ---- streaming ----

def max_rss_kb(pg, *args, db):
    """Runs kefu-export into /dev/null; returns its peak resident size in KiB (VmHWM, read
    while it runs: a child's ru_maxrss would count the Python process it was forked from)."""
    env = H.child_env()
    # freed memory stays in AddressSanitizer's quarantine (256 MB by default): keep it small
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=4"
    exe = str(H.find_bin("kefu-export"))
    p = subprocess.Popen([exe, "--db", db, "-o", "/dev/null", *args], env=env,
                         stderr=subprocess.PIPE)
    peak = 0
    while p.poll() is None:
        try:
            status = Path(f"/proc/{p.pid}/status").read_text()
            if Path(f"/proc/{p.pid}/exe").resolve() == Path(exe).resolve():
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
        except (OSError, IndexError):
            pass
        time.sleep(0.002)
    err = p.stderr.read().decode()
    p.stderr.close()
    assert p.returncode == 0, err
    assert peak > 0
    return peak


def test_streams_in_bounded_memory(pg):
    """40 000 messages (about 26 MB of JSON lines): the export's memory does not grow with the
    range, since rows come through cursors in batches (reading them all at once costs about
    43 MB more; the sanitizers' shadow and quarantine about 9 MB)."""
    pg.sql("CREATE DATABASE kefu_big")
    try:
        pg.sql(SCHEMA, db="kefu_big")
        pg.sql("INSERT INTO kefu_conversations (conv, customer, created_at, closed_at, meta) "
               "SELECT 'b' || g, 'u' || g, timestamptz '2026-03-01' + g * interval '1 s', "
               "timestamptz '2026-03-01' + g * interval '1 s' + interval '1 min', "
               "'{\"state\": \"closed\"}' FROM generate_series(1, 2000) g;"
               "INSERT INTO kefu_messages (conv, id, at, sender, role, body) "
               "SELECT 'b' || g, (1772323200000 + g * 1000) || '-' || k, now(), 'u' || g, "
               "'customer', repeat('客服消息', 50) FROM generate_series(1, 2000) g, "
               "generate_series(1, 20) k;", db="kefu_big")
        url = db_url(pg, "kefu_big")
        n = len(export(pg, db=url).stdout.encode())
        assert n > 25_000_000
        empty = max_rss_kb(pg, "--to", "2026-02-01", db=url)
        for args in ((), ("--format", "csv", "--what", "messages")):
            full = max_rss_kb(pg, *args, db=url)
            assert full - empty < 16 * 1024, (args, empty, full)
    finally:
        pg.sql("DROP DATABASE kefu_big", db="postgres")
