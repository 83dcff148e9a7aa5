"""stats.get (issue 11): the statistics the worker keeps per local day, read by supervisors and
admins. Each test writes the day keys exactly as the Redis model says (docs/protocol.md,
"Statistics"), from a list of conversations, and checks the answer against values computed by
hand from that same list: rows by day, ISO week, month and in total, for each breakdown;
nearest-rank percentiles; missing days; the top-N order; rates with a zero denominator; both
subprotocols; who may ask; every bad request."""

import asyncio
import math
import random
from collections import Counter, defaultdict
from datetime import date, timedelta

import pytest

import kefu_harness as H
from kefu_client import PROTOS, connect, run

CHANNELS = ["app", "web", "wechat"]
GROUPS = ["sales", "support"]
AGENTS = ["ag-1", "ag-2", "ag-3"]
PRIOS = ["high", "medium", "low"]
CATS = ["complaint", "consultation", "fault", "suggestion"]
TOPICS = ["billing", "delivery", "login", "refund", "退款"]

# Fri 2025-12-26 .. Tue 2026-01-06: Monday 2025-12-29 starts ISO week 2026-W01 (the year's first
# Thursday is January 1st), and the month and the year turn inside it. No keys on two days.
FIRST, LAST = date(2025, 12, 26), date(2026, 1, 6)
MISSING = {date(2025, 12, 28), date(2026, 1, 1)}


def days_between(a, b):
    return [a + timedelta(i) for i in range((b - a).days + 1)]


def tag(d):
    return d.strftime("%Y%m%d")


def r4(num, den):
    """The documented rounding of rates: half up to 4 decimals, None for a zero denominator."""
    return None if den == 0 else math.floor(num / den * 10000 + 0.5) / 10000


def r2(num, den):
    return None if den == 0 else math.floor(num / den * 100 + 0.5) / 100


def mean_ms(total, n):
    return None if n == 0 else (2 * total + n) // (2 * n)


def nearest_rank(values, tenths):
    """ceil(p x n)-th smallest, p in tenths, in integers."""
    if not values:
        return None
    v = sorted(values)
    return v[-(-len(v) * tenths // 10) - 1]


# ---- the scripted conversations, and the keys the worker would have written for them ----

def make_convs():
    rnd = random.Random(11)
    days = [d for d in days_between(FIRST, LAST) if d not in MISSING]
    convs = []
    for i in range(120):
        opened = rnd.choice(days)
        closed = opened + timedelta(rnd.choice([0, 0, 0, 1]))
        if closed > LAST or closed in MISSING:
            closed = opened
        if rnd.random() < 0.1:
            closed = None                       # still open
        res = rnd.choice(["resolved", "resolved", "unresolved", "abandoned"])
        agent = None if res == "abandoned" else rnd.choice(AGENTS)
        c = {"id": f"c{i}", "opened": opened, "closed": closed, "hour": rnd.randrange(24),
             "close_hour": rnd.randrange(24), "channel": rnd.choice(CHANNELS),
             "group": rnd.choice(GROUPS), "agent": agent, "resolution": res,
             "repeat": res == "resolved" and rnd.random() < 0.3,
             "fr": rnd.randint(500, 120000) if agent and rnd.random() < 0.9 else None,
             "ht": rnd.randint(10000, 900000) if agent else None,
             "stars": rnd.randint(1, 5) if agent and rnd.random() < 0.6 else None,
             "priority": rnd.choice(PRIOS + [None]), "met": rnd.random() < 0.7,
             "category": rnd.choice(CATS + [None]), "topic": rnd.choice(TOPICS + [None]),
             "qa": rnd.randint(60, 100) if agent and rnd.random() < 0.3 else None}
        convs.append(c)
    return convs


def write_days(r, counters, frs, days):
    """HSET each day's counter hash and ZADD its first-response sets (after deleting the days'
    keys, so a test may write them again)."""
    for d in days:
        for k in r.call("KEYS", f"kefu:{{st:{tag(d)}}}:*") or []:
            r.call("DEL", k)
    for d, fields in counters.items():
        args = []
        for f, v in fields.items():
            args += [f, v]
        r.call("HSET", f"kefu:{{st:{tag(d)}}}:n", *args)
    for (d, dv), members in frs.items():
        args = []
        for conv, ms in members.items():
            args += [ms, conv]
        r.call("ZADD", f"kefu:{{st:{tag(d)}}}:fr:{dv}", *args)


def seed_convs(r, convs):
    n = defaultdict(Counter)
    fr = defaultdict(dict)
    for c in convs:
        od = c["opened"]
        for dv in ("all|", f"channel|{c['channel']}", f"group|{c['group']}",
                   f"hour|{c['hour']:02d}"):
            n[od][f"opened|{dv}"] += 1
        cd = c["closed"]
        if cd is None:
            continue
        dims = ["all|", f"channel|{c['channel']}", f"group|{c['group']}"]
        staff = dims + ([f"agent|{c['agent']}"] if c["agent"] else [])

        def inc(metric, v, dvs):
            for dv in dvs:
                n[cd][f"{metric}|{dv}"] += v
        inc("closed", 1, staff + [f"hour|{c['close_hour']:02d}"])
        if c["resolution"] == "resolved":
            inc("resolved", 1, staff)
            inc("fcr", 1, staff)
            if c["repeat"]:
                inc("fcr", -1, staff)
        if c["resolution"] == "abandoned":
            inc("abandoned", 1, dims)
        if c["fr"] is not None:
            inc("fr_n", 1, staff)
            inc("fr_ms", c["fr"], staff)
            for dv in staff:
                fr[(cd, dv)][c["id"]] = c["fr"]
        if c["agent"]:
            inc("ht_n", 1, staff)
            inc("ht_ms", c["ht"], staff)
            inc("offered", 1, staff)
        if c["stars"]:
            inc("rated", 1, staff)
            inc("stars_sum", c["stars"], staff)
            inc(f"stars_{c['stars']}", 1, staff)
        if c["priority"]:
            inc("sla_n", 1, ["all|", f"priority|{c['priority']}"])
            inc("sla_met", int(c["met"]), ["all|", f"priority|{c['priority']}"])
        if c["category"]:
            inc("count", 1, [f"category|{c['category']}"])
        if c["topic"]:
            inc("count", 1, [f"topic|{c['topic']}"])
        if c["qa"] is not None:
            inc("qa_n", 1, ["all|", f"agent|{c['agent']}"])
            inc("qa_score", c["qa"], ["all|", f"agent|{c['agent']}"])
    assert not any(d in n for d in MISSING)
    write_days(r, n, fr, days_between(FIRST, LAST))


# ---- the expected answer, computed from the conversations ----

def label(d, by):
    if by == "day":
        return d.isoformat()
    if by == "week":
        y, w, _ = d.isocalendar()
        return f"{y}-W{w:02d}"
    if by == "month":
        return d.strftime("%Y-%m")
    return "total"


def periods(first, last, by):
    out = []
    for d in days_between(first, last):
        if out and out[-1][0] == label(d, by):
            out[-1][2].append(d)
        else:
            out.append((label(d, by), d, [d]))
    return [(lab, ds) for lab, _, ds in out]


def expected_row(convs, lab, days, breakdown, value):
    def of(c):
        return True if breakdown == "all" else c[breakdown] == value
    opened = [c for c in convs if c["opened"] in days and of(c)]
    closed = [c for c in convs if c["closed"] in days and of(c)]
    resolved = [c for c in closed if c["resolution"] == "resolved"]
    fcr = [c for c in resolved if not c["repeat"]]
    fr = [c["fr"] for c in closed if c["fr"] is not None]
    ht = [c["ht"] for c in closed if c["agent"]]
    offered = [c for c in closed if c["agent"]]
    rated = [c["stars"] for c in closed if c["stars"]]
    qa = [c["qa"] for c in closed if c["qa"] is not None]
    row = {
        "period": lab, "from": days[0].isoformat(), "to": days[-1].isoformat(),
        "value": None if breakdown == "all" else value,
        "opened": None if breakdown == "agent" else len(opened),
        "closed": len(closed), "resolved": len(resolved),
        "resolution_rate": r4(len(resolved), len(closed)),
        "abandoned": None if breakdown == "agent" else
        sum(c["resolution"] == "abandoned" for c in closed),
        "fcr": len(fcr), "fcr_rate": r4(len(fcr), len(resolved)),
        "first_response": {"n": len(fr), "mean_ms": mean_ms(sum(fr), len(fr)),
                           "p50_ms": nearest_rank(fr, 5), "p90_ms": nearest_rank(fr, 9)},
        "handling": {"n": len(ht), "mean_ms": mean_ms(sum(ht), len(ht))},
        "satisfaction": {"rated": len(rated), "offered": len(offered),
                         "response_rate": r4(len(rated), len(offered)),
                         "mean": r2(sum(rated), len(rated)),
                         "dist": [rated.count(s) for s in range(1, 6)]},
        "qa": {"n": len(qa), "mean": r2(sum(qa), len(qa))}
        if breakdown in ("all", "agent") else None,
    }
    if breakdown == "channel":
        everyone = sum(c["opened"] in days for c in convs)
        row["share"] = r4(len(opened), everyone)
    return row


def expected_rows(convs, first, last, by, breakdown):
    rows = []
    for lab, days in periods(first, last, by):
        if breakdown == "all":
            rows.append(expected_row(convs, lab, days, "all", None))
            continue
        # a value has a row in a period when something of it was counted there
        seen = {c[breakdown] for c in convs
                if c[breakdown] and (c["closed"] in days or
                                     (breakdown != "agent" and c["opened"] in days))}
        rows += [expected_row(convs, lab, days, breakdown, v) for v in sorted(seen)]
    return rows


def expected_range(convs, top):
    closed = [c for c in convs if c["closed"]]
    sla = []
    for p in PRIOS:
        cs = [c for c in closed if c["priority"] == p]
        if cs:
            met = sum(c["met"] for c in cs)
            sla.append({"priority": p, "n": len(cs), "met": met, "attainment": r4(met, len(cs))})

    def top_of(key):
        cnt = Counter(c[key] for c in closed if c[key])
        ranked = sorted(cnt.items(), key=lambda kv: (-kv[1], kv[0].encode()))
        return [{"value": v, "count": n} for v, n in ranked[:top]]
    hours = [sum(c["hour"] == h for c in convs) for h in range(24)]
    busiest = max(range(24), key=lambda h: (hours[h], -h)) if any(hours) else None
    return {"sla": sla, "categories": top_of("category"), "topics": top_of("topic"),
            "peak_hours": {"counts": hours, "busiest": busiest}}


@pytest.fixture(scope="module")
def scripted(cluster):
    if H.EXTERNAL:
        pytest.skip("writes the statistics keys into the test's Redis")
    convs = make_convs()
    seed_convs(cluster.shards[0], convs)
    return convs


# ---- the scripted days, every period and breakdown ----

@pytest.mark.parametrize("proto", PROTOS)
def test_every_period_and_breakdown(cluster, scripted, proto):
    convs = scripted

    async def body():
        sup = await connect(cluster.n1, "supervisor", proto=proto)
        for by in ("day", "week", "month", "total"):
            for breakdown in ("all", "channel", "group", "agent"):
                a = await sup.ok("stats.get", **{"from": FIRST.isoformat()},
                                 to=LAST.isoformat(), by=by, breakdown=breakdown, top=3)
                want = expected_rows(convs, FIRST, LAST, by, breakdown)
                assert [(r["period"], r["value"]) for r in a["rows"]] == \
                    [(r["period"], r["value"]) for r in want], (by, breakdown)
                for got, exp in zip(a["rows"], want):
                    assert got == exp, (by, breakdown)
                rng = expected_range(convs, 3)
                for k, v in rng.items():
                    assert a[k] == v, (by, breakdown, k)
                assert (a["from"], a["to"], a["by"], a["breakdown"], a["top"]) == \
                    (FIRST.isoformat(), LAST.isoformat(), by, breakdown, 3)
        # the labels by hand: the ISO week of 2025-12-29 is the first of 2026
        a = await sup.ok("stats.get", **{"from": "2025-12-26"}, to="2026-01-06", by="week")
        assert [(r["period"], r["from"], r["to"]) for r in a["rows"]] == [
            ("2025-W52", "2025-12-26", "2025-12-28"), ("2026-W01", "2025-12-29", "2026-01-04"),
            ("2026-W02", "2026-01-05", "2026-01-06")]
        a = await sup.ok("stats.get", **{"from": "2025-12-26"}, to="2026-01-06", by="month")
        assert [(r["period"], r["from"], r["to"]) for r in a["rows"]] == [
            ("2025-12", "2025-12-26", "2025-12-31"), ("2026-01", "2026-01-01", "2026-01-06")]
        # defaults: by day, breakdown all, top 10; a missing day is a row of zeros
        a = await sup.ok("stats.get", **{"from": "2025-12-27"}, to="2025-12-28")
        assert (a["by"], a["breakdown"], a["top"]) == ("day", "all", 10)
        assert [r["period"] for r in a["rows"]] == ["2025-12-27", "2025-12-28"]
        assert a["rows"][1] == expected_row(convs, "2025-12-28", [date(2025, 12, 28)], "all",
                                            None)
        assert a["rows"][1]["closed"] == 0 and a["rows"][1]["resolution_rate"] is None
        # a sub-range counts only its own days
        a = await sup.ok("stats.get", **{"from": "2026-01-02"}, to="2026-01-03", by="total",
                         breakdown="channel")
        assert a["rows"] == expected_rows(convs, date(2026, 1, 2), date(2026, 1, 3), "total",
                                          "channel")
    run(body())


# ---- values written by hand ----

HAND = {
    # 2024-02-27 and 2024-03-02: no keys
    date(2024, 2, 28): {
        "opened|all|": 2, "opened|hour|09": 2, "opened|channel|web": 2,
        "closed|all|": 3, "resolved|all|": 2, "fcr|all|": 1,
        "closed|channel|web": 3, "resolved|channel|web": 2,
        "fr_n|all|": 3, "fr_ms|all|": 600, "fr_n|channel|web": 3, "fr_ms|channel|web": 600,
        "offered|all|": 2, "rated|all|": 1, "stars_sum|all|": 4, "stars_4|all|": 1,
        "count|category|refund": 5, "count|category|billing": 5},
    date(2024, 2, 29): {
        "opened|all|": 1, "opened|hour|14": 2,
        "fr_n|all|": 4, "fr_ms|all|": 100, "fr_n|channel|app": 4, "fr_ms|channel|app": 100,
        "count|category|account": 3},
    date(2024, 3, 1): {
        "count|category|delivery": 1, "count|topic|x": 2, "count|topic|y": 2,
        "count|topic|a b": 1, "sla_n|priority|low": 2, "sla_met|priority|low": 0,
        "sla_n|priority|high": 1, "sla_met|priority|high": 1, "sla_n|priority|p0": 1,
        "sla_met|priority|p0": 1, "closed|hour|03": 7},
}
HAND_FR = {
    (date(2024, 2, 28), "all|"): {"c1": 300, "c2": 100, "c3": 200},
    (date(2024, 2, 28), "channel|web"): {"c1": 300, "c2": 100, "c3": 200},
    (date(2024, 2, 29), "all|"): {"d1": 40, "d2": 10, "d3": 30, "d4": 20},
    (date(2024, 2, 29), "channel|app"): {"d1": 40, "d2": 10, "d3": 30, "d4": 20},
}


@pytest.fixture(scope="module")
def hand(cluster):
    if H.EXTERNAL:
        pytest.skip("writes the statistics keys into the test's Redis")
    write_days(cluster.shards[0], HAND, HAND_FR, days_between(date(2024, 2, 27),
                                                              date(2024, 3, 2)))


def check_hand_answers(sup):
    """The hand-written days' answers (shared with the Redis Cluster test)."""
    async def go():
        rng = {"from": "2024-02-27", "to": "2024-03-02"}
        a = await sup.ok("stats.get", **rng, top=3)
        rows = {r["period"]: r for r in a["rows"]}
        assert list(rows) == ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01",
                              "2024-03-02"]
        zero = rows["2024-02-27"]
        assert zero == rows["2024-03-02"] | {"period": "2024-02-27", "from": "2024-02-27",
                                             "to": "2024-02-27"}
        assert zero == {
            "period": "2024-02-27", "from": "2024-02-27", "to": "2024-02-27", "value": None,
            "opened": 0, "closed": 0, "resolved": 0, "resolution_rate": None, "abandoned": 0,
            "fcr": 0, "fcr_rate": None,
            "first_response": {"n": 0, "mean_ms": None, "p50_ms": None, "p90_ms": None},
            "handling": {"n": 0, "mean_ms": None},
            "satisfaction": {"rated": 0, "offered": 0, "response_rate": None, "mean": None,
                             "dist": [0, 0, 0, 0, 0]},
            "qa": {"n": 0, "mean": None}}
        d28 = rows["2024-02-28"]
        assert (d28["opened"], d28["closed"], d28["resolved"], d28["fcr"]) == (2, 3, 2, 1)
        assert d28["resolution_rate"] == 0.6667 and d28["fcr_rate"] == 0.5
        # three values (odd): p50 is the 2nd smallest, p90 the 3rd
        assert d28["first_response"] == {"n": 3, "mean_ms": 200, "p50_ms": 200, "p90_ms": 300}
        assert d28["satisfaction"] == {"rated": 1, "offered": 2, "response_rate": 0.5,
                                       "mean": 4.0, "dist": [0, 0, 0, 1, 0]}
        # four values (even): p50 the 2nd smallest, p90 the 4th; closed 0: no rates
        d29 = rows["2024-02-29"]
        assert d29["first_response"] == {"n": 4, "mean_ms": 25, "p50_ms": 20, "p90_ms": 40}
        assert d29["closed"] == 0 and d29["resolution_rate"] is None
        assert d29["satisfaction"]["response_rate"] is None
        # over the range, seven values: p50 the 4th (40), p90 the 7th (300)
        t = await sup.ok("stats.get", **rng, by="total")
        assert t["rows"][0]["first_response"] == {"n": 7, "mean_ms": 100, "p50_ms": 40,
                                                  "p90_ms": 300}
        assert (t["rows"][0]["from"], t["rows"][0]["to"]) == ("2024-02-27", "2024-03-02")
        # top 3: by count, then by name
        assert a["categories"] == [{"value": "billing", "count": 5},
                                   {"value": "refund", "count": 5},
                                   {"value": "account", "count": 3}]
        assert a["topics"] == [{"value": "x", "count": 2}, {"value": "y", "count": 2},
                               {"value": "a b", "count": 1}]
        t = await sup.ok("stats.get", **rng, top=1)
        assert t["categories"] == [{"value": "billing", "count": 5}]
        # SLA: known priorities high first, then others by name; met 0 is attainment 0
        assert a["sla"] == [{"priority": "high", "n": 1, "met": 1, "attainment": 1.0},
                            {"priority": "low", "n": 2, "met": 0, "attainment": 0.0},
                            {"priority": "p0", "n": 1, "met": 1, "attainment": 1.0}]
        # peak hours from opened only (not closed); a tie goes to the earlier hour
        want = [0] * 24
        want[9], want[14] = 2, 2
        assert a["peak_hours"] == {"counts": want, "busiest": 9}
        # channel rows and their share of opened; percentiles of the channel's own values
        c = await sup.ok("stats.get", **rng, by="month", breakdown="channel")
        assert [(r["period"], r["value"]) for r in c["rows"]] == [("2024-02", "app"),
                                                                  ("2024-02", "web")]
        app, web = c["rows"]
        assert (app["share"], web["share"]) == (0.0, 0.6667)
        assert app["first_response"] == {"n": 4, "mean_ms": 25, "p50_ms": 20, "p90_ms": 40}
        assert web["first_response"] == {"n": 3, "mean_ms": 200, "p50_ms": 200, "p90_ms": 300}
        assert app["qa"] is None and app["opened"] == 0
        # a range without any key: zero rows for `all`, none for a breakdown, empty tallies
        e = await sup.ok("stats.get", **{"from": "2024-03-02"}, to="2024-03-02", by="week")
        assert [r["period"] for r in e["rows"]] == ["2024-W09"] and e["rows"][0]["closed"] == 0
        e = await sup.ok("stats.get", **{"from": "2024-03-02"}, to="2024-03-02",
                         breakdown="agent")
        assert e["rows"] == [] and e["sla"] == [] and e["categories"] == []
        assert e["peak_hours"] == {"counts": [0] * 24, "busiest": None}
    return go()


@pytest.mark.parametrize("proto", PROTOS)
def test_values_by_hand(cluster, hand, proto):
    async def body():
        sup = await connect(cluster.n2, "admin", proto=proto)
        await check_hand_answers(sup)
    run(body())


def test_year_of_days(cluster, hand):
    """366 days (a leap year) is the longest range: a row per day, missing days zero."""
    async def body():
        sup = await connect(cluster.n1, "supervisor")
        a = await sup.ok("stats.get", **{"from": "2024-01-01"}, to="2024-12-31")
        assert len(a["rows"]) == 366
        assert a["rows"][59]["period"] == "2024-02-29"
        assert a["rows"][59]["first_response"]["n"] == 4
        assert sum(r["opened"] for r in a["rows"]) == 3
        m = await sup.ok("stats.get", **{"from": "2024-01-01"}, to="2024-12-31", by="month")
        assert [r["period"] for r in m["rows"]] == [f"2024-{i:02d}" for i in range(1, 13)]
        assert m["rows"][1]["first_response"] == {"n": 7, "mean_ms": 100, "p50_ms": 40,
                                                  "p90_ms": 300}
    run(body())


def test_too_many_rows(cluster, spawn):
    """An answer holds one row per KiB of outq_max_bytes (1024 by default): more is too_large,
    with the request's req, before or after reading."""
    if H.EXTERNAL:
        pytest.skip("writes the statistics keys into the test's Redis")
    r = cluster.shards[0]
    for day, agents in (("20230601", 1024), ("20230602", 1025)):
        fields = []
        for i in range(agents):
            fields += [f"closed|agent|a{i:04d}", 1]
        r.call("DEL", f"kefu:{{st:{day}}}:n")
        r.call("HSET", f"kefu:{{st:{day}}}:n", *fields)
    small = spawn.gateway(cluster.shards, name="strows", outq_max_bytes=100 * 1024)

    async def body():
        sup = await connect(cluster.n1, "supervisor")
        a = await sup.ok("stats.get", **{"from": "2023-06-01"}, to="2023-06-01",
                         breakdown="agent")
        assert len(a["rows"]) == 1024 and a["rows"][-1]["value"] == "a1023"
        f = await sup.err("too_large", "stats.get", **{"from": "2023-06-02"}, to="2023-06-02",
                          breakdown="agent", _req="big")
        assert "more than 1024 rows" in f["message"] and f["req"] == "big"
        a = await sup.ok("stats.get", **{"from": "2023-06-02"}, to="2023-06-02")
        assert len(a["rows"]) == 1 and a["rows"][0]["closed"] == 0
        # 100 rows on a gateway with 100 KiB: 101 days by day is refused before reading
        sup = await connect(small, "supervisor")
        await sup.ok("stats.get", **{"from": "2023-03-01"}, to="2023-06-08")
        f = await sup.err("too_large", "stats.get", **{"from": "2023-03-01"}, to="2023-06-09")
        assert "more than 100 rows" in f["message"]
    run(body())


# ---- who may ask, and bad requests ----

def test_only_supervisors_and_admins(cluster):
    async def body():
        for role in ("customer", "agent"):
            c = await connect(cluster.n1, role)
            f = await c.err("forbidden", "stats.get", **{"from": "2024-01-01"},
                            to="2024-01-01", _req=f"r-{role}")
            assert f["req"] == f"r-{role}"
        for role in ("supervisor", "admin"):
            c = await connect(cluster.n1, role, proto="msgpack")
            await c.ok("stats.get", **{"from": "2024-01-01"}, to="2024-01-01")
    run(body())


BAD = [
    ({"to": "2024-01-01"}, "missing field 'from'"),
    ({"from": "2024-01-01"}, "missing field 'to'"),
    ({"from": 20240101, "to": "2024-01-01"}, "field 'from' must be a string"),
    ({"from": "2024-13-01", "to": "2024-12-01"}, "field 'from' must be a date YYYY-MM-DD"),
    ({"from": "2023-02-29", "to": "2023-03-01"}, "field 'from' must be a date YYYY-MM-DD"),
    ({"from": "2024/01/01", "to": "2024-01-01"}, "field 'from' must be a date YYYY-MM-DD"),
    ({"from": "2024-1-01", "to": "2024-01-01"}, "field 'from' must be a date YYYY-MM-DD"),
    ({"from": "2024-01-01", "to": "2024-01-+1"}, "field 'to' must be a date YYYY-MM-DD"),
    ({"from": "2024-01-01", "to": "2024-04-31"}, "field 'to' must be a date YYYY-MM-DD"),
    ({"from": "2024-01-01", "to": ""}, "field 'to' is empty"),
    ({"from": "2024-01-02", "to": "2024-01-01"}, "'to' is before 'from'"),
    ({"from": "2025-01-01", "to": "2026-01-02"}, "the range is longer than 366 days"),
    ({"from": "2024-01-01", "to": "2024-01-01", "by": "year"},
     "field 'by' must be day, week, month or total"),
    ({"from": "2024-01-01", "to": "2024-01-01", "by": 7}, "field 'by' must be a string"),
    ({"from": "2024-01-01", "to": "2024-01-01", "breakdown": "topic"},
     "field 'breakdown' must be all, channel, group or agent"),
    ({"from": "2024-01-01", "to": "2024-01-01", "top": 0},
     "field 'top' must be an integer in 1..50"),
    ({"from": "2024-01-01", "to": "2024-01-01", "top": 51},
     "field 'top' must be an integer in 1..50"),
    ({"from": "2024-01-01", "to": "2024-01-01", "top": "5"},
     "field 'top' must be an integer in 1..50"),
]


@pytest.mark.parametrize("proto", PROTOS)
def test_bad_requests(cluster, proto):
    async def body():
        sup = await connect(cluster.n1, "supervisor", proto=proto)
        for i, (fields, message) in enumerate(BAD):
            f = await sup.err("bad_request", "stats.get", _req=f"bad-{i}", **fields)
            assert f["message"] == message and f["req"] == f"bad-{i}", (fields, f)
        # the longest range is fine
        await sup.ok("stats.get", **{"from": "2025-01-01"}, to="2026-01-01", by="total")
    run(body())


# ---- Redis down, Redis Cluster ----

def test_client_gone_mid_request(cluster, spawn, hand):
    """Supervisors who leave right after asking for a year (the close may overtake the reads
    or not): nothing leaks or breaks (the spawned gateway is checked by the sanitizers at exit,
    in an ASan build), and the gateway goes on answering."""
    g = spawn.gateway(cluster.shards, name="stgone")

    async def body():
        for _ in range(5):
            sup = await connect(g, "supervisor")
            await sup.send({"type": "stats.get", "req": 1, "from": "2024-01-01",
                            "to": "2024-12-31", "breakdown": "channel"})
            await sup.close()
        sup = await connect(g, "supervisor")
        a = await sup.ok("stats.get", **{"from": "2024-01-01"}, to="2024-12-31", by="total")
        assert a["rows"][0]["first_response"]["n"] == 7
    run(body())


def test_redis_down_is_unavailable(spawn):
    r = spawn.redis()
    g = spawn.gateway([r], name="stdown", redis_timeout_ms=500)

    async def body():
        sup = await connect(g, "supervisor")
        await sup.ok("stats.get", **{"from": "2024-01-01"}, to="2024-01-31")
        r.stop()
        f = await sup.err("unavailable", "stats.get", **{"from": "2024-01-01"}, to="2024-01-31",
                          _req="down")
        assert f["req"] == "down" and f["retry_ms"] > 0
    run(body())


@pytest.mark.long(8)
def test_on_redis_cluster(spawn):
    """The days' keys live on several masters: each day is read from its own."""
    rc = spawn.redis_cluster(replicas=0)
    g = spawn.gateway(rc.addrs[:1], name="stcl")
    write_days(rc, HAND, HAND_FR, [])
    masters = {rc.master_of(f"kefu:{{st:{tag(d)}}}:n").port for d in HAND}
    assert len(masters) > 1, "the hand-written days share one master: pick other days"

    async def body():
        sup = await connect(g, "supervisor")
        await check_hand_answers(sup)
    run(body())


# ---- with the worker that writes them ----

def test_what_the_worker_counted(spawn):
    """A short real day: the worker counts (in its time zone), stats.get reads the same
    figures the test computes from the conversations' own records."""
    import datetime
    import zoneinfo
    from kefu_client import send_msg
    from worker_helpers import agent_on, meta, open_waiting, wcluster
    tz = zoneinfo.ZoneInfo("Asia/Shanghai")
    wc = wcluster(spawn, workers=1, stats_timezone="Asia/Shanghai", repeat_threshold=0,
                  trend_threshold=0, routes="channel:mail=backoffice,*=default")

    def local_day(ms):
        return datetime.datetime.fromtimestamp(int(ms) / 1000, tz).date()

    async def body():
        agent = await agent_on(wc.n1, max_chats=5)
        web = await connect(wc.n2, "customer", channel="web")
        app = await connect(wc.n2, "customer", channel="app")
        gone = await connect(wc.n1, "customer", channel="mail")  # a group nobody staffs
        k1 = await open_waiting(web, topic="refund")
        await agent.next_push("conv.assigned", conv=k1, timeout=5)
        await send_msg(agent, k1, "hello")
        await agent.ok("conv.close", conv=k1, category="consultation")
        await web.ok("conv.rate", conv=k1, stars=4)
        k2 = await open_waiting(app, topic="login")
        await agent.next_push("conv.assigned", conv=k2, timeout=5)
        await send_msg(agent, k2, "hi")
        await agent.ok("conv.close", conv=k2, resolution="unresolved", category="fault")
        k3 = await open_waiting(gone)
        await gone.ok("conv.close", conv=k3)
        metas = {k: meta(wc, k) for k in (k1, k2, k3)}
        assert metas[k3]["resolution"] == "abandoned", metas[k3]
        days = {local_day(m[f]) for m in metas.values() for f in ("created", "closed_at")}
        assert len(days) == 1, f"the test ran across midnight in Asia/Shanghai: {days}"
        day = days.pop().isoformat()
        frs = {k: int(m["first_response"].split("-")[0]) -
               (int(m["queued_us"]) // 1000 if int(m.get("queued_us", "0")) > 0
                else int(m["created"]))
               for k, m in metas.items() if m.get("first_response")}
        assert set(frs) == {k1, k2}
        frs = {k: max(0, v) for k, v in frs.items()}
        sup = await connect(wc.n1, "supervisor")

        async def settled():
            a = await sup.ok("stats.get", **{"from": day}, to=day)
            r = a["rows"][0]
            return a if (r["closed"], r["satisfaction"]["rated"]) == (3, 1) else None
        for _ in range(100):
            a = await settled()
            if a:
                break
            await asyncio.sleep(0.1)
        assert a, "the worker did not count the day"
        r = a["rows"][0]
        assert (r["period"], r["opened"], r["closed"], r["resolved"], r["abandoned"],
                r["fcr"]) == (day, 3, 3, 1, 1, 1)
        assert r["resolution_rate"] == 0.3333 and r["fcr_rate"] == 1.0
        v = sorted(frs.values())
        assert r["first_response"] == {"n": 2, "mean_ms": (2 * sum(v) + 2) // 4,
                                       "p50_ms": v[0], "p90_ms": v[1]}
        assert r["satisfaction"] == {"rated": 1, "offered": 2, "response_rate": 0.5,
                                     "mean": 4.0, "dist": [0, 0, 0, 1, 0]}
        assert a["categories"] == [{"value": "consultation", "count": 1},
                                   {"value": "fault", "count": 1}]
        assert a["topics"] == [{"value": "login", "count": 1}, {"value": "refund", "count": 1}]
        assert sum(a["peak_hours"]["counts"]) == 3
        c = await sup.ok("stats.get", **{"from": day}, to=day, breakdown="channel")
        assert [(x["value"], x["opened"], x["closed"], x["share"]) for x in c["rows"]] == \
            [("app", 1, 1, 0.3333), ("mail", 1, 1, 0.3333), ("web", 1, 1, 0.3333)]
        g = await sup.ok("stats.get", **{"from": day}, to=day, breakdown="agent")
        assert [(x["value"], x["closed"], x["resolved"], x["first_response"]["n"])
                for x in g["rows"]] == [(agent.user, 2, 1, 2)]
    run(body(), timeout=90)
