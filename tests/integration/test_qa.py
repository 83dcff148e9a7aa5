"""QA sampling and reviews: the worker's daily sample of the previous day's closed conversations
(size at a rate, the minimum per agent, reproducible from the seed, stored once whatever the
number of workers), qa.list, and qa.review (stored in the meta, joins the record, counted once in
the QA statistics of the day the conversation closed; a re-review applies the difference).

The worker samples the previous day: its `kefu:{st:D}:closed` and `:agent` keys (written by the
statistics, worker/stats.c) are seeded by hand here, as docs/architecture.md describes them."""

import datetime
import math
import subprocess
import time
import zoneinfo
from pathlib import Path

import pytest

import kefu_harness as H
from kefu_client import connect, run, send_msg
from worker_helpers import agent_on, meta, open_waiting, rcall, record, wcluster

MASK = (1 << 64) - 1
QA_SCRIPT = Path(__file__).resolve().parents[2] / "lua" / "redis" / "qa_count.lua"


def fnv1a(s):
    h = 0xcbf29ce484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def expected_sample(seed, day, agents, rate, min_per_agent):
    """The draw as docs/operations.md defines it, computed here independently: conv -> rank."""
    ranked = sorted(agents, key=lambda c: (fnv1a(f"{seed}|{day}|{c}"), c))
    k = min(len(ranked), max(0, math.ceil(round(rate * len(ranked), 9))))
    picked = set(ranked[:k])
    for a in sorted({a for a in agents.values() if a}):
        have = sum(1 for c in picked if agents[c] == a)
        for c in ranked:
            if have >= min_per_agent:
                break
            if agents[c] == a and c not in picked:
                picked.add(c)
                have += 1
    return {c: ranked.index(c) for c in picked}


def yesterday(tz="UTC"):
    """The previous local day in tz, as (YYYYMMDD, YYYY-MM-DD)."""
    d = datetime.datetime.now(zoneinfo.ZoneInfo(tz)).date() - datetime.timedelta(days=1)
    return d.strftime("%Y%m%d"), d.isoformat()


def far_zone():
    """A zone whose date differs from UTC's right now (UTC-12 before noon UTC, UTC+12 after), so
    a worker that ignored stats_timezone would draw another day."""
    return "Etc/GMT+12" if datetime.datetime.now(datetime.timezone.utc).hour < 12 else "Etc/GMT-12"


def r_(addr, *args):
    return H.redis_call(addr, *args)


def seed_day(addr, d, agents, ttl_s=None):
    """kefu:{st:d}:closed and :agent as the statistics writer leaves them."""
    now = int(time.time() * 1000)
    for i, (conv, agent) in enumerate(agents.items()):
        r_(addr, "ZADD", f"kefu:{{st:{d}}}:closed", now + i, conv)
        r_(addr, "HSET", f"kefu:{{st:{d}}}:agent", conv, agent)
    if ttl_s:
        r_(addr, "EXPIRE", f"kefu:{{st:{d}}}:closed", ttl_s)


def sample_of(addr, d):
    flat = r_(addr, "ZRANGE", f"kefu:{{qa:{d}}}:sample", 0, -1, "WITHSCORES")
    return {flat[i]: int(flat[i + 1]) for i in range(0, len(flat), 2)}


def info_of(addr, d):
    flat = r_(addr, "HGETALL", f"kefu:{{qa:{d}}}:info")
    return dict(zip(flat[::2], flat[1::2]))


def wait_info(addr, d, timeout=10):
    H.wait_until(lambda: info_of(addr, d), timeout=timeout, what=f"QA sample of {d}")
    return info_of(addr, d)


def metric(worker, name):
    st, body, _ = worker.http("/metrics")
    assert st == 200
    return H.Metrics(body).get(name)


QA_OPTS = {"qa_delay_s": 0}


def test_sample_size_minimum_per_agent_and_reproducible(spawn):
    tz = far_zone()
    d, _ = yesterday(tz)
    red = spawn.redis()
    addr = red.addr
    # 40 conversations: a1 closed 25, a2 10, a3 4, one without an agent
    agents = {f"qa{i:02d}": "a1" for i in range(25)}
    agents.update({f"qb{i:02d}": "a2" for i in range(10)})
    agents.update({f"qc{i:02d}": "a3" for i in range(4)})
    agents["qd00"] = ""
    seed_day(addr, d, agents)
    # noise on neighbouring days must not be drawn
    other, _ = yesterday("UTC")
    if other != d:
        seed_day(addr, other, {"zz00": "a1"})

    w1 = spawn.worker([red], name="q1", stats_timezone=tz, qa_rate="0.1", qa_min_per_agent=2,
                      qa_seed="s1", **QA_OPTS)
    info = wait_info(addr, d)
    want = expected_sample("s1", d, agents, 0.1, 2)
    got = sample_of(addr, d)
    assert got == want
    # 4 at random (ceil(0.1 x 40)), then each agent is topped up to 2
    per_agent = {a: sum(1 for c in got if agents[c] == a) for a in ("a1", "a2", "a3")}
    assert all(n >= 2 for n in per_agent.values()), per_agent
    ranked_top4 = sorted(agents, key=lambda c: (fnv1a(f"s1|{d}|{c}"), c))[:4]
    assert len(got) == 4 + sum(max(0, 2 - sum(1 for c in ranked_top4 if agents[c] == a))
                               for a in ("a1", "a2", "a3"))
    assert set(ranked_top4) <= set(got)
    extra = set(got) - set(ranked_top4)
    for c in extra:  # an addition is its agent's best-ranked other, for an agent short of 2
        a = agents[c]
        assert a, c
        assert sum(1 for x in ranked_top4 if agents[x] == a) < 2
    assert (info["n"], info["k"], info["sampled"], info["min_per_agent"]) == \
        ("40", "4", str(len(got)), "2")
    assert info["by"] == w1.name and info["rate"] == "0.1" and int(info["at"]) > 0
    # kept as long as the day's statistics: until the local midnight stats_days (400) days
    # after the day
    start = datetime.datetime(int(d[:4]), int(d[4:6]), int(d[6:]), tzinfo=zoneinfo.ZoneInfo(tz))
    for k in ("sample", "info"):
        expire_at = r_(addr, "EXPIRETIME", f"kefu:{{qa:{d}}}:{k}")
        assert expire_at == int((start + datetime.timedelta(days=401)).timestamp()), (k, expire_at)
    assert r_(addr, "EXISTS", "kefu:{qa:%s}:info" % other) == 0 or other == d
    assert metric(w1, "kefu_worker_qa_samples_total") == 1
    assert metric(w1, "kefu_worker_qa_sampled_total") == len(got)

    # a second worker (another seed and rate even) finds it drawn and changes nothing
    w2 = spawn.worker([red], name="q2", stats_timezone=tz, qa_rate="0.5", qa_min_per_agent=0,
                      qa_seed="other", **QA_OPTS)
    H.wait_until(lambda: "was drawn already" in w2.proc.log_text(), what="second worker's draw")
    assert sample_of(addr, d) == got and info_of(addr, d) == info
    assert metric(w2, "kefu_worker_qa_samples_total") == 0
    w1.stop()
    w2.stop()

    # drawn again from scratch with the same seed: the same sample; another seed: another
    for k in ("info", "sample"):
        r_(addr, "DEL", f"kefu:{{qa:{d}}}:{k}")
    w3 = spawn.worker([red], name="q3", stats_timezone=tz, qa_rate="0.1", qa_min_per_agent=2,
                      qa_seed="s1", **QA_OPTS)
    wait_info(addr, d)
    assert sample_of(addr, d) == got
    w3.stop()
    for k in ("info", "sample"):
        r_(addr, "DEL", f"kefu:{{qa:{d}}}:{k}")
    spawn.worker([red], name="q4", stats_timezone=tz, qa_rate="0.1", qa_min_per_agent=2,
                 qa_seed="s2", **QA_OPTS)
    wait_info(addr, d)
    got2 = sample_of(addr, d)
    assert got2 == expected_sample("s2", d, agents, 0.1, 2) and got2 != got


@pytest.mark.parametrize("n,rate,minimum,size", [
    (20, "0.05", 0, 1),
    (100, "0.07", 0, 7),  # 0.07 x 100 is 7.000000000000001 in binary: 7, not 8
    (41, "0.05", 0, 3),   # ceil(2.05)
    (10, "0", 1, 2),      # the minimum alone: one per agent (two agents)
    (10, "1", 0, 10),
    (0, "0.05", 1, 0),    # nothing closed: the day is stored as drawn, empty
])
def test_sample_size_at_rate(spawn, n, rate, minimum, size):
    d, _ = yesterday()
    red = spawn.redis()
    agents = {f"c{i:03d}": ("x" if i % 2 else "y") for i in range(n)}
    seed_day(red.addr, d, agents)
    spawn.worker([red], name="qs", qa_rate=rate, qa_min_per_agent=minimum, **QA_OPTS)
    info = wait_info(red.addr, d)
    got = sample_of(red.addr, d)
    assert len(got) == size and info["sampled"] == str(size) and info["n"] == str(n)
    assert got == expected_sample("", d, agents, float(rate), minimum)


def test_bad_qa_options():
    for opt in (["--qa-rate", "1.5"], ["--qa-rate", "x"], ["--qa-rate", ""],
                ["--stats-timezone", "Nowhere/Town"]):
        p = subprocess.run([str(H.find_bin("kefu-worker")), "--redis", "127.0.0.1:1", *opt],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (opt, p.stderr)
        assert ("qa_rate" in p.stderr) or ("stats_timezone" in p.stderr), p.stderr


def test_list_review_record_and_statistics(spawn):
    wc = wcluster(spawn, workers=1)
    d, day = yesterday()
    # the worker drew yesterday (nothing) at its start: that draw is done before the seeding
    assert wait_info(wc.addrs[0], d)["n"] == "0"

    async def body():
        agent = await agent_on(wc.n1)
        agent2 = await agent_on(wc.n2)
        sup = await connect(wc.n2, "supervisor", "json")
        admin = await connect(wc.n1, "admin", "json")
        cust = await connect(wc.n1, "customer", "json")
        convs = []
        for i in range(3):
            conv = await open_waiting(cust, topic=f"question {i}")
            p = await cust.next_push("conv.state", conv=conv, state="assigned", timeout=5)
            who = agent if p["agent"] == agent.user else agent2
            await send_msg(who, conv, "hello")
            await who.ok("conv.close", conv=conv)
            convs.append((conv, who.user))
        still_open = await open_waiting(cust, topic="open one")
        late = await open_waiting(cust, topic="not counted")
        await cust.ok("conv.close", conv=late)

        # The statistics writer counted the closes today: move the three to yesterday (the
        # day the worker samples), and take `late` out (in no day's statistics)
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d")
        tkey = f"kefu:{{st:{today}}}:closed"
        H.wait_until(lambda: all(rcall(wc, f"st:{today}", "ZSCORE", tkey, c) is not None
                                 for c in [c for c, _ in convs] + [late]),
                     what="the closes counted by the statistics")
        for c, _ in convs + [(late, "")]:
            rcall(wc, f"st:{today}", "ZREM", tkey, c)
            rcall(wc, f"st:{today}", "HDEL", f"kefu:{{st:{today}}}:agent", c)
        seed_day(wc.addrs[0], d, dict(convs), ttl_s=5000)
        # draw again, everything (the first worker's day is done: it does not draw again)
        for k in ("info", "sample"):
            rcall(wc, f"qa:{d}", "DEL", f"kefu:{{qa:{d}}}:{k}")
        spawn.worker(wc.shards, name="wq", qa_rate="1", qa_min_per_agent=0, **QA_OPTS)
        wait_info(wc.addrs[0], d)

        r = await sup.ok("qa.list", day=day)
        assert (r["day"], r["closed"], r["sampled"], r["min_per_agent"], r["offset"]) == \
            (day, 3, 3, 0, 0)
        assert r["rate"] == 1.0
        assert [c["rank"] for c in r["convs"]] == [0, 1, 2]
        assert {c["conv"] for c in r["convs"]} == {c for c, _ in convs}
        owner = dict(convs)
        for c in r["convs"]:
            m = meta(wc, c["conv"])
            assert (c["agent"], c["channel"], c["ticket"], c["closed_at"], c["review"]) == \
                (owner[c["conv"]], m["channel"], m["ticket"], int(m["closed_at"]), None)
        page = await admin.ok("qa.list", day=day, offset=1, limit=1)
        assert [c["conv"] for c in page["convs"]] == [r["convs"][1]["conv"]]
        assert page["sampled"] == 3

        # a supervisor reads any conversation: its messages and its record
        target, target_agent = convs[0]
        h = await sup.ok("history", conv=target)
        assert [m["text"] for m in h["msgs"]] == ["hello"]
        await sup.ok("conv.record", conv=target)

        def stats():
            """The QA counters of yesterday (the day's other counters are the writer's)."""
            flat = rcall(wc, f"st:{d}", "HGETALL", f"kefu:{{st:{d}}}:n")
            return {k: int(v) for k, v in zip(flat[::2], flat[1::2]) if k.startswith("qa_")}

        # a review: stored, joins the record, counted once on the day the conversation closed
        rv = await sup.ok("qa.review", conv=target, score=80, notes="polite, slow to answer",
                          tags=["tone", "speed"])
        assert (rv["conv"], rv["score"], rv["seq"], rv["day"]) == (target, 80, 1, day)
        m = meta(wc, target)
        assert (m["qa_score"], m["qa_notes"], m["qa_tags"], m["qa_by"], m["qa_seq"]) == \
            ("80", "polite, slow to answer", "tone,speed", sup.user, "1")
        assert int(m["qa_at"]) > 0
        ev = record(wc, target)[-1]
        assert (ev["ev"], ev["by"], ev["score"], ev["seq"], ev["tags"]) == \
            ("qa_reviewed", sup.user, "80", "1", "tone,speed")
        rec = await sup.ok("conv.record", conv=target)
        assert rec["events"][-1]["ev"] == "qa_reviewed" and rec["events"][-1]["score"] == 80
        assert stats() == {"qa_n|all|": 1, "qa_score|all|": 80, f"qa_n|agent|{target_agent}": 1,
                           f"qa_score|agent|{target_agent}": 80}
        # the counters expire with the day's other keys
        assert 0 < rcall(wc, f"st:{d}", "TTL", f"kefu:{{st:{d}}}:n") <= 5000
        assert 0 < rcall(wc, f"st:{d}", "TTL", f"kefu:{{st:{d}}}:qa") <= 5000

        # a re-review replaces it: only the difference is applied
        rv = await admin.ok("qa.review", conv=target, score=60)
        assert (rv["seq"], rv["day"]) == (2, day)
        m = meta(wc, target)
        assert (m["qa_score"], m["qa_notes"], m["qa_tags"], m["qa_by"]) == ("60", "", "", admin.user)
        assert [e["score"] for e in record(wc, target) if e["ev"] == "qa_reviewed"] == ["80", "60"]
        assert stats()["qa_n|all|"] == 1 and stats()["qa_score|all|"] == 60
        # sent again (as after an unavailable answer): still counted once
        await admin.ok("qa.review", conv=target, score=60)
        assert stats()["qa_n|all|"] == 1 and stats()["qa_score|all|"] == 60
        # a statistics step of an older review arriving late changes nothing
        src = QA_SCRIPT.read_text()
        keys = [f"kefu:{{st:{d}}}:{k}" for k in ("closed", "agent", "n", "qa")]
        ans = rcall(wc, f"st:{d}", "EVAL", src, 4, *keys, target, 1, 80)
        assert ans[0] == "D"
        assert stats()["qa_score|all|"] == 60

        second, second_agent = convs[1]
        await sup.ok("qa.review", conv=second, score=95, tags=["great"])
        s = stats()
        assert (s["qa_n|all|"], s["qa_score|all|"]) == (2, 155)
        per = {}
        for c, a in ((target, target_agent), (second, second_agent)):
            per.setdefault(a, [0, 0])
        per[target_agent][0] += 1
        per[target_agent][1] += 60
        per[second_agent][0] += 1
        per[second_agent][1] += 95
        for a, (n, score) in per.items():
            assert (s[f"qa_n|agent|{a}"], s[f"qa_score|agent|{a}"]) == (n, score)

        r = await sup.ok("qa.list", day=day)
        reviews = {c["conv"]: c["review"] for c in r["convs"]}
        assert reviews[second]["score"] == 95 and reviews[second]["tags"] == ["great"]
        assert reviews[second]["by"] == sup.user and reviews[second]["seq"] == 1
        assert reviews[target]["score"] == 60 and reviews[target]["by"] == admin.user
        assert reviews[target]["tags"] == [] and reviews[target]["at"] > 0
        assert reviews[convs[2][0]] is None

        # closed, but its close is in no day's statistics: stored, not counted
        rv = await sup.ok("qa.review", conv=late, score=10)
        assert rv["day"] is None and meta(wc, late)["qa_score"] == "10"
        assert stats()["qa_n|all|"] == 2

        # refusals
        await sup.err("conflict", "qa.review", conv=still_open, score=50)
        await sup.err("not_found", "qa.review", conv="0" * 24, score=50)
        await sup.err("not_found", "qa.list", day="2001-01-01")
        for who in (agent, cust):
            await who.err("forbidden", "qa.list", day=day)
            await who.err("forbidden", "qa.review", conv=target, score=50)
        for bad in ({}, {"day": "20261128"}, {"day": "2026-13-01"}, {"day": "2026-02-30"},
                    {"day": 20261128}, {"day": day, "limit": 0}, {"day": day, "limit": 1001},
                    {"day": day, "offset": -1}):
            await sup.err("bad_request", "qa.list", **bad)
        for bad in ({"conv": target}, {"conv": target, "score": -1}, {"conv": target, "score": 101},
                    {"conv": target, "score": "80"}, {"conv": target, "score": 8.5},
                    {"score": 80}, {"conv": "../x", "score": 80},
                    {"conv": target, "score": 80, "tags": "tone"},
                    {"conv": target, "score": 80, "tags": [f"t{i}" for i in range(11)]},
                    {"conv": target, "score": 80, "tags": ["x" * 33]},
                    {"conv": target, "score": 80, "tags": ["a,b"]},
                    {"conv": target, "score": 80, "tags": [""]},
                    {"conv": target, "score": 80, "tags": [5]},
                    {"conv": target, "score": 80, "notes": 5}):
            await sup.err("bad_request", "qa.review", **bad)
        await sup.err("too_large", "qa.review", conv=target, score=80, notes="n" * 2001)
        # nothing of that reached the review
        assert meta(wc, target)["qa_seq"] == "3" and stats()["qa_score|all|"] == 155
    run(body())
