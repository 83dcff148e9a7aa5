"""kefu on a Redis Cluster (3 masters, 3 replicas, started here on loopback ports): chat across
gateway nodes in both subprotocols, keys spread over the masters, the workers' assignment, SLA
timers and transfers; the failover drill (kill -9 a master under load: with ack_replicas=1 no
acknowledged message is lost and every client heals), the resharding drill (slots move under
load: no error, nothing lost); replica-confirmed acknowledgements on a stand-alone master; a
list of stand-alone servers refused."""

import asyncio
import datetime
import json
import os
import signal
import subprocess
import time
import types

import pytest

import kefu_harness as H
import test_chat
import test_master
import test_qa
import test_worker_assign
import test_worker_sla
import test_worker_transfer
from conftest import Spawner
from kefu_client import (Follower, connect, open_assigned, open_conv, open_conv_where, run,
                         send_msg)
from worker_helpers import agent_on, load_of, meta, sanitized, wcluster


@pytest.fixture(scope="module")
def ccl(workdir):
    """A Redis Cluster and two gateway nodes on it, shared by the tests that leave it whole."""
    if H.EXTERNAL:
        pytest.skip("starts its own Redis Cluster")
    sp = Spawner(workdir / "cluster-module")
    rc = sp.redis_cluster()
    seeds = rc.addrs[:3]
    n1 = sp.gateway(seeds, name="k1")
    n2 = sp.gateway(seeds, name="k2")
    yield types.SimpleNamespace(rc=rc, n1=n1, n2=n2, nodes=[n1, n2], shards=[], seeds=seeds)
    sp.teardown()


@pytest.fixture
def cspawn(spawn):
    """The per-test spawner, with wcluster() (worker_helpers) on a fresh Redis Cluster."""
    spawn.use_cluster = True
    return spawn


def gauges(node):
    st, body, _ = node.get("/metrics")
    assert st == 200
    return H.Metrics(body)


def _log_wall(line):
    """Unix time of a kefu log line ("2026-11-29T12:15:14.919Z pid name L text"), or None."""
    try:
        return datetime.datetime.strptime(line.split(" ", 1)[0], "%Y-%m-%dT%H:%M:%S.%fZ") \
            .replace(tzinfo=datetime.timezone.utc).timestamp()
    except ValueError:
        return None


def promoted_at(rc, after):
    """Unix time at which a replica of rc won a failover election after `after` (its log line
    "<pid>:S 29 Nov 2026 12:15:14.785 # Failover election won", local time), or None."""
    for n in rc.nodes:
        for line in n.log_text().splitlines():
            if "Failover election won" not in line:
                continue
            stamp = line.split(" ", 1)[1][:24]   # "29 Nov 2026 12:15:14.785"
            t = time.mktime(time.strptime(stamp[:20], "%d %b %Y %H:%M:%S")) + \
                int(stamp[21:24]) / 1000
            if t >= after - 0.5:
                return t
    return None


def assert_followed(procs, rc, t_kill, what):
    """Every Redis client of the processes that lost slots at the kill (t_kill: unix time)
    serves every slot again within cluster-node-timeout + 2 s of the kill (the issue's bound;
    a margin for an ASan build only). Each client logs when some slots lose their server and
    when all are served again (lib/redis.c), with millisecond timestamps: no sampling of
    gauges in between."""
    # ASan: no slower in the runs so far (0.1-0.2 s after the promotion), but its processes
    # start and answer several times slower on a loaded CI machine: a second more
    bound = rc.node_timeout_ms / 1000 + 2 + (1 if sanitized() else 0)

    def events():
        lost, back = [], []
        for pr in procs:
            for line in pr.proc.log_text().splitlines():
                t = _log_wall(line)
                if t is None or t < t_kill - 0.2:
                    continue
                if "slots have no server up" in line:
                    lost.append((pr.name, t))
                elif "every slot is served again" in line:
                    back.append((pr.name, t))
        return lost, back
    wait_for(lambda: events()[0] and len(events()[1]) >= len(events()[0]), 20,
             f"the {what} serving every slot again")
    lost, back = events()
    promo = promoted_at(rc, t_kill)
    took = [round(t - t_kill, 2) for _, t in back]
    print(f"{what}: kill -> replica promoted "
          f"{'?' if promo is None else round(promo - t_kill, 2)} s; kill -> every slot served "
          f"again {took} s (bound {bound} s)")
    assert {name for name, _ in back} == {name for name, _ in lost}, (lost, back)
    follow = 1.0 + (1 if sanitized() else 0)
    if promo is not None:   # what kefu adds to Redis's own detection and election
        assert max(t for _, t in back) - promo <= follow, (promo, back)
        # Redis's own election is most of the bound (1.9-2.6 s of 3 s here) and is not kefu's
        # to speed up: on a machine so loaded that the promotion itself comes late, the bound
        # is what kefu adds to it
        bound = max(bound, promo - t_kill + follow)
    assert max(took) <= bound, f"{what} followed the failover after {took} s > {bound} s"
    return took


def wait_for(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ---- chat on the cluster ----

@pytest.mark.parametrize("cproto,aproto", [("json", "msgpack"), ("msgpack", "json")])
def test_chat_flow_on_cluster(ccl, cproto, aproto):
    test_chat.test_chat_flow_two_nodes(ccl, cproto, aproto)


def test_resume_after_reconnect_on_cluster(ccl):
    test_chat.test_resume_after_reconnect_on_other_node(ccl, "msgpack")


def test_keys_spread_over_masters_and_metrics(ccl):
    async def body():
        cust = await connect(ccl.n1, "customer", "json")
        agent = await connect(ccl.n2, "agent", "msgpack", max_chats=50)
        convs = []
        for i in range(12):
            conv = await open_assigned(cust, agent, topic=f"t{i}")
            await send_msg(cust, conv, f"hello {i}")
            await agent.next_push("msg", conv=conv)
            convs.append(conv)
        return convs
    convs = run(body())
    masters = {ccl.rc.master_of(f"kefu:{{c:{c}}}:meta").port for c in convs}
    assert len(masters) >= 2, "conversations all on one master"
    for c in convs:   # each conversation's keys together, on the master of its slot
        m = ccl.rc.master_of(f"kefu:{{c:{c}}}:meta")
        assert H.redis_call(m.addr, "XLEN", f"kefu:{{c:{c}}}:msgs") == 1
    for node in ccl.nodes:
        m = gauges(node)
        assert m.get("kefu_redis_slots_up") == 16384
        assert m.get("kefu_redis_masters") == 3 and m.get("kefu_redis_masters_up") == 3
        assert m.get("kefu_redis_map_refreshes_total") >= 1
        assert node.status("/readyz") == 200


# ---- the workers on the cluster ----

def test_worker_routing_on_cluster(cspawn):
    test_worker_assign.test_routing_groups_and_lowest_load(cspawn)


def test_worker_manual_accept_race_on_cluster(cspawn):
    test_worker_assign.test_manual_accept_races_automatic_assignment(cspawn)


def test_worker_sla_on_cluster(cspawn):
    test_worker_sla.test_first_response_breach_on_time_and_cancelled_by_reply(cspawn)


def test_worker_transfer_on_cluster(cspawn):
    test_worker_transfer.test_transfer_to_agent_and_group(cspawn)


def test_qa_review_on_cluster(cspawn):
    """The sample, the conversations and the day's statistics are on different slots."""
    test_qa.test_list_review_record_and_statistics(cspawn)


# ---- drills under load (kefu-load relay: a real client following the protocol's rules) ----

def relay(nodes, secret, rate, duration, pairs, out, extra=()):
    """Starts kefu-load relay (customers on nodes[0], agents on nodes[1]); returns the process
    and the path of its JSON results."""
    jf = out / f"relay-{time.monotonic_ns()}.json"
    argv = [str(H.find_bin("kefu-load")), "relay", "--url", nodes[0].ws_url,
            "--url", nodes[1].ws_url, "--pairs", str(pairs), "--rate", str(rate),
            "--duration", str(duration), "--drain", "30", "--secret", secret, "--quiet",
            "--json", str(jf), *extra]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p, jf


def relay_results(p, jf, timeout, output=None):
    """The relay's counters. It exits 1 when any request failed, which a fault may well cause:
    the drills judge the counters themselves. `output`, a list, gets the relay's output lines
    (it names the first 20 acknowledged messages it never saw: "never seen: ... id <ms>-<n>")."""
    out, _ = p.communicate(timeout=timeout)
    assert jf.exists(), f"kefu-load relay exited {p.returncode}:\n{out.decode()[-3000:]}"
    print(out.decode()[-1500:])
    if output is not None:
        output.extend(out.decode("utf-8", "replace").splitlines())
    return json.loads(jf.read_text())["counters"]


def drill_gateways(spawn, rc, name, seeds=None, **opts):
    seeds = seeds or rc.addrs[:3]
    o = dict(rate_per_s=100000, rate_burst=100000, redis_timeout_ms=3000, log_level="info")
    o.update(opts)
    return [spawn.gateway(seeds, name=f"{name}a", **o), spawn.gateway(seeds, name=f"{name}b", **o)]


# What ack_replicas=0 may lose in the drill: messages the killed master acknowledged and had not
# yet sent to its replica, i.e. stored in the last moments before the kill (docs/operations.md,
# "What each persistence choice can lose": typically milliseconds of writes on a LAN; the
# bound leaves room for a loaded 2-core machine, where the replica may fall that far behind).
REPLICATION_LAG_WINDOW_S = 1.0
LAG_S = 0.5   # how far the drill lets the replica fall behind before the kill


@pytest.mark.long(13)
@pytest.mark.parametrize("ack", [1, 0], ids=["ack_replicas=1", "ack_replicas=0"])
def test_failover_drill(spawn, tmp_path, ack):
    """kill -9 the master holding the most keys while 1,500 msgs/s flow: its replica takes over,
    and the killed server, started again once it has, rejoins as the new master's replica; the
    gateways serve every slot again within cluster-node-timeout + 2 s. With ack_replicas=1
    every acknowledged message survives (never seen = 0: each was pushed live or healed from
    history by the client rules). With ack_replicas=0 the loss is counted, and what is lost
    was acknowledged just before the kill (within REPLICATION_LAG_WINDOW_S): replication is
    asynchronous, nothing older goes. Nothing is stored twice either way. Messages sent
    meanwhile may be refused (unavailable: the slot had no master, or the new master no replica
    yet to confirm them); that is what the client retries."""
    rc = spawn.redis_cluster()
    # every node a seed: the replica that takes over is connected (and up) before it does
    opts = dict(ack_replicas=1, ack_timeout_ms=1000) if ack else {}
    nodes = drill_gateways(spawn, rc, "fo", seeds=rc.addrs, **opts)
    p, jf = relay(nodes, H.SECRETS[0], rate=1500, duration=8, pairs=60, out=tmp_path)
    # the relay sets up its pairs, then sends for 8 s; the master goes 3 s into the sending
    # (its replica stopped LAG_S before), so that the resync that follows the failover comes
    # while the relay still sends
    time.sleep(4 - LAG_S)
    victim = max((n for n in rc.nodes if n.alive() and
                  H.redis_call(n.addr, "ROLE")[0] == "master"),
                 key=lambda n: H.redis_call(n.addr, "DBSIZE"))
    # its replica falls behind first (stopped for LAG_S), as a busy or distant replica would:
    # the writes of that time are acknowledged only by the master (ack_replicas=0), or refused
    # as unconfirmed (ack_replicas=1)
    replica_port = H.redis_call(victim.addr, "ROLE")[2][0][1]
    replica = next(n for n in rc.nodes if str(n.port) == str(replica_port))
    os.kill(replica.pid, signal.SIGSTOP)
    time.sleep(LAG_S)
    t_kill = time.time()
    victim.p.send_signal(signal.SIGKILL)
    victim.p.wait()
    os.kill(replica.pid, signal.SIGCONT)
    # the cluster promotes the victim's replica (the gateways sample their gauges every second:
    # wait for the cluster first, or the old figures would look like a recovery)
    wait_for(lambda: victim.port not in {m.port for m in rc.masters_now()}, 20,
             "the victim's replica promoted")

    def all_served():
        return all(gauges(g).get("kefu_redis_slots_up") == 16384 and
                   gauges(g).get("kefu_redis_masters") == 3 for g in nodes)
    wait_for(all_served, 20, "every slot served by the 3 masters after the failover")
    took = assert_followed(nodes, rc, t_kill, "gateways")
    victim.start()   # rejoins as a replica of the master that took over
    output = []
    c = relay_results(p, jf, timeout=120, output=output)
    lost = c.get("lost", 0)
    print(f"failover drill, ack_replicas={ack}: slots back after {max(took):.2f}s; "
          f"acknowledged but lost: {lost}; {c}")
    assert c["acked"] > 3000, c
    assert c.get("duplicated", 0) == 0, c
    if ack:
        assert lost == 0, f"acknowledged messages never seen: {c}"
    else:
        # each lost message is named with the id its acknowledgement gave: the killed master's
        # clock (ms) when it stored it (the relay names the first 20)
        named = [int(line.split(" id ", 1)[1].split("-", 1)[0])
                 for line in output if "never seen:" in line]
        assert len(named) == min(lost, 20), (lost, named)
        ages = [round(t_kill - ms / 1000, 3) for ms in named]
        print(f"lost messages stored this long (s) before the kill: {ages}")
        assert all(-0.05 <= a <= REPLICATION_LAG_WINDOW_S for a in ages), \
            f"lost messages acknowledged earlier than the replication lag window: {ages}"
    m = [gauges(g) for g in nodes]
    assert all(x.get("kefu_redis_slots_up") == 16384 for x in m)
    for g in nodes:   # one failover, told once per Redis client (two per process)
        assert 1 <= g.proc.log_text().count("took over slots of") <= 2, g.proc.tail(40)


@pytest.mark.long(15)
def test_resharding_drill(spawn, tmp_path):
    """2,000 slots move from one master to another (redis-cli --cluster reshard) while 800
    msgs/s flow: the gateways follow MOVED and ASK; no request fails and nothing is lost."""
    rc = spawn.redis_cluster()
    nodes = drill_gateways(spawn, rc, "rs")
    p, jf = relay(nodes, H.SECRETS[0], rate=800, duration=10, pairs=60, out=tmp_path)
    time.sleep(4)
    ids = {}
    for line in H.redis_call(rc.nodes[0].addr, "CLUSTER", "NODES").splitlines():
        f = line.split()
        if "master" in f[2]:
            ids[f[1].split("@")[0]] = f[0]
    src, dst = sorted(ids)[:2]
    r = subprocess.run([H.REDIS_CLI, "--cluster", "reshard", rc.nodes[0].addr,
                        "--cluster-from", ids[src], "--cluster-to", ids[dst],
                        "--cluster-slots", "2000", "--cluster-yes", "--cluster-pipeline", "100"],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stdout.decode()[-2000:] + r.stderr.decode()
    c = relay_results(p, jf, timeout=120)
    m = [gauges(g) for g in nodes]
    moved = sum(x.get("kefu_redis_redirects_total", kind="moved") for x in m)
    ask = sum(x.get("kefu_redis_redirects_total", kind="ask") for x in m)
    retry = sum(x.get("kefu_redis_redirects_total", kind="retry") for x in m)
    print(f"resharding drill: moved {moved}, ask {ask}, retry {retry}; {c}")
    assert moved > 0, "no MOVED followed: did the slots carry traffic?"
    assert c["acked"] > 3000, c
    assert c.get("failed", 0) == 0, f"requests refused during resharding: {c}"
    assert c.get("lost", 0) == 0 and c.get("duplicated", 0) == 0, c
    assert c.get("unacked", 0) == 0, c
    assert c.get("out_of_order", 0) == 0, c


# ---- acknowledgements confirmed by replicas, on a stand-alone master ----

@pytest.mark.long(14)
def test_ack_replicas_on_standalone_master(spawn):
    """ack_replicas=1 with a stand-alone master and one replica: msg.send is acknowledged once
    the replica has it; with the replica stopped it is answered unavailable (stored, not
    confirmed: no push), and the retry with the same cid after the replica is back returns the
    same id and heals the other side."""
    master = spawn.redis()
    replica = spawn.redis()
    H.redis_call(replica.addr, "REPLICAOF", H.HOST, master.port)

    def replica_online():
        return "state=online" in H.redis_call(master.addr, "INFO", "replication")
    wait_for(replica_online, 10, "replica attached")
    g1 = spawn.gateway([master], name="ack1", ack_replicas=1, ack_timeout_ms=300)
    g2 = spawn.gateway([master], name="ack2", ack_replicas=1, ack_timeout_ms=300)

    async def body():
        cust = await connect(g1, "customer", "json")
        agent = await connect(g2, "agent", "msgpack")
        conv = await open_assigned(cust, agent)
        id1, _, _ = await send_msg(cust, conv, "confirmed by the replica")
        await agent.next_push("msg", conv=conv, id=id1)
        replica.stop(signal.SIGTERM, timeout=5)
        wait_for(lambda: H.redis_call(master.addr, "INFO", "replication")
                 .find("connected_slaves:0") >= 0, 10, "replica gone")
        e = await cust.request("msg.send", conv=conv, text="not confirmed", cid="c-unconf")
        assert e["type"] == "error" and e["code"] == "unavailable", e
        assert "replicas" in e["message"], e
        await agent.no_push("msg", within=0.5)
        # the message is on the master all the same
        hist = await cust.ok("history", conv=conv)
        stored = [m for m in hist["msgs"] if m.get("cid") == "c-unconf"]
        assert len(stored) == 1
        replica.start()
        H.redis_call(replica.addr, "REPLICAOF", H.HOST, master.port)
        wait_for(replica_online, 10, "replica back")
        # as a client does: retry with the same cid while unconfirmed (a replica that just came
        # back may confirm the first WAIT late on a busy machine)
        for _ in range(20):
            ok = await cust.request("msg.send", conv=conv, text="not confirmed", cid="c-unconf")
            if ok["type"] == "ok" or ok.get("code") != "unavailable":
                break
            await asyncio.sleep(ok.get("retry_ms", 1000) / 1000)
        assert ok["type"] == "ok" and ok["id"] == stored[0]["id"], (ok, stored)
        # the retry of a stored message tells the participants to re-check (resync)
        f = await agent.next_push("resync", conv=conv, timeout=5)
        assert f["conv"] == conv
    run(body())
    m = gauges(g1)
    assert m.get("kefu_redis_unreplicated_total") >= 1


def test_relay_waits_for_each_acknowledged_message(spawn, tmp_path):
    """The drills' judge, kefu-load relay, ends its drain only once every acknowledged message
    was seen at the other end. Messages refused as unreplicated are stored all the same and the
    agents heal them from history, so counting "delivered + healed >= acked" let it stop while
    acknowledged messages were still on their way, and call them never seen (the failover drill
    failed so on a loaded machine). Here the agents' gateway freezes (SIGSTOP) for the last
    messages after such a stretch: the relay must wait for it, then see them all."""
    master = spawn.redis()
    replica = spawn.redis()
    H.redis_call(replica.addr, "REPLICAOF", H.HOST, master.port)
    wait_for(lambda: "state=online" in H.redis_call(master.addr, "INFO", "replication"), 10,
             "replica attached")
    o = dict(ack_replicas=1, ack_timeout_ms=300, rate_per_s=100000, rate_burst=100000)
    g1 = spawn.gateway([master], name="rwc", **o)
    g2 = spawn.gateway([master], name="rwa", **o)
    total = 1000   # rate x duration
    p, jf = relay([g1, g2], H.SECRETS[0], rate=200, duration=5, pairs=4, out=tmp_path)

    def stored():   # what the conversations hold: acknowledged or refused as unreplicated
        keys = H.redis_call(master.addr, "KEYS", "kefu:{c:*}:msgs")
        return sum(H.redis_call(master.addr, "XLEN", k) for k in keys)
    wait_for(lambda: stored() >= 100, 30, "messages flowing")
    # the replica stops confirming: about 300 messages refused, stored, healed by the agents
    os.kill(replica.p.pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.kill(replica.p.pid, signal.SIGCONT)
    wait_for(lambda: stored() >= total - 150, 30, "the last messages being sent")
    (agents,) = test_master.children(g2.proc.pid)   # the node's one gateway process
    os.kill(agents, signal.SIGSTOP)
    try:
        wait_for(lambda: stored() >= total, 30, "every message stored")
        time.sleep(2)   # every answer is in: the relay must not take its counts now
    finally:
        os.kill(agents, signal.SIGCONT)
    c = relay_results(p, jf, timeout=60)
    assert c["failed"] >= 100 and c["healed"] >= 100, c   # the stretch of refused messages
    assert c["acked"] + c["failed"] == total, c
    assert c.get("lost", 0) == 0 and c.get("duplicated", 0) == 0, c


def test_ack_timeout_must_be_below_redis_timeout(spawn):
    g = spawn.gateway([spawn.redis()], name="acktmo", ready=False, ack_replicas=1,
                      ack_timeout_ms=5000, redis_timeout_ms=5000)
    g.proc.expect_exit = True
    assert g.proc.p.wait(10) == 2
    assert "ack_timeout_ms (5000) must be below redis_timeout_ms" in g.proc.tail()


def test_list_of_standalone_servers_is_refused(spawn):
    """The shard list is retired: two stand-alone servers are not a cluster. The gateway says so
    and is never ready."""
    g = spawn.gateway([spawn.redis(), spawn.redis()], name="twostand", ready=False)
    wait_for(lambda: "several addresses must be nodes of one Redis Cluster" in g.proc.tail(80),
             10, "the refusal in the log")
    assert g.status("/readyz") == 503


def test_inbox_master_frozen_keeps_node_ready_and_heals(spawn):
    """The master holding a node's inbox freezes (SIGSTOP, a cluster without replicas): the
    node stays ready (a load balancer keeps its clients), its reader retries, and once the
    master answers again the agent on that node gets what was sent meanwhile, pushed or healed
    by the client rules."""
    rc = spawn.redis_cluster(replicas=0)
    opts = dict(redis_timeout_ms=500, route_retry_ms=300, presence_cache_ms=0)
    ga = spawn.gateway(rc.addrs, name="inbx", **opts)     # the agent's node
    gc = spawn.gateway(rc.addrs, name="inbc", **opts)     # the customer's node
    slots = rc.slots()
    victim = rc.master_of(f"kefu:{{n:{ga.name}-0}}:inbox", slots)

    async def body():
        cust = await connect(gc, "customer", "json", sub=rc.user_id("cust", slots, off=victim))
        agent = await connect(ga, "agent", "msgpack", sub=rc.user_id("agen", slots, off=victim))
        conv = await open_conv_where(
            cust, lambda c: rc.master_of(f"kefu:{{c:{c}}}:meta", slots) is not victim)
        await agent.ok("conv.accept", conv=conv)
        f = Follower(agent, conv)
        first, _, _ = await send_msg(cust, conv, "before")
        await f.pump(0.5)
        assert first in f.live
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(2.0)            # > 1 s BLOCK + redis_timeout_ms: reader retries
            assert ga.status("/readyz") == 200, "the node left the pool for a frozen master"
            during, _, _ = await send_msg(cust, conv, "while the inbox master is frozen")
            await asyncio.sleep(1.0)
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        for _ in range(60):
            await f.pump(0.2)
            if during in f.held:
                break
        assert during in f.held, "the message sent meanwhile never reached the agent"
        after, _, _ = await send_msg(cust, conv, "after")
        await f.pump(1.0)
        assert after in f.live, "the inbox reader did not resume"
    run(body(), timeout=60)


def test_lifecycle_event_kept_while_its_master_is_frozen(spawn):
    """conv.accept and conv.open are answered ok while the master of their lifecycle stream
    partition is frozen (SIGSTOP, a cluster without replicas): their events for the worker are
    kept and stored once the master answers again, not lost (the worker counts the accepted
    conversation in the agent's load, and queues the opened one, from them)."""
    rc = spawn.redis_cluster(replicas=0)
    g = spawn.gateway(rc.addrs, name="kept", redis_timeout_ms=1500)
    slots = rc.slots()
    # the master of the middle partitions: neither the default queue ({q:default}, slot 270)
    # nor the agent state ({staff}, 14951) is there
    victim = rc.master_of(H.lifecycle_key(8), slots)
    assert rc.master_of("kefu:{q:default}:waiting", slots) is not victim
    day = time.strftime("%Y%m%d")
    channel = next(ch for ch in (f"ch{i}" for i in range(100))
                   if rc.master_of(f"kefu:{{t:{ch}-{day}}}:seq", slots) is not victim)

    def on_victim(conv):
        return rc.master_of(H.lifecycle_key(H.part_of(conv)), slots) is victim

    async def body():
        cust = await connect(g, "customer", "json", sub=rc.user_id("cust", slots, off=victim),
                             channel=channel)
        agent = await connect(g, "agent", "json", sub=rc.user_id("agen", slots, off=victim))
        # its own keys elsewhere, its events on the victim
        conv = await open_conv_where(
            cust, lambda c: rc.master_of(f"kefu:{{c:{c}}}:meta", slots) is not victim
            and on_victim(c))
        os.kill(victim.pid, signal.SIGSTOP)
        try:
            a = await agent.ok("conv.accept", conv=conv)
            assert a["state"] == "assigned"
            # stored, queued and answered ok all the same, unless the new conversation's own
            # keys landed on the frozen master (its id is random): then the client tries again;
            # opened until one's events belong on the frozen master
            opened = None
            for _ in range(40):
                r = await cust.request("conv.open", _timeout=10)
                if r["type"] != "ok":
                    assert r["code"] == "unavailable", r
                    continue
                if on_victim(r["conv"]):
                    opened = r["conv"]
                    break
            assert opened, "no conversation with its events on the frozen master"
            wait_for(lambda: gauges(g).get("kefu_redis_kept") >= 2, 10, "the events kept")
        finally:
            os.kill(victim.pid, signal.SIGCONT)
        return conv, opened
    conv, opened = run(body(), timeout=60)

    def stored(ev, conv):
        for _id, kv in rc.call("XRANGE", H.lifecycle_key(H.part_of(conv)), "-", "+"):
            d = dict(zip(kv[::2], kv[1::2]))
            if d.get("ev") == ev and d.get("conv") == conv:
                return True
        return False
    wait_for(lambda: stored("accepted", conv), 15,
             "the accepted event stored after the master came back")
    wait_for(lambda: stored("opened", opened), 15,
             "the opened event stored after the master came back")
    wait_for(lambda: gauges(g).get("kefu_redis_kept") == 0, 10, "nothing kept any more")


@pytest.mark.parametrize("hot", ["{staff}", "{ev:8-oz}"])
def test_workers_follow_a_failover(cspawn, hot):
    """Two workers on a cluster; the master holding the agent state ({staff}) or the middle
    partitions of the lifecycle stream ({ev:8-oz}: not the first master, which the test reads
    through) is killed with kill -9 while conversations
    wait. Its replica takes over; the
    workers follow it: every conversation opened before and after the kill is assigned, none
    twice, and no agent gets more than max_chats."""
    wc = wcluster(cspawn, redis_timeout_ms=2000)
    rc = cspawn.use_cluster_last

    async def body():
        agents = [await agent_on(wc.n1 if i % 2 else wc.n2, max_chats=20) for i in range(2)]
        cust = await connect(wc.n2, "customer", "json")
        before = [(await open_conv(cust, topic=f"b{i}"))[0] for i in range(10)]
        victim = rc.master_of(f"kefu:{hot}:x")
        t_kill = time.time()
        victim.p.send_signal(signal.SIGKILL)
        victim.p.wait()
        wait_for(lambda: victim.port not in {m.port for m in rc.masters_now()}, 20,
                 "the replica promoted")
        # workers and gateways follow within cluster-node-timeout + 2 s of the kill
        assert_followed(wc.workers, rc, t_kill, "workers")
        assert_followed([wc.n1, wc.n2], rc, t_kill, "gateways")
        after = []
        deadline = time.monotonic() + 20
        while len(after) < 10 and time.monotonic() < deadline:
            r = await cust.request("conv.open", topic=f"a{len(after)}")
            if r["type"] == "ok":
                after.append(r["conv"])
            else:
                assert r["code"] == "unavailable", r   # until the gateways follow
                await asyncio.sleep(0.2)
        assert len(after) == 10, "conv.open never worked again after the failover"
        # assigned, each once: the stored state is what counts (a push made just before the
        # kill may be lost with the inbox entry that carried it; the clients got a resync)
        want = set(before) | set(after)
        users = {a.user for a in agents}

        def unassigned():
            out = set()
            for conv in want:
                m = meta(wc, conv)
                if m.get("state") != "assigned" or m.get("agent") not in users:
                    out.add(conv)
            return out
        deadline = time.monotonic() + 30
        while unassigned() and time.monotonic() < deadline:
            await asyncio.sleep(0.3)
        assert not unassigned(), f"never assigned: {unassigned()}"
        pushed = {}
        for a in agents:
            while (f := a._take("conv.assigned", lambda f: True)) is not None:
                assert f["conv"] not in pushed, f"{f['conv']} assigned twice"
                pushed[f["conv"]] = a.user
        for conv, user in pushed.items():
            assert meta(wc, conv)["agent"] == user, "pushed to one agent, stored for another"
        # each conversation counts toward its agent's load, nobody is over max_chats (a
        # reservation made just before the kill may linger in another agent's load set until
        # the worker's repair drops it)
        loads = {a.user: load_of(wc, a.user) for a in agents}
        for conv in want:
            assert conv in loads[meta(wc, conv)["agent"]], (conv, loads)
        assert all(len(x) <= 20 for x in loads.values()), loads
    run(body(), timeout=90)


def test_master_down_stalls_only_its_partitions(spawn):
    """The lifecycle stream and the SLA deadlines are spread over 16 partitions (5 or 6 per
    master of 3). One master is killed (kill -9) and its replica takes over only after the
    cluster-node-timeout (6 s here): meanwhile the events of conversations whose partitions
    live on the other masters are read, and their first-response deadlines fire on time; the
    deadlines of the killed master's partitions wait, and fire once the replica has taken over.
    Nothing is lost: every conversation gets its one warning, every opened event is stored in
    its own partition."""
    rc = spawn.redis_cluster(node_timeout_ms=6000)
    slots = rc.slots()
    victim = rc.master_of(H.lifecycle_key(8), slots)
    # what every conversation needs lives elsewhere: agent state, the queue, the inbox, the
    # ticket counter, the users
    assert rc.master_of("kefu:{staff}:config", slots) is not victim
    assert rc.master_of("kefu:{q:default}:waiting", slots) is not victim
    day = time.strftime("%Y%m%d")
    channel = next(ch for ch in (f"ch{i}" for i in range(100))
                   if rc.master_of(f"kefu:{{t:{ch}-{day}}}:seq", slots) is not victim)
    on_victim = {p for p in range(H.PARTS)
                 if rc.master_of(H.sla_key(p, "timers"), slots) is victim}
    assert 5 <= len(on_victim) <= 6, on_victim
    assert all(rc.master_of(H.lifecycle_key(p), slots) is victim for p in on_victim)
    masters = rc.addrs[:3]
    for _ in range(20):   # a gateway whose inbox is elsewhere (its name is random)
        g = spawn.gateway(masters, name="g", redis_timeout_ms=1500)
        if rc.master_of(f"kefu:{{n:{g.name}-0}}:inbox", slots) is not victim:
            break
    else:
        raise AssertionError("no gateway inbox off the victim")
    ws = [spawn.worker(masters, name=f"wk{i}", redis_timeout_ms=1500, offline_grace_ms=60000,
                       sla_first_response_ms="*=1000", sla_alert_after_ms=600000)
          for i in range(2)]

    def events_read():
        return sum(H.Metrics(w.http("/metrics")[1]).get("kefu_worker_events_total") for w in ws)

    def promoted():
        return victim.port not in {m.port for m in rc.masters_now()}

    async def body():
        agent = await agent_on(g, max_chats=50, sub=rc.user_id("agen", slots, off=victim))
        cust = await connect(g, "customer", "json", sub=rc.user_id("cust", slots, off=victim),
                             channel=channel)
        before = events_read()
        victim.p.send_signal(signal.SIGKILL)
        victim.p.wait()
        t_kill = time.monotonic()
        held, free = [], []
        while len(held) < 3 or len(free) < 3:
            r = await cust.request("conv.open")
            if r["type"] != "ok":   # its own keys were on the dead master
                assert r["code"] == "unavailable", r
                continue
            (held if H.part_of(r["conv"]) in on_victim else free).append(r["conv"])
            assert len(held) + len(free) < 60
        # the others' deadlines fire on time, before the replica takes over
        warned = {}
        for c in free:
            w = await agent.next_push("sla.warning", conv=c, timeout=5)
            assert w["overdue_ms"] < 500, w
            warned[c] = w
        assert not promoted(), "the failover came before the test could look"
        assert time.monotonic() - t_kill < 5.5
        assert events_read() - before >= len(free)   # their partitions are read meanwhile
        assert not [f for f in agent.frames if f.get("type") == "sla.warning"
                    and f.get("conv") in held], "a deadline of the dead master fired"
        # the dead master's share: after the replica took over, late, but not lost
        wait_for(promoted, 20, "the replica promoted")
        t_promoted = time.monotonic()
        for c in held:
            w = await agent.next_push("sla.warning", conv=c, timeout=15)
            warned[c] = w
        assert time.monotonic() - t_kill > 5.5
        await agent.no_push("sla.warning", within=1.0)   # each warned once
        return held, free, warned, t_promoted
    held, free, warned, _ = run(body(), timeout=90)
    for c in held:
        assert warned[c]["overdue_ms"] >= 2000, warned[c]   # waited for the failover
    for c in held + free:
        p = H.part_of(c)

        def stored(c=c, p=p):
            return any(dict(zip(kv[::2], kv[1::2])).get("conv") == c
                       for _id, kv in rc.call("XRANGE", H.lifecycle_key(p), "-", "+"))
        wait_for(stored, 10, f"the opened event of {c} in partition {p}")


def frozen_master_setup(spawn, name, counter_on_victim):
    """A 3-master cluster without replicas and a gateway on it; the master to freeze (not the
    one of the default queue) and a channel whose single ticket counter of earlier versions
    is, or is not, on that master."""
    rc = spawn.redis_cluster(replicas=0)
    g = spawn.gateway(rc.addrs, name=name, redis_timeout_ms=1000)
    slots = rc.slots()
    queue = "kefu:{q:default}:waiting"
    victim = next(m for m in rc.masters_now(slots) if m is not rc.master_of(queue, slots))
    day = time.strftime("%Y%m%d")
    channel = next(ch for ch in (f"ch{i}" for i in range(100))
                   if (rc.master_of(f"kefu:{{t:{ch}-{day}}}:seq", slots) is victim)
                   == counter_on_victim)
    return rc, g, slots, queue, victim, channel


async def opens_while_frozen(cust, victim, want_ok):
    """conv.open, up to 40 times, while the victim master is stopped (SIGSTOP), until at
    least want_ok were answered ok and two `unavailable` (any other answer fails the test).
    Returns the ok answers; the master runs again afterwards."""
    os.kill(victim.pid, signal.SIGSTOP)
    ok, failed = [], 0
    try:
        for _ in range(40):
            r = await cust.request("conv.open", _timeout=10)
            if r["type"] == "ok":
                ok.append(r)
            else:
                assert r["code"] == "unavailable", r
                failed += 1
            if failed >= 2 and len(ok) >= want_ok:
                break
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    assert len(ok) >= want_ok and failed >= 2, (failed, ok)
    return ok


def test_ticket_counters_need_only_the_conversations_master(spawn):
    """A channel-day's tickets come from 16 counters in the lifecycle partitions' slots, each
    conversation's from one on its own master: while one master is frozen, a conv.open whose
    conversation lives elsewhere gets a ticket, though the channel's single counter of earlier
    versions (read once per channel and day, before the freeze) is on the frozen master."""
    rc, g, slots, queue, victim, channel = frozen_master_setup(spawn, "tick", counter_on_victim=True)

    def counter_master(ticket):
        p = (int(ticket.rsplit("-", 1)[1]) - 1) % H.PARTS
        return rc.master_of(f"kefu:{{{H.EV_TAGS[p]}}}:ticket:{channel}-{ticket.split('-')[-2]}",
                            slots)

    async def body():
        sub = rc.user_id("cust", slots, off=victim)
        cust = await connect(g, "customer", "json", sub=sub, channel=channel)
        convs, seqs = [], []
        for _ in range(6):   # before the freeze: the day is marked, counters on each conv's master
            r = await cust.ok("conv.open")
            assert counter_master(r["ticket"]) is rc.master_of(f"kefu:{{c:{r['conv']}}}:meta",
                                                                 slots), r
            convs.append(r["conv"])
            seqs.append(r["ticket"])
        ok = await opens_while_frozen(cust, victim, 6)
        for r in ok:
            assert rc.master_of(f"kefu:{{c:{r['conv']}}}:meta", slots) is not victim
            assert counter_master(r["ticket"]) is not victim
        seqs += [r["ticket"] for r in ok]
        assert len(set(seqs)) == len(seqs), seqs
        return convs + [r["conv"] for r in ok]
    convs = run(body(), timeout=90)
    assert sorted(rc.call("ZRANGE", queue, "0", "-1")) == sorted(convs)


def test_open_that_fails_on_a_frozen_master_leaves_no_queue_entry(spawn):
    """conv.open stores the conversation's own keys first and queues it only then: a new
    conversation whose keys fall on a frozen master is answered `unavailable` and never waits
    in the queue (where a worker would reserve an agent for a conversation that does not
    exist), nor in the customer's set of conversations."""
    rc, g, slots, queue, victim, channel = frozen_master_setup(spawn, "openq", counter_on_victim=False)

    async def body():
        sub = rc.user_id("cust", slots, off=victim)
        cust = await connect(g, "customer", "json", sub=sub, channel=channel)
        ok = await opens_while_frozen(cust, victim, 2)
        return sub, [r["conv"] for r in ok]
    sub, ok = run(body(), timeout=90)
    # only the conversations that were opened wait, and only they are the customer's
    assert sorted(rc.call("ZRANGE", queue, "0", "-1")) == sorted(ok)
    wait_for(lambda: sorted(rc.call("SMEMBERS", f"kefu:{{u:{sub}}}:convs")) == sorted(ok), 10,
             "the customer's conversations")
