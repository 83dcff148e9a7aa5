"""Shared pieces of the kefu-worker integration tests: a private setup (a redis, two gateway
nodes, two workers by default) per test, agents that sign in, and Redis inspection."""

import functools
import subprocess
import types

import kefu_harness as H
from kefu_client import connect, open_conv


def wcluster(spawn, workers=2, **wopts):
    """A fresh Redis (no state shared with other tests), gateways n1 and n2, and `workers`
    kefu-workers started with the options given (ready: configuration published). The Redis is
    one stand-alone server, or a Redis Cluster of 3 masters and 3 replicas when the spawner says
    so (spawn.use_cluster, test_cluster.py)."""
    if getattr(spawn, "use_cluster", False):
        shards = spawn.redis_cluster().addrs[:3]
    else:
        shards = [spawn.redis()]
    n1 = spawn.gateway(shards, name="wa")
    n2 = spawn.gateway(shards, name="wb")
    wopts.setdefault("offline_grace_ms", 60000)
    ws = [spawn.worker(shards, name=f"wk{i}", **wopts) for i in range(workers)]
    return types.SimpleNamespace(shards=shards, n1=n1, n2=n2, workers=ws,
                                 addrs=[getattr(s, "addr", s) for s in shards])


@functools.lru_cache(maxsize=1)
def sanitized():
    """True for an AddressSanitizer build: everything runs a few times slower."""
    out = subprocess.run(["ldd", str(H.find_bin("kefu-worker"))], capture_output=True,
                         text=True).stdout
    return "libasan" in out


def rcall(wc, tag, *args):
    """A Redis command on the keys of hash tag `tag` (e.g. "staff", "c:<conv>", "q:default");
    on a cluster, redirections are followed."""
    return H.redis_call(H.shard_addr(wc.addrs, tag), *args)


def meta(wc, conv):
    flat = rcall(wc, "c:" + conv, "HGETALL", f"kefu:{{c:{conv}}}:meta")
    return dict(zip(flat[::2], flat[1::2]))


def load_of(wc, agent):
    return set(rcall(wc, "staff", "SMEMBERS", f"kefu:{{staff}}:load:{agent}"))


def record(wc, conv):
    entries = rcall(wc, "c:" + conv, "XRANGE", f"kefu:{{c:{conv}}}:log", "-", "+")
    out = []
    for _id, kv in entries:
        d = dict(zip(kv[::2], kv[1::2]))
        d["_id"] = _id
        out.append(d)
    return out


async def agent_on(node, skills=("default",), max_chats=5, proto="json", **claims):
    """An agent connected and signed in as available."""
    a = await connect(node, "agent", proto, skills=list(skills), max_chats=max_chats, **claims)
    r = await a.ok("agent.status", status="available")
    assert r["status"] == "available", r
    return a


async def assigned_to(agent, conv, timeout=5.0):
    """Waits for conv.assigned of conv on agent; returns the push."""
    return await agent.next_push("conv.assigned", conv=conv, timeout=timeout)


async def open_waiting(cust, **fields):
    conv, r = await open_conv(cust, **fields)
    return conv
