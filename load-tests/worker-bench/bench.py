#!/usr/bin/python3
"""Worker benchmark: assignment throughput and SLA timer accuracy, against real processes.

Starts a private redis-server, two gateways and W workers (the integration-test harness),
then:

1. Assignment: N conversations wait in G groups while every agent is offline; all agents then
   sign in at once. Throughput = N / (last assigned_at - the moment the first agent signed in),
   both server clocks (the conversations' meta), so client delays do not count.
2. Timer accuracy: nobody answers, so every conversation's first-response deadline
   (assigned_at + FR ms) breaches. Each breach record carries overdue_ms = when the worker
   fired it - the deadline; the sla.warning pushes are also timed on arrival at the agents
   (same host, same clock).

Usage: load-tests/worker-bench/bench.py [--convs N] [--groups G] [--agents A] [--workers W]
       [--fr-ms FR]    (binaries from $KEFU_BIN_DIR, default build/)
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))

import kefu_harness as H  # noqa: E402
from kefu_client import connect, run  # noqa: E402


def pct(values, p):
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--convs", type=int, default=2000)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--agents", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--fr-ms", type=int, default=3000)
    ap.add_argument("--customers", type=int, default=100)
    args = ap.parse_args()
    n, g, na = args.convs, args.groups, args.agents
    # room for everything: the smallest group has na // g agents and n / g conversations
    per_agent = -(-n // g // max(1, na // g)) + 1
    wd = tempfile.mkdtemp(prefix="kefu-wbench-")
    procs = []
    try:
        shards = [H.Redis(wd + "/redis").start()]
        procs += shards
        addrs = [s.addr for s in shards]
        gws = [H.Gateway(wd, addrs, name=f"bg{i}", log_level="warn").start() for i in range(2)]
        procs += gws
        routes = ",".join(f"topic:grp{i}=grp{i}" for i in range(g))
        wks = [H.Worker(wd, shards, name=f"bw{i}", log_level="info", routes=routes,
                        sla_first_response_ms=f"*={args.fr_ms}", sla_alert_after_ms=3600000,
                        assign_batch=100, position_max=0, stats_interval_s=5).start()
               for i in range(args.workers)]
        procs += wks

        async def body():
            agents = []
            for i in range(na):
                a = await connect(gws[i % 2], "agent", "json", skills=[f"grp{i % g}"],
                                  max_chats=per_agent)
                await a.ok("agent.status", status="offline")
                agents.append(a)
            arrivals = {}

            def spy(a):
                orig = a._dispatch

                def dispatch(m):
                    f = json.loads(m)
                    if f.get("type") == "sla.warning":
                        arrivals[f["conv"]] = (time.time() * 1000.0, f["deadline"])
                        return
                    if f.get("type") == "conv.assigned":
                        return
                    orig(m)
                a._dispatch = dispatch
            for a in agents:
                spy(a)
            custs = [await connect(gws[i % 2], "customer", "json") for i in range(args.customers)]
            convs = []

            async def opener(c, k0):
                for k in range(k0, n, len(custs)):
                    r = await c.ok("conv.open", topic=f"grp{k % g} question {k}")
                    convs.append(r["conv"])
            await asyncio.gather(*[opener(c, i) for i, c in enumerate(custs)])
            # all waiting; now every agent signs in at once
            t0 = int(time.time() * 1000)
            await asyncio.gather(*[a.ok("agent.status", status="available") for a in agents])

            def meta_of(conv):
                addr = H.shard_addr(addrs, "c:" + conv)
                return H.redis_call(addr, "HMGET", f"kefu:{{c:{conv}}}:meta", "state",
                                    "assigned_at", "created")
            deadline = time.time() + 120
            while time.time() < deadline:
                await asyncio.sleep(0.5)
                if sum(1 for c in convs[-50:] if meta_of(c)[0] == "assigned") == min(50, n):
                    metas = [meta_of(c) for c in convs]
                    if all(m[0] == "assigned" for m in metas):
                        break
            metas = [meta_of(c) for c in convs]
            done = [int(m[1]) for m in metas if m[0] == "assigned"]
            t_end = max(done)
            rate = len(done) / max(0.001, (t_end - t0) / 1000.0)
            waits = [int(m[1]) - t0 for m in metas if m[0] == "assigned"]
            print(f"assignment: {len(done)}/{n} conversations, {g} groups, {na} agents, "
                  f"{args.workers} workers: {t_end - t0} ms -> {rate:.0f} assignments/s "
                  f"(time to assignment after sign-in p50 {pct(waits, 50)} ms, "
                  f"p99 {pct(waits, 99)} ms)")
            # every deadline breaches: wait for all warnings
            last_deadline = t_end + args.fr_ms
            while time.time() * 1000 < last_deadline + 3000 and len(arrivals) < len(done):
                await asyncio.sleep(0.2)
            entries = [e for p in range(H.PARTS)   # the breach log of every partition
                       for e in H.redis_call(H.shard_addr(addrs, H.SLA_TAGS[p]), "XRANGE",
                                             H.sla_key(p, "breaches"), "-", "+")]
            overdue = [int(dict(zip(kv[::2], kv[1::2]))["overdue_ms"]) for _, kv in entries]
            recv = [at - dl for at, dl in arrivals.values()]
            print(f"timers: {len(overdue)} first-response breaches fired; fired after the "
                  f"deadline by p50 {pct(overdue, 50)} ms, p99 {pct(overdue, 99)} ms, "
                  f"max {max(overdue)} ms; sla.warning received by the agent after the deadline: "
                  f"p50 {pct(recv, 50):.0f} ms, p99 {pct(recv, 99):.0f} ms, "
                  f"max {max(recv):.0f} ms ({len(recv)} pushes); "
                  f"over 100 ms: {sum(1 for x in recv if x > 100)}")
        run(body(), timeout=600)
    finally:
        for p in reversed(procs):
            p.stop()
        print(f"logs in {wd}")


if __name__ == "__main__":
    main()
