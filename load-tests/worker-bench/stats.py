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

With --archive, each conversation also gets its messages (6, two of them with a phone number
and an e-mail to mask) and its record, a private PostgreSQL server is started (as the
integration tests do) and the workers archive every conversation (archive_delay_s 0) and then
trim it from Redis (archive_trim_s 2): it reports archived conversations per second, the lag
from the start to the last one archived, the CPU of the workers, Redis and PostgreSQL per
conversation, and Redis memory per conversation before and after the trim.

With --archive --rate R [--duration D], the conversations are written at R a second for D
seconds while the workers run (the issue's benchmark: 2,000 a second), and it prints, each
second, what was written and archived and the workers' archive lag, then how long the archive
took to catch up after the writing stopped.

Usage: load-tests/worker-bench/stats [--convs N] [--workers W] [--archive [--rate R --duration D]]
       (KEFU_BIN_DIR: default build/)
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


def fill(port, n, now, archive=False, first=0, ev_ts=None):
    """N closed conversations (numbered from `first`): meta, and opened/closed/rated events, as
    the gateways write; with archive, their messages and records too. ev_ts: the events' time
    (default: each conversation's creation), which makes them due for the archive at once."""
    buf = []
    channels, groups = ["web", "app", "wechat"], ["default", "vip", "billing", "tech"]
    for i in range(first, first + n):
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
        if archive:
            texts = ["你好，我的订单还没到", "您好，请提供订单号", "订单号 20261129001，电话 138-1234-5678",
                     "好的，我查一下", "邮箱 zhang.san@example.com 也可以联系我", "已经发货了，明天到"]
            for k, t in enumerate(texts):
                who, role = (cust, "customer") if k % 2 == 0 else (agent, "agent")
                buf.append(resp("XADD", f"kefu:{{c:{conv}}}:msgs", f"{created + 1000 * (k + 1)}-0",
                                "from", who, "role", role, "name", who, "text", t,
                                "cid", f"c{i}-{k}"))
            for k, (ev, by) in enumerate((("opened", cust), ("accepted", agent),
                                          ("closed", agent), ("rated", cust))):
                buf.append(resp("XADD", f"kefu:{{c:{conv}}}:log", f"{created + 10 * k}-0", "ev", ev,
                                "by", by, "ts", created + 10 * k))
        for ev, extra in (("opened", ["channel", ch, "group", g, "priority", "medium"]),
                          ("closed", ["resolution", res, "agent", agent]),
                          ("rated", ["stars", 1 + i % 5])):
            buf.append(resp("XADD", H.lifecycle_key(H.part_of(conv)), "*", "ev", ev, "conv", conv,
                            "by", cust, "ts", ev_ts or created, *extra))
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=b"".join(buf), check=True,
                   stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--convs", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--archive", action="store_true")
    ap.add_argument("--rate", type=int, default=0,
                    help="with --archive: write closed conversations at this rate instead of a "
                         "backlog, and report the archive's lag each second")
    ap.add_argument("--duration", type=int, default=20, help="seconds of --rate")
    args = ap.parse_args()
    if args.archive and args.rate:
        return archive_rate_bench(args)
    if args.archive:
        return archive_bench(args)
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


def pg_cpu_s(pg):
    """CPU of every process of the PostgreSQL server (the postmaster's children included)."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/status") as f:
                user = next(ln for ln in f if ln.startswith("Uid:")).split()[1]
        except (OSError, StopIteration):
            continue
        if b"postgres" in cmd and user != "0":
            total += cpu_s(int(pid))
    return total


def used_memory(r):
    return int(r.call("INFO", "memory").split("used_memory:")[1].split()[0])


def archive_workers(wd, r, pg, n):
    """n workers archiving into pg at once (archive_delay_s 0) and trimming 2 s later."""
    return [H.Worker(wd, [r], name=f"aw{i}", log_level="warn", position_max=0,
                     archive_db=pg.url, archive_delay_s=0, archive_trim_s=2,
                     archive_batch=500).start()
            for i in range(n)]


def archive_bench(args):
    wd = tempfile.mkdtemp(prefix="kefu-abench-")
    procs = []
    try:
        r = H.Redis(wd + "/redis").start()
        procs.append(r)
        pg = H.Postgres(wd + "/pg").start()
        procs.append(pg)
        mem0 = used_memory(r)
        now = int(time.time() * 1000)
        fill(r.port, args.convs, now, archive=True)
        mem_filled = used_memory(r)
        r.call("CONFIG", "RESETSTAT")
        rc0, pc0 = cpu_s(r.p.pid), pg_cpu_s(pg)
        t0 = time.time()
        wks = archive_workers(wd, r, pg, args.workers)
        procs += wks
        archived, deadline = 0, time.time() + 600
        while time.time() < deadline:
            archived = int(pg.sql("SELECT count(*) FROM kefu_conversations")[0][0])
            if archived >= args.convs:
                break
            time.sleep(0.2)
        took = time.time() - t0
        wcpu = sum(cpu_s(w.proc.p.pid) for w in wks)
        rcpu, pcpu = cpu_s(r.p.pid) - rc0, pg_cpu_s(pg) - pc0
        msgs = int(pg.sql("SELECT count(*) FROM kefu_messages")[0][0])
        evs = int(pg.sql("SELECT count(*) FROM kefu_events")[0][0])
        masked = int(pg.sql("SELECT count(*) FROM kefu_messages WHERE body LIKE '%1234-5678%'")[0][0])
        # the trim: every conversation's keys gone after archive_trim_s and the final pass
        while time.time() < deadline and r.call("KEYS", "kefu:{c:*") != []:
            time.sleep(0.5)
        trimmed_after = time.time() - t0
        left = len(r.call("KEYS", "kefu:{c:*"))
        mem_trimmed = used_memory(r)
        db_bytes = int(pg.sql("SELECT pg_database_size('kefu')")[0][0])
        print(f"archive: {args.convs} conversations ({msgs} messages, {evs} record entries), "
              f"{args.workers} worker(s): all archived {took:.2f} s after the start -> "
              f"{archived / took:.0f} conversations/s; CPU per conversation: workers "
              f"{wcpu / args.convs * 1e6:.0f} us, redis {rcpu / args.convs * 1e6:.0f} us, "
              f"postgres {pcpu / args.convs * 1e6:.0f} us; redis memory per conversation "
              f"{(mem_filled - mem0) / args.convs:.0f} B before the trim, "
              f"{(mem_trimmed - mem0) / args.convs:.0f} B after the trim ({left} conversation keys "
              f"left, all trimmed {trimmed_after:.1f} s after the start); "
              f"database {db_bytes / args.convs:.0f} B per conversation; unmasked phone numbers "
              f"in the archive: {masked}; load average {os.getloadavg()[0]:.2f}")
        return 0 if archived == args.convs and msgs == 6 * args.convs and masked == 0 else 1
    finally:
        for p in reversed(procs):
            p.stop()


def metric(text, name):
    for ln in text.splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[1])
    return 0.0


def archive_rate_bench(args):
    """Closed conversations written at --rate a second for --duration seconds (in tenths of a
    second, as gateways and the worker would leave them, their events due for the archive at
    once) while the workers run; each second: written, archived, the workers' pending count
    and lag (kefu_worker_archive_pending, kefu_worker_archive_lag_seconds) and the lifecycle
    events not yet handled. Then how long the archive takes to catch up."""
    wd = tempfile.mkdtemp(prefix="kefu-arbench-")
    procs = []
    try:
        r = H.Redis(wd + "/redis").start()
        procs.append(r)
        pg = H.Postgres(wd + "/pg").start()
        procs.append(pg)
        wks = archive_workers(wd, r, pg, args.workers)
        procs += wks
        rc0, pc0 = cpu_s(r.p.pid), pg_cpu_s(pg)
        wc0 = sum(cpu_s(w.proc.p.pid) for w in wks)
        load0 = os.getloadavg()[0]

        def archived():
            return int(pg.sql("SELECT count(*) FROM kefu_conversations")[0][0])

        def unhandled():
            n = 0
            for p in range(H.PARTS):
                if not r.call("EXISTS", H.lifecycle_key(p)):
                    continue
                for g in r.call("XINFO", "GROUPS", H.lifecycle_key(p)):
                    info = dict(zip(g[::2], g[1::2]))
                    n += int(info.get("lag") or 0) + int(info.get("pending") or 0)
            return n

        t0, written, rows, next_row = time.time(), 0, [], 1.0
        while True:
            el = time.time() - t0
            if el >= args.duration:
                break
            due = min(int(args.rate * (el + 0.1)), args.rate * args.duration)
            if due > written:
                now = int(time.time() * 1000)
                fill(r.port, due - written, now, archive=True, first=written, ev_ts=now)
                written = due
            if el >= next_row:
                m = wks[0].http("/metrics")[1]
                m = m.decode() if isinstance(m, bytes) else m
                rows.append((round(el), written, archived(), unhandled(),
                             metric(m, "kefu_worker_archive_pending"),
                             metric(m, "kefu_worker_archive_lag_seconds")))
                next_row += 1.0
            time.sleep(max(0.0, 0.1 - (time.time() - t0 - el)))
        inj_end = time.time()
        done_at_end = archived()
        deadline = inj_end + 300
        while archived() < written and time.time() < deadline:
            time.sleep(0.2)
        caught_up = time.time() - inj_end
        total = archived()
        wcpu = sum(cpu_s(w.proc.p.pid) for w in wks) - wc0
        rcpu, pcpu = cpu_s(r.p.pid) - rc0, pg_cpu_s(pg) - pc0
        print("second | written | archived | lifecycle events not handled | pending (worker) | "
              "archive lag s (worker)")
        for row in rows:
            print(" | ".join(str(x) for x in row))
        print(f"archive at {args.rate} conversations/s for {args.duration} s, {args.workers} "
              f"worker(s): written {written}, archived {done_at_end} by the end of the writing "
              f"({done_at_end / args.duration:.0f}/s), lag then {written - done_at_end} "
              f"conversations; all {total} archived {caught_up:.1f} s after the writing stopped; "
              f"CPU per conversation: workers {wcpu / written * 1e6:.0f} us, redis "
              f"{rcpu / written * 1e6:.0f} us, postgres {pcpu / written * 1e6:.0f} us; load "
              f"average {load0:.2f} at the start")
        return 0 if total == written else 1
    finally:
        for p in reversed(procs):
            p.stop()


if __name__ == "__main__":
    sys.exit(main())
