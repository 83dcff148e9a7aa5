"""A worker killed mid-run: the lifecycle events it had taken are taken over by the other worker
(XAUTOCLAIM), and deadlines it had claimed are handed out again when their lease runs out.
Nothing is lost and no timer fires twice."""

import asyncio
import os
import signal
import time
from collections import Counter

import kefu_harness as H
from kefu_client import connect, run
from worker_helpers import agent_on, open_waiting, rcall, record, wcluster


def pending_by_consumer(wc):
    """Pending events per consumer, over every partition of the lifecycle stream."""
    out = Counter()
    for p in range(H.PARTS):
        summary = rcall(wc, H.EV_TAGS[p], "XPENDING", H.lifecycle_key(p), "workers")
        for name, n in (summary[3] or []):
            out[name] += int(n)
    return out


def test_killed_worker_loses_no_event_and_fires_no_timer_twice(spawn):
    wc = wcluster(spawn, claim_idle_ms=800, claim_interval_ms=200, sla_lease_ms=800,
                  sla_first_response_ms="*=1500", sla_alert_after_ms=600000)
    victim, survivor = wc.workers

    async def body():
        agents = [await agent_on(wc.n1 if i % 2 else wc.n2, max_chats=20) for i in range(4)]
        custs = [await connect(wc.n1 if i % 2 else wc.n2, "customer", "json") for i in range(4)]
        warnings, assigned = Counter(), {}

        def spy(a):
            orig = a._dispatch

            def dispatch(m):
                import json
                f = json.loads(m)
                if f.get("type") == "sla.warning":
                    warnings[f["conv"]] += 1
                elif f.get("type") == "conv.assigned":
                    assert f["conv"] not in assigned, f"{f['conv']} assigned twice"
                    assigned[f["conv"]] = a.user
                orig(m)
            a._dispatch = dispatch
        for a in agents:
            spy(a)

        # the victim freezes while blocked in XREADGROUP: events are delivered to it and stay
        # pending under its name; then it dies
        await asyncio.sleep(0.2)
        os.kill(victim.proc.pid, signal.SIGSTOP)
        convs = []
        for i in range(20):
            convs.append(await open_waiting(custs[i % 4], topic=f"t{i}"))
        H.wait_until(lambda: pending_by_consumer(wc).get(victim.name, 0) > 0, timeout=3,
                     what="events stuck with the frozen worker")
        stuck = pending_by_consumer(wc)[victim.name]
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(5)
        victim.proc.expect_exit = True

        t0 = time.monotonic()
        while len(assigned) < len(convs) and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.05)
        assert set(assigned) == set(convs), f"{len(convs) - len(assigned)} never assigned"
        H.wait_until(lambda: sum(pending_by_consumer(wc).values()) == 0, timeout=5,
                     what="every event acknowledged")
        assert "took over" in survivor.proc.log_text()

        # deadlines a dead worker had claimed: simulated by moving three of them into the
        # firing set, leased as if claimed when due
        members = sorted((m for p in range(H.PARTS)
                          for m in rcall(wc, H.SLA_TAGS[p], "ZRANGE", H.sla_key(p, "timers"), 0, -1)),
                         key=lambda m: int(m.split("|")[5]))   # by due time, as one set was
        taken = [m for m in members if m.split("|")[3] == "0"][:3]
        assert len(taken) == 3, members
        for m in taken:
            due = int(m.split("|")[5])
            p = H.part_of(m.split("|")[0])
            rcall(wc, H.SLA_TAGS[p], "ZREM", H.sla_key(p, "timers"), m)
            rcall(wc, H.SLA_TAGS[p], "ZADD", H.sla_key(p, "firing"), due + 800, m)

        # every first-response deadline passes unanswered: exactly one warning and one
        # recorded breach per conversation
        t0 = time.monotonic()
        while len(warnings) < len(convs) and time.monotonic() - t0 < 8:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)   # room for a second firing, which must not come
        assert set(warnings) == set(convs), f"missing warnings for {set(convs) - set(warnings)}"
        assert max(warnings.values()) == 1, warnings.most_common(3)
        for conv in convs:
            breaches = [e for e in record(wc, conv) if e["ev"] == "sla.breach"]
            assert len(breaches) == 1, (conv, breaches)
        assert all(rcall(wc, H.SLA_TAGS[p], "ZCARD", H.sla_key(p, "firing")) == 0
                   for p in range(H.PARTS))
        reclaimed = {m.split("|")[0] for m in taken}
        late = [int(e["overdue_ms"]) for c in reclaimed for e in record(wc, c)
                if e["ev"] == "sla.breach"]
        assert all(600 <= x < 2000 for x in late), late   # fired once, after the lease
        print(f"{stuck} events taken over; {len(taken)} deadlines reclaimed, late by {late} ms")
    run(body(), timeout=60)
