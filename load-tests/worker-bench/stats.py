#!/usr/bin/python3
"""Worker benchmark: what the lifecycle events of closed conversations cost the worker and
Redis, statistics included (worker/stats.c), against real processes.

Starts a private redis-server and fills it with N closed conversations as the gateways leave
them: each conversation's meta hash, and its `opened`, `closed` and `rated` events in the
lifecycle stream (written with `redis-cli --pipe`, before any worker runs). Then starts W
workers and measures how long they take to handle the backlog (until the consumer group has
nothing left to deliver or acknowledge): events per second, conversations per second, and the
CPU the workers and Redis spent per conversation (from /proc). Finally it checks the day's
`closed|all|` counter is N and reports the Redis memory of the statistics per conversation.

Usage: load-tests/worker-bench/stats [--convs N] [--workers W]   (KEFU_BIN_DIR: default build/)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests", "integration"))

import kefu_harness as H  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / TICKS


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


def fill(port, n, now):
    """N closed conversations: meta, and opened/closed/rated events, as the gateways write."""
    buf = []
    channels, groups = ["web", "app", "wechat"], ["default", "vip", "billing", "tech"]
    for i in range(n):
        conv = f"b{i:08d}"
        created = now - 600000 + i % 500000
        assigned = created + 2000
        first = assigned + 5000 + (i * 37) % 60000
        closed = first + 120000
        ch, g = channels[i % 3], groups[i % 4]
        agent, cust = f"agent-{i % 200}", f"cust-{i % 5000}"
        res = "resolved" if i % 10 < 8 else "unresolved"
        buf.append(resp("HSET", f"kefu:{{c:{conv}}}:meta", "customer", cust, "channel", ch,
                        "group", g, "state", "closed", "created", created, "queued_us",
                        created * 1000, "assigned_at", assigned, "agent", agent,
                        "first_response", f"{first}-0", "closed_at", closed, "resolution", res,
                        "priority", "medium", "topic", f"topic {i % 50}",
                        "category", "consultation", "rating", 1 + i % 5))
        for ev, extra in (("opened", ["channel", ch, "group", g, "priority", "medium"]),
                          ("closed", ["resolution", res, "agent", agent]),
                          ("rated", ["stars", 1 + i % 5])):
            buf.append(resp("XADD", H.lifecycle_key(H.part_of(conv)), "*", "ev", ev, "conv", conv,
                            "by", cust, "ts", created, *extra))
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=b"".join(buf), check=True,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--convs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    wd = tempfile.mkdtemp(prefix="kefu-sbench-")
    procs = []
    try:
        r = H.Redis(wd + "/redis").start()
        procs.append(r)
        now = int(time.time() * 1000)
        fill(r.port, args.convs, now)
        events = sum(int(r.call("XLEN", H.lifecycle_key(p))) for p in range(H.PARTS))
        r.call("CONFIG", "RESETSTAT")
        mem0 = int(r.call("INFO", "memory").split("used_memory:")[1].split()[0])
        rc0 = cpu_s(r.p.pid)
        t0 = time.time()
        wks = [H.Worker(wd, [r], name=f"sw{i}", log_level="warn", position_max=0).start()
               for i in range(args.workers)]
        procs += wks
        deadline = time.time() + 600
        while time.time() < deadline:
            done = True
            for p in range(H.PARTS):   # every partition read and acknowledged
                g = r.call("XINFO", "GROUPS", H.lifecycle_key(p)) if r.call(
                    "EXISTS", H.lifecycle_key(p)) else []
                info = dict(zip(g[0][::2], g[0][1::2])) if g else {}
                if g and not (info.get("lag") == 0 and info.get("pending") == 0):
                    done = False
                if not g:
                    done = False   # the worker has not created its group yet
            if done:
                break
            time.sleep(0.05)
        took = time.time() - t0
        wcpu = sum(cpu_s(w.proc.p.pid) for w in wks)
        rcpu = cpu_s(r.p.pid) - rc0
        cmds = int(r.call("INFO", "stats").split("total_commands_processed:")[1].split()[0])
        day = time.strftime("%Y%m%d", time.gmtime(now / 1000))
        keys = r.call("KEYS", "kefu:{st:*")
        stat_mem = sum(int(r.call("MEMORY", "USAGE", k, "SAMPLES", "0")) for k in keys)
        closed = {}
        for k in keys:
            if k.endswith(":n"):
                closed[k] = int(r.call("HGET", k, "closed|all|") or 0)
        total = sum(closed.values())
        mem1 = int(r.call("INFO", "memory").split("used_memory:")[1].split()[0])
        load = os.getloadavg()[0]
        print(f"{args.convs} conversations ({events} events), {args.workers} worker(s): "
              f"handled in {took:.2f} s -> {events / took:.0f} events/s, "
              f"{args.convs / took:.0f} conversations/s; CPU per conversation: workers "
              f"{wcpu / args.convs * 1e6:.0f} us, redis {rcpu / args.convs * 1e6:.0f} us; "
              f"redis commands per conversation {cmds / args.convs:.1f}; statistics keys "
              f"{len(keys)}, {stat_mem / args.convs:.0f} B per conversation (redis memory "
              f"+{(mem1 - mem0) / args.convs:.0f} B per conversation in all); "
              f"closed counted {total}/{args.convs} (days {sorted(closed)}); "
              f"load average {load:.2f}; day {day}")
        if total != args.convs:
            print("MISMATCH: not every conversation counted once", file=sys.stderr)
            return 1
        return 0
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())
