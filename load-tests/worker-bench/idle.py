"""What reading the lifecycle stream's partitions costs a worker: the Redis commands one idle
worker causes per second (INFO's total_commands_processed over 10 s, minus what the gateway
alone causes: script-internal commands count too), and the time from conv.open answered to the
agent's conv.assigned push (the opened event wakes the assignment: assign_interval_ms is 60 s so
the periodic rounds do not). On one stand-alone redis-server and on a 3-master cluster.

Usage: load-tests/worker-bench/idle [standalone] [cluster]   (KEFU_BIN_DIR: default build/)"""

import asyncio
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))

import kefu_harness as H  # noqa: E402
from kefu_client import connect  # noqa: E402


def commands(addrs):
    return sum(int(H.redis_call(a, "INFO", "stats").split("total_commands_processed:")[1].split()[0])
               for a in addrs)


def per_second(addrs, secs=10):
    c0 = commands(addrs)
    time.sleep(secs)
    return (commands(addrs) - c0) / secs


async def latencies(g, n=30):
    agent = await connect(g, "agent", "json", skills=["default"], max_chats=100)
    await agent.ok("agent.status", status="available")
    cust = await connect(g, "customer", "json")
    out = []
    for _ in range(n):
        r = await cust.ok("conv.open")
        t0 = time.monotonic()
        await agent.next_push("conv.assigned", conv=r["conv"], timeout=5)
        out.append((time.monotonic() - t0) * 1000)
        await asyncio.sleep(0.05)
    return sorted(out)


def measure(kind):
    wd = tempfile.mkdtemp(prefix="kefu-idle-")
    procs = []
    try:
        if kind == "cluster":
            rc = H.RedisCluster(wd + "/rc")
            procs += rc.nodes
            rc.start()
            addrs = rc.addrs[:3]
        else:
            r = H.Redis(wd + "/r").start()
            procs.append(r)
            addrs = [r.addr]
        g = H.Gateway(wd, addrs, name="idle").start()
        procs.append(g)
        w = H.Worker(wd, addrs, name="idle-w", assign_interval_ms=60000, log_level="warn").start()
        procs.append(w)
        time.sleep(2)
        both = per_second(addrs)
        w.stop()
        time.sleep(1)
        gateway = per_second(addrs)
        w = H.Worker(wd, addrs, name="idle-w2", assign_interval_ms=60000, log_level="warn").start()
        procs.append(w)
        time.sleep(1)
        ls = asyncio.run(latencies(g))
        print(f"{kind}: one idle worker {both - gateway:.0f} Redis commands/s (with the gateway "
              f"{both:.0f}, the gateway alone {gateway:.0f}); conv.open -> conv.assigned p50 "
              f"{statistics.median(ls):.1f} ms, p90 {ls[int(len(ls) * 0.9)]:.1f} ms, "
              f"max {ls[-1]:.1f} ms ({len(ls)})")
    finally:
        for p in reversed(procs):
            try:
                p.stop()
            except Exception:   # already stopped
                pass


if __name__ == "__main__":
    for k in sys.argv[1:] or ["standalone", "cluster"]:
        measure(k)
