"""The gateway's /readyz as a load balancer sees it: 503 draining for the whole drain (the port
keeps answering, upgrades are refused with 503), and the Redis coverage in its body, 200 while
most of the cluster is reached, 503 once it is not."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

import kefu_harness as H
from kefu_client import RawWS


def readyz(g):
    """(status, parsed body) of /readyz; (None, None) when the connection fails."""
    try:
        st, body, headers = g.get("/readyz", timeout=2.0)
    except OSError:
        return None, None
    assert headers.get("content-type") == "application/json", headers
    return st, json.loads(body)


def test_drain_answers_readyz_503_and_refuses_upgrades(spawn):
    """SIGTERM to the master while a client that never completes the closing handshake holds
    the drain open (it is cut after 3 s): meanwhile the port keeps answering, /readyz says 503
    draining, /healthz 200, and a new upgrade gets 503 with Retry-After, not a refused
    connection that a health check cannot tell from a dead host."""
    g = spawn.gateway([spawn.redis()], name="drn", drain_timeout_ms=20000)
    st, r = readyz(g)
    assert st == 200 and r == {"status": "ready", "processes": 1, "processes_ready": 1,
                               "processes_draining": 0, "slots_covered": 16384, "slots": 16384,
                               "masters_up": 1, "masters": 1}, r
    stuck = RawWS(g)                  # upgraded, never read again: it never answers the close
    assert stuck.status == 101
    H.wait_until(lambda: g.metrics().get("kefu_connections", role="unauthenticated") == 1,
                 what="the client counted")
    t0 = time.monotonic()
    g.proc.send_signal(signal.SIGTERM)
    seen = []

    def draining():
        st, r = readyz(g)
        seen.append(st)
        return st == 503 and r["status"] == "draining"
    H.wait_until(draining, timeout=2, interval=0.01, what="/readyz 503 draining")
    assert None not in seen, f"/readyz refused during the drain: {seen}"
    st, r = readyz(g)
    assert st == 503 and r["status"] == "draining" and r["processes_draining"] == 1, r
    assert r["processes_ready"] == 0 and r["slots_covered"] == 16384, r
    assert g.status("/healthz") == 200
    late = RawWS(g)
    assert late.status == 503, late.status
    assert late.headers.get("retry-after") == "1", late.headers
    assert b"draining" in late.buf
    late.sock.close()
    assert g.proc.alive() and time.monotonic() - t0 < 2.5, "the drain was over before the checks"
    # the stuck client is cut 3 s into the drain, then the process and the master exit
    assert g.proc.wait(10) == 0, g.proc.tail(20)
    assert g.status("/readyz") is None
    stuck.sock.close()


def test_readyz_reports_coverage_and_needs_most_slots(spawn):
    """A cluster without replicas loses the master of the node's inbox: the gateway stays ready
    (every gateway misses the same third; the balancer keeps them all) and its body says what
    it reaches. A second master lost leaves less than half of the slots: 503 not ready."""
    rc = spawn.redis_cluster(replicas=0)
    g = spawn.gateway(rc.addrs, name="cov", redis_timeout_ms=1000)
    slots = rc.slots()
    st, r = readyz(g)
    assert st == 200 and r["status"] == "ready", r
    assert (r["slots_covered"], r["masters_up"], r["masters"]) == (16384, 3, 3), r

    def owned(node):
        return sum(rng[1] - rng[0] + 1 for rng in slots if int(rng[2][1]) == node.port)
    first = rc.master_of(f"kefu:{{n:{g.name}-0}}:inbox", slots)
    second = next(m for m in rc.masters_now(slots) if m is not first)
    first.stop(signal.SIGKILL)
    H.wait_until(lambda: readyz(g)[1]["masters_up"] == 2, timeout=6, what="one master down")
    st, r = readyz(g)
    assert st == 200 and r["status"] == "ready", r
    assert (r["slots_covered"], r["masters"]) == (16384 - owned(first), 3), r
    second.stop(signal.SIGKILL)
    H.wait_until(lambda: readyz(g)[1]["masters_up"] == 1, timeout=6, what="two masters down")
    st, r = readyz(g)
    assert st == 503 and r["status"] == "not ready", r
    assert r["slots_covered"] == 16384 - owned(first) - owned(second) < 8192, r
    assert g.status("/healthz") == 200


def test_drain_behind_haproxy(spawn):
    """deploy/haproxy.cfg in front of two hosts, one of which drains (held open by a client
    that never answers the close): before HAProxy's checks mark it down, least connections
    sends it every other new client; its 503 is retried on the other host, so every upgrade
    through HAProxy succeeds."""
    from test_scaleout import HAPROXY, HAProxy
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed (scripts/deps.sh installs it)")
    redis = spawn.redis()
    h1 = spawn.gateway([redis], name="dh1", drain_timeout_ms=20000)
    h2 = spawn.gateway([redis], name="dh2", drain_timeout_ms=20000)
    lb = HAProxy(spawn.workdir, [("h1", h1), ("h2", h2)])
    lb.start()
    try:
        lb.wait_status({"h1": "UP", "h2": "UP"})
        stuck = RawWS(h1)
        assert stuck.status == 101
        h1.proc.send_signal(signal.SIGTERM)
        H.wait_until(lambda: readyz(h1)[0] == 503, timeout=2, interval=0.01, what="h1 draining")
        clients = [RawWS((H.HOST, lb.port)) for _ in range(8)]
        statuses = [c.status for c in clients]
        assert lb.status()["h1"] != "DOWN", "too slow: HAProxy had already taken h1 out"
        assert statuses == [101] * 8, statuses
        for c in clients + [stuck]:
            c.sock.close()
        assert h1.proc.wait(10) == 0
    finally:
        lb.stop()
        if lb in H.LIVE:
            H.LIVE.remove(lb)


def test_one_process_drains_its_siblings_take_new_clients(spawn):
    """SIGTERM to one process of a running host (not to the master): that process closes its
    listening socket at once, so every new upgrade lands on its sibling; the host says 503
    draining until the master has started a fresh process."""
    from test_master import children
    g = spawn.gateway([spawn.redis()], name="one", processes=2, drain_timeout_ms=20000)
    stuck = []
    while True:                       # a client that never answers the close on each process
        stuck.append(RawWS(g))
        m = g.metrics()
        if all(m.get("kefu_process_connections", process=str(i)) >= 1 for i in (0, 1)):
            break
        assert len(stuck) < 40, "SO_REUSEPORT never picked one of the processes"
    victim = children(g.proc.pid)[0]
    os.kill(victim, signal.SIGTERM)
    H.wait_until(lambda: readyz(g)[0] == 503, timeout=2, interval=0.01, what="503 draining")
    assert readyz(g)[1]["processes_draining"] == 1
    late = [RawWS(g) for _ in range(10)]
    assert [c.status for c in late] == [101] * 10
    assert os.path.exists(f"/proc/{victim}"), "the drain was over before the checks"
    for c in late + stuck:
        c.sock.close()
    g.wait_ready(10)
