"""Fixtures: a session cluster (one stand-alone redis-server, two gateway nodes), a spawner for dedicated
nodes with special limits, per-test sanitizer scans of every gateway log, time limits."""

import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import kefu_harness as H

TEST_TIME_LIMIT = int(os.environ.get("KEFU_TEST_TIME_LIMIT", "90"))


class Cluster:
    def __init__(self, nodes, shards):
        self.nodes = nodes
        self.shards = shards

    @property
    def n1(self):
        return self.nodes[0]

    @property
    def n2(self):
        return self.nodes[1]


class Spawner:
    """Starts redis shards, gateways and workers; stops them at teardown and reports sanitizer
    output and bad exit statuses."""

    def __init__(self, workdir, request=None):
        self.request = request
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redises = []
        self.gateways = []
        self.workers = []

    def redis(self, port=None, module=None):
        r = H.Redis(self.workdir / "redis", port=port, module=module).start()
        self.redises.append(r)
        return r

    def redis_cluster(self, **kw):
        """A Redis Cluster (3 masters, 3 replicas by default), stopped at teardown."""
        c = H.RedisCluster(self.workdir / f"rc-{uuid.uuid4().hex[:6]}", **kw)
        self.redises.extend(c.nodes)   # stopped at teardown even when the start fails
        self.use_cluster_last = c
        return c.start()

    def postgres(self):
        """A private PostgreSQL server with a database `kefu` (H.Postgres), stopped at
        teardown."""
        pg = H.Postgres(self.workdir / f"pg-{uuid.uuid4().hex[:6]}").start()
        self.redises.append(pg)
        return pg

    def gateway(self, shards, name="x", ready=True, **opts):
        # unique node ids: dedicated nodes share the session shards (inboxes, presence)
        name = f"{name}-{uuid.uuid4().hex[:6]}"
        addrs = [s.addr if hasattr(s, "addr") else s for s in shards]
        g = H.Gateway(self.workdir, addrs, name=name, **opts)
        self.gateways.append(g)
        return g.start(ready=ready)

    def worker(self, shards, name="w", ready=True, **opts):
        """A kefu-worker on these shards (unique consumer name); ready once it published its
        configuration."""
        name = f"{name}-{uuid.uuid4().hex[:6]}"
        w = H.Worker(self.workdir, shards, name=name, **opts)
        self.workers.append(w)
        return w.start(ready=ready)

    def teardown(self):
        problems = []
        rep = getattr(self.request.node, "rep_call", None) if self.request else None
        if rep is not None and rep.failed:
            for g in self.gateways + self.workers:
                if g.proc.p is not None:
                    print(f"\n--- {g.proc.name} log tail ---\n{g.proc.tail(40)}")
        for g in self.workers + self.gateways:
            p = g.proc
            if p.p is None:
                continue
            was_alive = p.alive()
            rc = p.stop(signal.SIGTERM, timeout=10)
            if p in H.LIVE:
                H.LIVE.remove(p)
            bad = p.new_sanitizer_lines()
            if bad:
                problems.append(f"{p.name}: sanitizer report:\n" + "\n".join(bad[:40]) +
                                f"\n--- log tail ---\n{p.tail(80)}")
            elif rc != 0 and not p.expect_exit:
                what = "after SIGTERM" if was_alive else "(died during the test)"
                problems.append(f"{p.name}: exit status {rc} {what}\n"
                                f"--- log tail ---\n{p.tail(40)}")
        for r in self.redises:
            r.stop(signal.SIGTERM, timeout=5)
            if r in H.LIVE:
                H.LIVE.remove(r)
        self.gateways.clear()
        self.workers.clear()
        self.redises.clear()
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture(scope="session")
def workdir():
    d = tempfile.mkdtemp(prefix="kefu-itest-")
    yield Path(d)
    if os.environ.get("KEFU_TEST_KEEP") != "1":
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"\nkept logs in {d}")


@pytest.fixture(scope="session")
def _session_spawner(workdir):
    sp = Spawner(workdir / "session")
    yield sp
    sp.teardown()


@pytest.fixture(scope="session")
def cluster(_session_spawner):
    """One stand-alone redis-server and two gateway nodes n1, n2 (or twice KEFU_TEST_GATEWAY).
    The Redis Cluster tests (test_cluster.py) start their own cluster."""
    if H.EXTERNAL:
        g = H.Gateway.external(H.EXTERNAL)
        return Cluster([g, g], [])
    shards = [_session_spawner.redis()]
    nodes = [_session_spawner.gateway(shards, name="n1"), _session_spawner.gateway(shards, name="n2")]
    return Cluster(nodes, shards)


@pytest.fixture
def spawn(workdir, request):
    """Dedicated processes for one test (skipped against an external gateway)."""
    if H.EXTERNAL:
        pytest.skip("needs process control (KEFU_TEST_GATEWAY is set)")
    sp = Spawner(workdir / request.node.name.replace("/", "_")[:80], request)
    yield sp
    if "browser" in sys.modules:  # browsers first: their pages hold connections open
        sys.modules["browser"].quit_all()
    sp.teardown()


@pytest.fixture
def local_only():
    if H.EXTERNAL:
        pytest.skip("needs process control (KEFU_TEST_GATEWAY is set)")


def pytest_collection_modifyitems(items):
    """Under pytest-xdist, spreads the tests marked long(seconds) over the first batches the
    workers get, so that no worker runs several long drills while the others are done. xdist's
    load scheduling hands each worker a first batch of consecutive tests (len // workers // 4
    of them), then more on demand; were that to change, only the balance would suffer. A
    serial run keeps the file order."""
    n = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if n < 2:
        return
    seconds = {it: it.get_closest_marker("long").args[0]
               for it in items if it.get_closest_marker("long")}
    rest = [it for it in items if it not in seconds]
    batches, load = [[] for _ in range(n)], [0] * n
    for it in sorted(seconds, key=seconds.get, reverse=True):
        k = load.index(min(load))
        batches[k].append(it)
        load[k] += seconds[it]
    size = max(len(items) // n // 4, 2)
    out = []
    for b in batches:
        fill = max(size - len(b), 0)
        out += b + rest[:fill]
        rest = rest[fill:]
    items[:] = out + rest


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _alarm(signum, frame):
    raise TimeoutError(f"test exceeded {TEST_TIME_LIMIT}s")


@pytest.fixture(autouse=True)
def _guard(request):
    """Bounds the test's time; afterwards scans every running gateway's new log lines for
    sanitizer reports, checks the session nodes are alive, prints log tails on failure."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TEST_TIME_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
    problems = []
    for p in list(H.LIVE):
        bad = p.new_sanitizer_lines()
        if bad:
            problems.append(f"{p.name}: sanitizer report:\n" + "\n".join(bad[:40]) +
                            f"\n--- log tail ---\n{p.tail(80)}")
        if p.scan and not p.alive() and p.name.startswith("gateway:n"):
            problems.append(f"{p.name} died (exit {p.p.returncode}):\n{p.tail(60)}")
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for p in list(H.LIVE):
            if p.scan:
                print(f"\n--- {p.name} log tail ---\n{p.tail(30)}")
    if problems:
        # Restart dead session nodes so one crash does not fail every later test.
        for p in list(H.LIVE):
            if p.scan and not p.alive() and p.name.startswith("gateway:n"):
                p.start()
        pytest.fail("\n\n".join(problems), pytrace=False)
