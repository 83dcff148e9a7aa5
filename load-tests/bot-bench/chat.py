#!/usr/bin/env python3
"""Bot round trip over the wire: N customers each open a conversation with the bot and ask FAQ
questions in a loop (next question when the bot's answer arrives) for a while; prints answered
questions per second and the time from msg.send to the bot's reply push.

Starts its own redis-server and one kefu-gateway (bots_dir = the retail example) unless --url.
Usage: load-tests/bot-bench/chat.py [--customers 50] [--duration 10] [--bin-dir build]
The client is Python (asyncio + websockets): at high rates it, not the gateway, is the limit;
compare the gateway's CPU (printed) with the rate."""

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

import kefu_harness as H  # noqa: E402
from kefu_client import Client  # noqa: E402

QUESTIONS = ["请问怎么退货呀？", "运费怎么算", "发票怎么开", "How do I get a refund?",
             "Where is my parcel?", "支持花呗吗", "what size should I take?", "会员积分有什么用"]


async def customer(url, secret, deadline, lat):
    sub = "bench-" + uuid.uuid4().hex[:10]
    c = await Client.open(url, "json")
    await c.hello(H.make_token(sub, "customer", secret=secret, name="Bench"))
    r = await c.request("conv.open")
    conv = r["conv"]
    await c.next_push("msg", timeout=10, match=lambda f: f.get("conv") == conv)   # greeting
    i = 0
    while time.monotonic() < deadline:
        text = QUESTIONS[i % len(QUESTIONS)]
        i += 1
        t0 = time.perf_counter()
        await c.send({"type": "msg.send", "req": i, "conv": conv, "text": text, "cid": f"{sub}-{i}"})
        await c.answer(i, timeout=10)
        await c.next_push("msg", timeout=10,
                          match=lambda f: f.get("conv") == conv and f["from"]["role"] == "bot")
        lat.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)      # a customer reads the answer (and stays under rate limits)
    await c.close()


def cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=50)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--bin-dir", default=os.environ.get("KEFU_BIN_DIR", str(REPO / "build")))
    ap.add_argument("--rules", default=str(REPO / "lua" / "bots" / "retail"))
    args = ap.parse_args()
    os.environ["KEFU_BIN_DIR"] = args.bin_dir
    H.BIN_DIR = Path(args.bin_dir)
    work = Path("/tmp") / f"kefu-bot-chat-{uuid.uuid4().hex[:6]}"
    redis = H.Redis(work).start()
    # the bots' clock on a Monday 10:00 China time, so the shop is open
    offset = int(1795399200 - time.time())
    g = H.Gateway(work, [redis.addr], name="chat", log_level="warn", bots_dir=args.rules,
                  bot_clock_offset_s=offset, rate_per_s=1000, rate_burst=1000).start()
    gw_pid = None
    try:
        import subprocess
        out = subprocess.run(["pgrep", "-P", str(g.proc.pid)], capture_output=True, text=True).stdout
        gw_pid = int(out.split()[0]) if out.split() else g.proc.pid
        lat = []
        deadline = time.monotonic() + args.duration
        c0, t0 = cpu_s(gw_pid), time.monotonic()

        async def all_customers():
            await asyncio.gather(*(customer(g.ws_url, H.SECRETS[0], deadline, lat)
                                   for _ in range(args.customers)))
        asyncio.run(all_customers())
        wall, cpu = time.monotonic() - t0, cpu_s(gw_pid) - c0
        lat.sort()
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000
        print(f"{args.customers} customers, {wall:.1f} s: {len(lat)} bot answers, "
              f"{len(lat) / wall:.0f} answers/s; gateway CPU {100 * cpu / wall:.0f}% of a core")
        print(f"msg.send -> bot reply (ms): p50 {q(0.5):.2f}  p90 {q(0.9):.2f}  p99 {q(0.99):.2f}  "
              f"max {lat[-1] * 1000:.2f}  mean {statistics.mean(lat) * 1000:.2f}")
        m = g.metrics()
        print(f"kefu_bot_runs_total {m.get('kefu_bot_runs_total'):.0f}, "
              f"kefu_bot_errors_total {m.get('kefu_bot_errors_total'):.0f}, "
              f"kefu_bot_conflicts_total {m.get('kefu_bot_conflicts_total'):.0f}")
    finally:
        g.stop()
        redis.stop()


if __name__ == "__main__":
    main()
