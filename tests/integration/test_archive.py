"""The archive (worker/archive.c): closed conversations written to a real PostgreSQL once, with
every message (masked at rest, unmasked live), their record and rating, by one worker at a time
(two workers, a worker killed with SIGKILL while holding claims, the database down for a while),
then trimmed from Redis; without a database, the conversation keys' retention."""

import os
import signal
import subprocess
import time

import pytest

import kefu_harness as H
from kefu_client import connect, run, send_msg
from worker_helpers import agent_on, meta, open_waiting, rcall, record, sanitized, wcluster

PARTS = 8


def slow():
    return 3.0 if sanitized() else 1.0


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout * slow()
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def part_of(conv):
    """The archive partition of a conversation: FNV-1a 64 of its id, modulo 8."""
    h = 0xcbf29ce484222325
    for b in conv.encode():
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h % PARTS


def pending(wc, conv):
    p = part_of(conv)
    return rcall(wc, f"ar:{p}", "ZSCORE", f"kefu:{{ar:{p}}}:pending", conv)


def leases(wc):
    return sum(int(rcall(wc, f"ar:{p}", "ZCARD", f"kefu:{{ar:{p}}}:leases")) for p in range(PARTS))


def wmetrics(w):
    st, body, _ = w.http("/metrics")
    assert st == 200
    return H.Metrics(body)


def archived(pg, convs):
    ids = ",".join(f"'{c}'" for c in convs)
    return {r[0] for r in pg.sql(f"SELECT conv FROM kefu_conversations WHERE conv IN ({ids})")}


def conv_keys(conv):
    return [f"kefu:{{c:{conv}}}:{k}" for k in ("meta", "msgs", "log", "bot")]


async def served(wc, agent, cust, texts, **open_fields):
    """A conversation opened by cust, assigned to agent, with texts from the customer and one
    answer; returns its id."""
    conv = await open_waiting(cust, **open_fields)
    await agent.next_push("conv.assigned", conv=conv, timeout=5 * slow())
    for t in texts:
        await send_msg(cust, conv, t)
    await send_msg(agent, conv, "好的，马上为您处理")
    return conv


def test_archive_masked_rated_reviewed_trimmed(spawn):
    pg = spawn.postgres()
    wc = wcluster(spawn, workers=1, archive_db=pg.url, archive_delay_s=1, archive_trim_s=10,
                  archive_lease_ms=3000)
    w = wc.workers[0]

    async def body():
        agent = await agent_on(wc.n1, name="王芳 13912345678")
        sup = await connect(wc.n2, "supervisor", "json")
        cust = await connect(wc.n2, "customer", "json", name="张三 zhang.san@example.com")
        texts = ["您好，我的手机号是 138-1234-5678，邮箱 zhang.san@example.com",
                 "身份证 11010119900307123X，订单号 A-2026"]
        conv = await served(wc, agent, cust, texts, topic="退款 +86 13812345678")
        still_open = await open_waiting(await connect(wc.n1, "customer", "json"))
        await agent.ok("conv.close", conv=conv, resolution="resolved", category="complaint")

        # archived after archive_delay_s, before the rating: one row, every message, the record
        wait_until(lambda: archived(pg, [conv]), 15, "the first archive pass")
        assert pg.sql(f"SELECT rating, customer, agent, grp, resolution, category, archived_by "
                      f"FROM kefu_conversations WHERE conv = '{conv}'") == \
            [["", cust.user, agent.user, "default", "resolved", "complaint", w.name]]
        m = meta(wc, conv)
        assert int(m["archived_at"]) > 0 and m["archived_first"] == m["archived_at"]
        # how far the database holds the streams: a later pass reads only what came after
        last_id = lambda k: rcall(wc, "c:" + conv, "XREVRANGE", f"kefu:{{c:{conv}}}:{k}", "+",
                                  "-", "COUNT", "1")[0][0]
        assert m["archived_msg_id"] == last_id("msgs") and m["archived_log_id"] == last_id("log")
        # kept for archive_trim_s, then deleted by the worker; the expiry is the backstop
        ttl = int(rcall(wc, "c:" + conv, "PTTL", f"kefu:{{c:{conv}}}:msgs"))
        assert 10000 < ttl <= 10000 + 3600_000, ttl

        # masked at rest, as typed live
        rows = pg.sql(f"SELECT sender, role, name, body FROM kefu_messages WHERE conv = '{conv}' "
                      "ORDER BY id")
        assert [r[0] for r in rows] == [cust.user, cust.user, agent.user]
        assert rows[0][3] == "您好，我的手机号是 138****5678，邮箱 z***@example.com", rows[0]
        assert rows[1][3] == "身份证 110****123X，订单号 A-2026", rows[1]
        assert rows[2][3] == "好的，马上为您处理"
        assert rows[0][2] == "张三 z***@example.com" and rows[2][2] == "王芳 139****5678"
        (name, topic, meta_topic), = pg.sql(
            f"SELECT customer_name, topic, meta->>'topic' FROM kefu_conversations "
            f"WHERE conv = '{conv}'")
        assert (name, topic, meta_topic) == ("张三 z***@example.com", "退款 +861****5678",
                                             "退款 +861****5678")
        h = await sup.ok("history", conv=conv)
        assert [x["text"] for x in h["msgs"]][:2] == texts

        # the rating, after the archive: archived again at once
        await cust.ok("conv.rate", conv=conv, stars=4, comment="回电 13700001111 谢谢")
        wait_until(lambda: pg.sql(f"SELECT rating, rating_comment FROM kefu_conversations "
                                  f"WHERE conv = '{conv}'") == [["4", "回电 137****1111 谢谢"]],
                   10, "the rating in the archive")
        # by a pass of its own, not the trim pass: the keys are still there
        assert rcall(wc, "c:" + conv, "EXISTS", *conv_keys(conv)[:3]) == 3
        wait_until(lambda: meta(wc, conv)["archived_log_id"] == last_id("log"), 5, "the mark")
        assert meta(wc, conv)["archived_log_id"] != m["archived_log_id"]
        assert wmetrics(w).get("kefu_worker_archive_archived_total") == 2
        # a QA review: no lifecycle event; the pass before the trim takes it
        await sup.ok("qa.review", conv=conv, score=90, notes="客户电话 13600001111", tags=["ok"])
        wait_until(lambda: rcall(wc, "c:" + conv, "EXISTS", *conv_keys(conv)) == 0, 20,
                   "the trim")
        assert pg.sql(f"SELECT qa_score, qa_notes, qa_tags, qa_by FROM kefu_conversations "
                      f"WHERE conv = '{conv}'") == [["90", "客户电话 136****1111", "ok", sup.user]]
        evs = pg.sql(f"SELECT ev, actor FROM kefu_events WHERE conv = '{conv}' ORDER BY id")
        assert [e[0] for e in evs] == ["opened", "queued", "assigned", "first_response", "closed",
                                       "rated", "qa_reviewed"], evs
        assert evs[-1][1] == sup.user
        (notes,), = pg.sql(f"SELECT fields->>'notes' FROM kefu_events WHERE conv = '{conv}' "
                           "AND ev = 'qa_reviewed'")
        assert notes == "客户电话 136****1111"
        # several passes, each row once
        assert pg.sql(f"SELECT count(*) FROM kefu_messages WHERE conv = '{conv}'") == [["3"]]
        assert pending(wc, conv) is None and leases(wc) == 0
        mt = wmetrics(w)
        assert mt.get("kefu_worker_archive_archived_total") >= 3
        assert mt.get("kefu_worker_archive_trimmed_total") == 1
        assert mt.get("kefu_worker_archive_db_up") == 1

        # a conversation that was not closed is never archived, even when asked to
        p = part_of(still_open)
        rcall(wc, f"ar:{p}", "ZADD", f"kefu:{{ar:{p}}}:pending", "1", still_open)
        wait_until(lambda: pending(wc, still_open) is None, 10, "the open conversation dropped")
        assert archived(pg, [still_open]) == set()
        assert meta(wc, still_open)["state"] != "closed" and "archived_at" not in meta(wc, still_open)
        assert int(rcall(wc, "c:" + still_open, "PTTL", f"kefu:{{c:{still_open}}}:meta")) == -1
    run(body(), timeout=90)


def close_many(wc, n):
    async def body():
        agent = await agent_on(wc.n1, max_chats=n + 1)
        convs = []
        for i in range(n):
            cust = await connect(wc.n2 if i % 2 else wc.n1, "customer", "json")
            conv = await served(wc, agent, cust, [f"第 {i} 个问题，电话 1381234{i:04d}"])
            await agent.ok("conv.close", conv=conv, resolution="resolved")
            convs.append(conv)
        return convs
    return run(body(), timeout=120)


def assert_once(pg, convs):
    ids = ",".join(f"'{c}'" for c in convs)
    assert pg.sql(f"SELECT count(*), count(DISTINCT conv) FROM kefu_conversations "
                  f"WHERE conv IN ({ids})") == [[str(len(convs)), str(len(convs))]]
    # two messages each, never doubled; the record of each: opened..closed
    assert pg.sql(f"SELECT count(*) FROM kefu_messages WHERE conv IN ({ids})") == \
        [[str(2 * len(convs))]]
    per = pg.sql(f"SELECT conv, count(*) FROM kefu_events WHERE conv IN ({ids}) GROUP BY conv")
    assert len(per) == len(convs) and {c for _, c in per} == {"5"}, per


class TableLock:
    """A psql session holding kefu_conversations in EXCLUSIVE mode: the workers' archive
    statements wait on it (they stay claimed), the test's reads do not."""

    def __init__(self, pg):
        self.pg = pg

    def __enter__(self):
        self.p = subprocess.Popen([str(H.PG_BIN / "psql"), "-X", "-q", "-h", H.HOST, "-p",
                                   str(self.pg.port), "-U", "postgres", "-d", "kefu"],
                                  stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.p.stdin.write("BEGIN; LOCK TABLE kefu_conversations IN EXCLUSIVE MODE;\n")
        self.p.stdin.flush()
        wait_until(lambda: self.pg.sql("SELECT count(*) FROM pg_locks WHERE locktype = "
                                       "'relation' AND mode = 'ExclusiveLock' AND granted")
                   != [["0"]], 10, "the lock")
        return self

    def __exit__(self, *exc):
        self.p.kill()  # the session ends, its transaction with it
        self.p.wait(5)


def db_up(w):
    wait_until(lambda: wmetrics(w).get("kefu_worker_archive_db_up") == 1, 10, "the database")


def test_archive_two_workers_each_once(spawn):
    pg = spawn.postgres()
    wc = wcluster(spawn, workers=2, archive_db=pg.url, archive_delay_s=0, archive_batch=800,
                  archive_lease_ms=30000)
    for w in wc.workers:
        db_up(w)
    with TableLock(pg):
        # both workers poll while the first claims wait on the table: each conversation is
        # claimed once, by one of them. A worker claims again only once its claim is written,
        # so conversations that came due after both claimed (closing 16 can take a few polls on
        # a loaded machine) wait for the lock to go: at least two claims held is what is sure
        convs = close_many(wc, 16)
        wait_until(lambda: leases(wc) >= 2, 10, "claims held")
        time.sleep(2.5)
        assert archived(pg, convs) == set()
    wait_until(lambda: len(archived(pg, convs)) == len(convs), 30, "every conversation archived")
    assert_once(pg, convs)
    # one pass per conversation across the two workers (nothing archived twice)
    wait_until(lambda: sum(wmetrics(w).get("kefu_worker_archive_archived_total")
                           for w in wc.workers) == len(convs), 5, "the counters")
    time.sleep(1.5)
    assert sum(wmetrics(w).get("kefu_worker_archive_archived_total") for w in wc.workers) == \
        len(convs)
    assert all(pending(wc, c) == str(int(meta(wc, c)["archived_first"]) + 604800000)
               for c in convs)
    assert leases(wc) == 0
    assert {r[0] for r in pg.sql("SELECT DISTINCT archived_by FROM kefu_conversations")} <= \
        {w.name for w in wc.workers}


def test_archive_worker_killed_while_holding_claims(spawn):
    pg = spawn.postgres()
    wc = wcluster(spawn, workers=1, archive_db=pg.url, archive_delay_s=0,
                  archive_lease_ms=2000)
    a = wc.workers[0]
    db_up(a)
    with TableLock(pg):
        convs = close_many(wc, 4)
        wait_until(lambda: leases(wc) >= 1, 10, "claims held")
        a.proc.expect_exit = True
        a.proc.stop(signal.SIGKILL)
    # its statement, waiting on the lock, may still commit after it died: the other worker's
    # pass changes nothing then
    b = spawn.worker(wc.shards, name="wk-b", archive_db=pg.url, archive_delay_s=0,
                     archive_lease_ms=2000, offline_grace_ms=60000)
    wait_until(lambda: len(archived(pg, convs)) == len(convs), 20, "archived by the other worker")
    assert_once(pg, convs)
    wait_until(lambda: wmetrics(b).get("kefu_worker_archive_archived_total") >= len(convs), 10,
               "the other worker's passes")
    assert {r[0] for r in pg.sql("SELECT DISTINCT archived_by FROM kefu_conversations")} == \
        {b.name}
    assert leases(wc) == 0


def test_archive_database_down_for_a_while(spawn):
    pg = spawn.postgres()
    wc = wcluster(spawn, workers=1, archive_db=pg.url, archive_delay_s=0)
    w = wc.workers[0]
    db_up(w)
    H.Proc.stop(pg, signal.SIGINT)  # a fast shutdown, the data kept
    convs = close_many(wc, 3)
    wait_until(lambda: wmetrics(w).get("kefu_worker_archive_pending") == 3, 10,
               "three pending")
    time.sleep(2)
    mt = wmetrics(w)
    assert mt.get("kefu_worker_archive_db_up") == 0 and mt.get("kefu_worker_archive_pending") == 3
    assert mt.get("kefu_worker_archive_lag_seconds") >= 1.5
    # the worker stays ready for its other jobs
    assert w.ready()
    pg.start()
    wait_until(lambda: len(archived(pg, convs)) == 3, 20, "archived once the database is back")
    assert_once(pg, convs)
    wait_until(lambda: wmetrics(w).get("kefu_worker_archive_pending") == 0, 5, "nothing pending")
    assert wmetrics(w).get("kefu_worker_archive_lag_seconds") == 0


def postmaster_gone(pg):
    """True once the stopped server's postmaster no longer exists: until then a new one refuses
    to start on its data directory."""
    try:
        pid = int((pg.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
        return False
    except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
        return True


def test_archive_refused_conversation_isolated(spawn):
    """Conversations are written in batches, one statement each; when PostgreSQL refuses a batch
    for one conversation's row, the others of the batch are archived all the same (each written
    again on its own), and the faulty one is logged and held for 10 minutes, then tried again."""
    pg = spawn.postgres()
    wc = wcluster(spawn, workers=1, archive_db=pg.url, archive_delay_s=0)
    w = wc.workers[0]
    db_up(w)
    # the database down while they close: they are claimed together once it is back, one batch
    H.Proc.stop(pg, signal.SIGINT)
    convs = close_many(wc, 4)
    wait_until(lambda: postmaster_gone(pg), 20, "the old postmaster gone")
    wait_until(lambda: wmetrics(w).get("kefu_worker_archive_pending") == 4, 10, "four pending")
    # a QA score out of the column's range (smallint), as a damaged or hand-edited meta holds
    bad = convs[1]
    rcall(wc, "c:" + bad, "HSET", f"kefu:{{c:{bad}}}:meta", "qa_score", "99999")
    pg.start()
    good = set(convs) - {bad}
    wait_until(lambda: archived(pg, convs) == good, 20, "the other three archived")
    assert_once(pg, sorted(good))
    log = w.proc.log_text()
    assert "archive: a batch of 4 conversations refused" in log, log
    line = [ln for ln in log.splitlines() if f"conversation {bad} not archived" in ln]
    assert len(line) == 1 and "out of range for type smallint" in line[0], log
    mt = wmetrics(w)
    assert mt.get("kefu_worker_archive_archived_total") == 3
    assert mt.get("kefu_worker_archive_failures_total") == 1
    # held: still pending, its lease extended by 10 minutes (not handed out again meanwhile)
    p = part_of(bad)
    lease = int(float(rcall(wc, f"ar:{p}", "ZSCORE", f"kefu:{{ar:{p}}}:leases", bad)))
    now = int(time.time() * 1000)
    assert now + 590_000 < lease <= now + 600_000, lease - now
    assert pending(wc, bad) is not None and leases(wc) == 1
    # repaired and the hold over: the next poll archives it, the others are not written again
    rcall(wc, "c:" + bad, "HSET", f"kefu:{{c:{bad}}}:meta", "qa_score", "90")
    rcall(wc, f"ar:{p}", "ZADD", f"kefu:{{ar:{p}}}:leases", "1", bad)
    wait_until(lambda: archived(pg, convs) == set(convs), 10, "the repaired one archived")
    assert_once(pg, convs)
    assert pg.sql(f"SELECT qa_score FROM kefu_conversations WHERE conv = '{bad}'") == [["90"]]
    wait_until(lambda: wmetrics(w).get("kefu_worker_archive_archived_total") == 4, 5,
               "its pass counted")


def test_retention_without_archive(spawn):
    wc = wcluster(spawn, workers=1, retention_days=2)

    async def body():
        agent = await agent_on(wc.n1)
        cust = await connect(wc.n2, "customer", "json")
        conv = await served(wc, agent, cust, ["hello"])
        other = await open_waiting(await connect(wc.n2, "customer", "json"))
        await agent.ok("conv.close", conv=conv)
        closed_at = int(meta(wc, conv)["closed_at"])

        def expiry(k):
            return int(rcall(wc, "c:" + conv, "PEXPIRETIME", k))
        wait_until(lambda: expiry(f"kefu:{{c:{conv}}}:meta") > 0, 10, "the retention")
        for k in conv_keys(conv)[:3]:  # from the close (the lifecycle event's time)
            assert abs(expiry(k) - (closed_at + 2 * 86400_000)) < 1000, k
        # the history stays readable until then; nothing is pending for an archive
        sup = await connect(wc.n1, "supervisor", "json")
        h = await sup.ok("history", conv=conv)
        assert [x["text"] for x in h["msgs"]][0] == "hello"
        assert pending(wc, conv) is None
        assert int(rcall(wc, "c:" + other, "PTTL", f"kefu:{{c:{other}}}:meta")) == -1
        assert [e["ev"] for e in record(wc, conv)][-1] == "closed"
    run(body())


def test_retention_zero_keeps_forever(spawn):
    wc = wcluster(spawn, workers=1, retention_days=0)

    async def body():
        agent = await agent_on(wc.n1)
        cust = await connect(wc.n2, "customer", "json")
        conv = await served(wc, agent, cust, ["hello"])
        await agent.ok("conv.close", conv=conv)
        await cust.ok("conv.rate", conv=conv, stars=5)
        time.sleep(1)
        assert all(int(rcall(wc, "c:" + conv, "PTTL", k)) == -1 for k in conv_keys(conv)[:3])
    run(body())


def test_archive_on_cluster(spawn):
    """The first case on a Redis Cluster (3 masters): the conversation's keys, the archive
    partitions and the lifecycle stream on different slots."""
    if H.EXTERNAL:
        pytest.skip("starts its own Redis Cluster")
    spawn.use_cluster = True
    test_archive_masked_rated_reviewed_trimmed(spawn)


def test_archive_db_malformed_is_refused():
    r = subprocess.run([str(H.find_bin("kefu-worker")), "--archive-db", "host=db nonsense",
                        "--http-port", "0"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "archive_db:" in r.stderr, (r.returncode, r.stderr)
