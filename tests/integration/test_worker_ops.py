"""The worker's operations side: /healthz, /readyz (and what makes it 503), /metrics, 404/405,
--wait-ready, the drain on SIGTERM; and pushes to supervisors who have just subscribed to
monitoring (queue lengths, SLA alerts), which a cached supervisor list used to skip."""

import asyncio
import http.client
import re
import signal
import subprocess
import time

import kefu_harness as H
from kefu_client import connect, run
from worker_helpers import agent_on, assigned_to, open_waiting, sanitized, wcluster


def metrics(w):
    """The worker's /metrics as {name or name{labels}: value}; checks every sample has its
    HELP and TYPE lines and the kefu_worker_ prefix."""
    st, body, hdr = w.http("/metrics")
    assert st == 200 and hdr["content-type"].startswith("text/plain; version=0.0.4"), (st, hdr)
    helped, typed, out = set(), {}, {}
    for line in body.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split()[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            typed[name] = kind
        elif line:
            key, value = line.rsplit(" ", 1)
            name = re.sub(r"(_bucket|_sum|_count)$", "", key.split("{")[0]) \
                if key.split("{")[0] not in typed else key.split("{")[0]
            assert name.startswith("kefu_worker_"), line
            assert name in helped and name in typed, f"no HELP/TYPE for {line}"
            out[key] = float(value)
    return out


def wait_for(pred, timeout, what):
    return H.wait_until(pred, timeout=timeout, what=what)


def wait_ready_cmd(w, timeout_s):
    """kefu-worker --wait-ready for the worker w (same port); (exit status, stderr)."""
    r = subprocess.run([str(H.find_bin("kefu-worker")), "--http-port", str(w.http_port),
                        f"--wait-ready={timeout_s}"], capture_output=True, text=True,
                       timeout=timeout_s + 10, env=H.child_env())
    return r.returncode, r.stderr


def test_ready_only_once_redis_group_and_config_are_there(spawn, tmp_path):
    port = H.free_fixed_port()
    w = spawn.worker([f"{H.HOST}:{port}"], ready=False)
    # alive before Redis exists; not ready, and says why
    wait_for(lambda: w.http("/healthz")[:2] == (200, "ok\n"), 5, "/healthz")
    st, body, _ = w.http("/readyz")
    assert st == 503 and body.startswith("redis: 0 of 16384 slots reachable"), (st, body)
    assert metrics(w)["kefu_worker_ready"] == 0
    rc, err = wait_ready_cmd(w, 0.3)
    assert rc == 1 and "not ready after 0.3 s: 503 redis: 0 of 16384" in err, (rc, err)

    # Redis comes, but the lifecycle stream and the configuration hash are in the way (wrong
    # types): connected is not enough
    r = spawn.redis(port=port)
    r.call("SET", H.lifecycle_key(5), "not a stream")   # one partition is enough
    r.call("SET", "kefu:{staff}:config", "not a hash")
    wait_for(lambda: w.http("/readyz")[1].startswith("not reading the lifecycle stream"), 10,
             "503 for the consumer group")
    assert w.http("/readyz")[0] == 503
    m = metrics(w)
    assert m["kefu_worker_consumer_group_reading"] == 0 and m["kefu_worker_ready"] == 0
    assert m['kefu_worker_redis_slots_up{client="commands"}'] == 16384
    assert m['kefu_worker_redis_slots_up{client="reader"}'] == 16384

    # one broken partition holds up only itself: the other 15 are read
    assert m["kefu_worker_event_partitions_reading"] == 15
    r.call("DEL", H.lifecycle_key(5))   # the worker creates the group and reads it
    wait_for(lambda: w.http("/readyz")[1] == "configuration not published yet\n", 5,
             "503 for the configuration")
    assert metrics(w)["kefu_worker_consumer_group_reading"] == 1
    assert metrics(w)["kefu_worker_event_partitions_reading"] == 16
    assert metrics(w)["kefu_worker_config_published"] == 0

    r.call("DEL", "kefu:{staff}:config")
    w.proc.send_signal(signal.SIGHUP)      # a reload publishes again
    wait_for(lambda: w.http("/readyz")[:2] == (200, "ready\n"), 5, "200 ready")
    assert w.published()
    m = metrics(w)
    assert m["kefu_worker_ready"] == 1 and m["kefu_worker_config_published"] == 1
    assert wait_ready_cmd(w, 5) == (0, "")

    # Redis gone: not ready again
    r.stop()
    wait_for(lambda: w.http("/readyz")[1].startswith("redis: 0 of 16384"), 10,
             "503 after Redis went away")
    assert w.http("/readyz")[0] == 503
    assert w.http("/healthz")[0] == 200


def test_unknown_paths_and_methods(spawn):
    r = spawn.redis()
    w = spawn.worker([r])
    assert w.http("/nope")[0] == 404
    assert w.http("/readyz?verbose=1")[:2] == (200, "ready\n")   # a query does not matter
    for method in ("POST", "PUT", "DELETE"):
        for path in ("/metrics", "/readyz", "/healthz"):
            c = http.client.HTTPConnection(H.HOST, w.http_port, timeout=3)
            c.request(method, path, body=b"x")
            resp = c.getresponse()
            assert resp.status == 405 and resp.getheader("Allow") == "GET, HEAD", (method, path)
            c.close()
    c = http.client.HTTPConnection(H.HOST, w.http_port, timeout=3)
    c.request("HEAD", "/readyz")
    resp = c.getresponse()
    assert resp.status == 200 and resp.read() == b""
    c.close()


def test_port_in_use_and_port_zero(spawn):
    r = spawn.redis()
    w = spawn.worker([r])
    # a second worker on the same port refuses to start, saying why
    other = spawn.worker([r], name="dup", ready=False, http_port=w.http_port)
    assert other.proc.wait(10) == 2
    other.proc.expect_exit = True
    assert f"cannot listen on 127.0.0.1 port {w.http_port}" in other.proc.log_text()
    # http_port 0: no listener, and --wait-ready says it has nothing to ask
    off = spawn.worker([r], name="off", ready=False, http_port=0)
    wait_for(off.published, 10, "the worker without a listener publishing")
    res = subprocess.run([str(H.find_bin("kefu-worker")), "--http-port", "0", "--wait-ready"],
                         capture_output=True, text=True, timeout=10, env=H.child_env())
    assert res.returncode == 2 and "needs http_port" in res.stderr


def test_metrics_move_with_an_assignment(spawn):
    wc = wcluster(spawn, workers=1)
    w = wc.workers[0]
    before = metrics(w)
    assert before["kefu_worker_ready"] == 1

    async def body():
        agent = await agent_on(wc.n1)
        cust = await connect(wc.n2, "customer", "json")
        conv = await open_waiting(cust)
        await assigned_to(agent, conv)

    run(body())
    wait_for(lambda: metrics(w)["kefu_worker_assigned_total"] == before["kefu_worker_assigned_total"] + 1,
             5, "kefu_worker_assigned_total + 1")
    after = metrics(w)
    assert after["kefu_worker_events_total"] > before["kefu_worker_events_total"]
    assert after["kefu_worker_pushes_total"] > before["kefu_worker_pushes_total"]
    assert after["kefu_worker_push_entries_total"] > before["kefu_worker_push_entries_total"]
    assert after['kefu_worker_redis_commands_total{client="commands"}'] > \
        before['kefu_worker_redis_commands_total{client="commands"}']
    assert after["kefu_worker_redis_command_seconds_count"] == \
        after['kefu_worker_redis_command_seconds_bucket{le="+Inf"}']
    assert after['kefu_worker_redis_masters_up{client="commands"}'] == 1
    for name in ("kefu_worker_events_failed_total", "kefu_worker_monitor_dropped_total",
                 'kefu_worker_redis_failures_total{client="commands"}'):
        assert after[name] == 0, name


def worker_on_frozen_redis(spawn):
    """A worker whose Redis is frozen (SIGSTOP; the caller sends SIGCONT) once a command of
    it waits there (the SLA poll, every 20 ms): a drain then has something to wait for."""
    r = spawn.redis()
    w = spawn.worker([r])
    r.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: metrics(w)['kefu_worker_redis_pending{client="commands"}'] > 0, 5,
                 "a command waiting for the frozen Redis")
    except BaseException:
        r.send_signal(signal.SIGCONT)
        raise
    return r, w


def test_readyz_503_while_draining(spawn):
    """SIGTERM: no new work, the commands already sent are answered, then exit; /readyz says
    503 stopping meanwhile. Redis is frozen so that the drain has something to wait for."""
    r, w = worker_on_frozen_redis(spawn)
    try:
        w.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: w.http("/readyz")[:2] == (503, "stopping\n"), 2, "503 stopping")
        assert w.http("/healthz")[0] == 200
        assert w.proc.alive()
    finally:
        r.send_signal(signal.SIGCONT)
    # answered: it exits at once, well within the drain's bound
    assert w.proc.wait(1.5) == 0, w.proc.tail()
    assert "stopping with" not in w.proc.log_text()


def test_drain_bound_when_redis_never_answers(spawn):
    r, w = worker_on_frozen_redis(spawn)
    try:
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        assert w.proc.wait(5) == 0, w.proc.tail()
        took = time.monotonic() - t0
        assert 1.8 <= took < (4 if sanitized() else 3), took
        assert "Redis commands unanswered" in w.proc.log_text()
    finally:
        r.send_signal(signal.SIGCONT)


# ---- monitoring supervisors get every push after their monitor.subscribe was answered ----

def test_new_monitors_get_the_next_queue_push(spawn):
    groups = ["qa", "qb", "qc", "qd"]
    wc = wcluster(spawn, workers=1, position_interval_ms=100,
                  routes=",".join(f"topic:{g}={g}" for g in groups) + ",*=default")

    async def body():
        cust = await connect(wc.n1, "customer", "json")
        sups = []
        # Each round: a new supervisor subscribes and at once a group's queue grows. Every
        # supervisor subscribed so far, the newest included, must get that group's new length;
        # the worker used to push with a list up to a second old, read after its previous push.
        for g in groups:
            sup = await connect(wc.n2, "supervisor", "json")
            await sup.ok("monitor.subscribe")
            sups.append(sup)
            await open_waiting(cust, topic=f"{g}: help")
            for s in sups:
                p = await s.next_push("monitor", kind="queue", group=g, waiting=1, timeout=3)
                assert p["waiting"] == 1
    run(body())


def test_new_monitor_gets_the_next_sla_alert(spawn):
    wc = wcluster(spawn, workers=1, sla_respond_ms="*=1000", sla_resolve_ms="*=0",
                  sla_first_response_ms="*=0")

    async def body():
        early = await connect(wc.n2, "supervisor", "json")
        await early.ok("monitor.subscribe")
        cust = await connect(wc.n1, "customer", "json")
        conv = await open_waiting(cust)
        # the queue push goes out (the worker reads the supervisors for it); a second
        # supervisor subscribes before the response deadline, less than a second after that read
        await asyncio.sleep(0.3)
        late = await connect(wc.n1, "supervisor", "json")
        await late.ok("monitor.subscribe")
        for s in (early, late):
            a = await s.next_push("alert", conv=conv, kind="sla.respond", timeout=4)
            assert a["conv"] == conv
    run(body())


def test_wait_ready_returns_as_soon_as_the_worker_is_ready(spawn):
    port = H.free_fixed_port()
    w = spawn.worker([f"{H.HOST}:{port}"], ready=False)
    p = subprocess.Popen([str(H.find_bin("kefu-worker")), "--http-port", str(w.http_port),
                          "--wait-ready", "20"], stderr=subprocess.PIPE, text=True,
                         env=H.child_env())
    try:
        time.sleep(0.5)
        assert p.poll() is None, "--wait-ready returned before Redis existed"
        spawn.redis(port=port)
        t0 = time.monotonic()
        assert p.wait(15) == 0, p.stderr.read()
        assert time.monotonic() - t0 < 8
        assert w.http("/readyz")[0] == 200
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
