"""The lifecycle stream and the SLA deadlines in partitions (include/kefu/keys.h): the events of
conversations on many partitions are all handled and acknowledged where they were written, the
deadlines land in their conversation's partition; and a worker of this version drains the single
stream and fires the single timer set that earlier versions left (a rolling upgrade)."""

import time

import kefu_harness as H
from kefu_client import connect, run
from worker_helpers import agent_on, open_waiting, rcall, wcluster


def worker_metrics(w):
    st, body, _ = w.http("/metrics")
    assert st == 200, st
    return H.Metrics(body)


def stream_ids(wc, key, **match):
    out = []
    for _id, kv in rcall(wc, "ev", "XRANGE", key, "-", "+"):
        d = dict(zip(kv[::2], kv[1::2]))
        if all(d.get(k) == v for k, v in match.items()):
            out.append(_id)
    return out


def test_events_of_every_partition_handled(spawn):
    """40 conversations spread over the partitions: each one's opened event is in its own
    partition's stream (and nowhere else), every one is assigned and acknowledged, and each
    first-response deadline waits in its conversation's partition of the timer sets."""
    wc = wcluster(spawn, sla_first_response_ms="*=600000")

    async def body():
        agent = await agent_on(wc.n1, max_chats=50)
        custs = [await connect(wc.n1 if i % 2 else wc.n2, "customer", "json") for i in range(4)]
        convs = [await open_waiting(custs[i % 4], topic=f"t{i}") for i in range(40)]
        got = set()
        deadline = time.monotonic() + 15
        while len(got) < len(convs) and time.monotonic() < deadline:
            f = await agent.next_push("conv.assigned", timeout=deadline - time.monotonic())
            got.add(f["conv"])
        return convs, got
    convs, got = run(body(), timeout=40)
    parts = {c: H.part_of(c) for c in convs}
    assert len(set(parts.values())) >= 10, parts   # 40 ids cover most of the 16
    assert got == set(convs), f"never assigned: {set(convs) - got}"
    for c in convs:
        p = parts[c]
        assert stream_ids(wc, H.lifecycle_key(p), ev="opened", conv=c), (c, p)
        others = [q for q in range(H.PARTS) if q != p
                  if stream_ids(wc, H.lifecycle_key(q), ev="opened", conv=c)]
        assert not others, (c, p, others)
        # the deadline of its assignment, in its partition
        members = rcall(wc, H.SLA_TAGS[p], "ZRANGE", H.sla_key(p, "timers"), 0, -1)
        assert any(m.startswith(c + "|fr|") for m in members), (c, p, members)
    assert rcall(wc, "ev", "EXISTS", H.OLD_LIFECYCLE) == 0   # nothing writes the old stream
    assert rcall(wc, "sla", "EXISTS", "kefu:{sla}:timers") == 0

    def unacked():
        return sum(int(rcall(wc, H.EV_TAGS[p], "XPENDING", H.lifecycle_key(p), "workers")[0])
                   for p in range(H.PARTS))
    H.wait_until(lambda: unacked() == 0, timeout=5, what="every event acknowledged")
    for w in wc.workers:
        m = worker_metrics(w)
        assert m.get("kefu_worker_event_partitions_reading") == H.PARTS
        assert m.get("kefu_worker_old_stream_draining") == 0


def test_upgrade_drains_the_old_stream_and_timer_set(spawn):
    """What a worker of the previous version left: the single stream kefu:{ev}:lifecycle with
    its group, one event read by a worker that died before acknowledging it, events not read
    yet, and deadlines in kefu:{sla}:timers and :firing. A new worker handles every event
    (acknowledged there), takes the dead one's over, keeps reading what an old gateway still
    appends, and fires the old deadlines until both sets are empty."""
    r = spawn.redis()
    now = int(time.time() * 1000)
    old = H.OLD_LIFECYCLE
    r.call("XGROUP", "CREATE", old, "workers", "$", "MKSTREAM")
    # read by the old worker "gone", never acknowledged
    r.call("XADD", old, "*", "ev", "opened", "conv", "c-old-0", "by", "cust", "ts", str(now),
           "group", "g-taken-over")
    assert r.call("XREADGROUP", "GROUP", "workers", "gone", "COUNT", "10", "STREAMS", old, ">")
    # not read by anyone yet
    for i in range(1, 4):
        r.call("XADD", old, "*", "ev", "opened", "conv", f"c-old-{i}", "by", "cust", "ts",
               str(now), "group", f"g-old-{i}")
    # deadlines of conversations gone meanwhile (stale when fired): one due, one due soon, one
    # being fired by the old worker when it died (its lease ran out)
    r.call("ZADD", "kefu:{sla}:timers", str(now - 1000), f"c-old-1|fr|1|0|{now - 1000}|{now - 1000}")
    r.call("ZADD", "kefu:{sla}:timers", str(now + 1500), f"c-old-2|fr|1|0|{now + 1500}|{now + 1500}")
    r.call("ZADD", "kefu:{sla}:firing", str(now - 1), f"c-old-3|fr|1|0|{now - 5000}|{now - 5000}")

    g = spawn.gateway([r], name="up")
    w = spawn.worker([r], name="new", claim_idle_ms=500, claim_interval_ms=200)

    def groups():
        return set(r.call("SMEMBERS", "kefu:{staff}:groups"))
    want = {"g-taken-over", "g-old-1", "g-old-2", "g-old-3"}
    H.wait_until(lambda: want <= groups(), timeout=8, what="the old stream's events handled")
    assert "took over 1 events of kefu:{ev}:lifecycle" in w.proc.log_text()

    # an old gateway still writing during the rolling upgrade
    r.call("XADD", old, "*", "ev", "opened", "conv", "c-old-4", "by", "cust", "ts", str(now),
           "group", "g-late")
    t0 = time.monotonic()
    H.wait_until(lambda: "g-late" in groups(), timeout=5, what="a late event on the old stream")
    assert time.monotonic() - t0 < 2.5   # polled every second

    def drained():
        info = {d[1]: d for d in r.call("XINFO", "GROUPS", old)}["workers"]
        info = dict(zip(info[::2], info[1::2]))
        return int(info["pending"]) == 0 and int(info["lag"]) == 0
    H.wait_until(drained, timeout=5, what="the old stream fully acknowledged")
    H.wait_until(lambda: r.call("ZCARD", "kefu:{sla}:timers") == 0 and
                 r.call("ZCARD", "kefu:{sla}:firing") == 0, timeout=5,
                 what="the old deadlines fired")
    m = worker_metrics(w)
    assert m.get("kefu_worker_events_old_total") == 5
    assert m.get("kefu_worker_sla_timers_stale_total") == 3   # their conversations are gone
    assert m.get("kefu_worker_old_stream_draining") == 1
    # the new gateway writes the partitions only
    async def body():
        c = await connect(g, "customer", "json")
        return await open_waiting(c)
    conv = run(body(), timeout=10)
    assert stream_ids_of(r, H.lifecycle_key(H.part_of(conv)), conv)
    assert not stream_ids_of(r, old, conv)


def stream_ids_of(r, key, conv):
    return [_id for _id, kv in r.call("XRANGE", key, "-", "+")
            if dict(zip(kv[::2], kv[1::2])).get("conv") == conv]
