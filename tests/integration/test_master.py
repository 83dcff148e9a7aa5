"""The gateway's master process: it never misses a signal (SIGTERM drains promptly whenever it
arrives, SIGHUP reaches every process) and it restarts a process that dies."""

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import kefu_harness as H

DRAIN_MS = 1000
PROMPT_S = DRAIN_MS / 1000 + 4     # drain_timeout_ms plus start-up and scheduling slack


def children(pid):
    """Pids whose parent is pid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(d))
    return out


def assert_exits_promptly(g, what):
    t0 = time.monotonic()
    rc = g.proc.wait(PROMPT_S)
    assert rc is not None, (f"master still running {PROMPT_S:.0f}s after SIGTERM ({what}):\n"
                            f"{g.proc.tail(20)}")
    H.wait_until(lambda: not g.proc.group_alive(), timeout=3,
                 what="every gateway process gone")
    return time.monotonic() - t0


def test_sighup_reaches_every_process(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="hup", processes=3, drain_timeout_ms=DRAIN_MS)
    for n in (3, 6):
        g.proc.send_signal(signal.SIGHUP)
        H.wait_until(lambda: g.proc.log_text().count("SIGHUP: configuration reloaded") == n,
                     timeout=5, what=f"{n} reload lines")
    g.proc.send_signal(signal.SIGTERM)
    assert_exits_promptly(g, "after reloads")
    assert g.proc.p.returncode == 0


@pytest.fixture(scope="module")
def waitpid_delay(tmp_path_factory):
    """The waitpid() delay shim, compiled for this run."""
    cc = shutil.which("cc")
    if not cc:
        pytest.skip("needs a C compiler for the LD_PRELOAD shim")
    so = tmp_path_factory.mktemp("shim") / "waitpid_delay.so"
    src = Path(__file__).with_name("waitpid_delay.c")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(so), str(src), "-ldl"], check=True)
    return so


def test_sigterm_right_after_sighup_is_not_missed(spawn, cluster, waitpid_delay):
    """SIGHUP, then SIGTERM while the master is between handling it and waiting again (the shim
    holds every waitpid() 400 ms first). A master that checks its flags and then blocks in
    waitpid() keeps that SIGTERM until a process exits: here, never."""
    env = {"LD_PRELOAD": str(waitpid_delay), "KEFU_TEST_WAITPID_DELAY_MS": "400",
           # an ASan build wants its runtime first in the list
           "ASAN_OPTIONS": H.child_env()["ASAN_OPTIONS"] + ":verify_asan_link_order=0"}
    for round_ in range(2):
        g = spawn.gateway(cluster.shards, name=f"hupterm{round_}", processes=2,
                          drain_timeout_ms=DRAIN_MS, env=env)
        time.sleep(0.5)            # past the master's first wait
        g.proc.send_signal(signal.SIGHUP)
        time.sleep(0.1 + 0.1 * round_)
        g.proc.send_signal(signal.SIGTERM)
        assert_exits_promptly(g, "sent while the master was about to wait")
        assert g.proc.log_text().count("SIGTERM: draining") == 1


def test_sigterm_at_start_up_is_not_missed(spawn, cluster):
    """SIGTERM at many moments of the start: before, while and after the processes start."""
    rnd = random.Random(10)
    for i in range(12):
        g = spawn.gateway(cluster.shards, name=f"termstart{i}", processes=2, ready=False,
                          drain_timeout_ms=DRAIN_MS)
        g.proc.expect_exit = True  # a process killed before it set up its handlers fails
        time.sleep(rnd.uniform(0, 0.4))
        g.proc.send_signal(signal.SIGTERM)
        assert_exits_promptly(g, f"start-up, round {i}")


def test_restart_then_sigterm_is_not_missed(spawn, cluster):
    """A killed process is restarted (a second later when it had just started); SIGTERM right
    after a death or a restart still drains at once, and nothing is restarted after it."""
    rnd = random.Random(11)
    for i in range(6):
        g = spawn.gateway(cluster.shards, name=f"restart{i}", processes=2,
                          drain_timeout_ms=DRAIN_MS)
        g.proc.expect_exit = True  # the killed process makes the exit status 1
        kids = H.wait_until(lambda: len(children(g.proc.pid)) == 2 and children(g.proc.pid),
                            what="two gateway processes")
        os.kill(kids[0], signal.SIGKILL)
        if i % 2:
            # let the restart happen first, then SIGTERM just after it
            H.wait_until(lambda: len(set(children(g.proc.pid)) - set(kids)) == 1, timeout=5,
                         what="the killed process restarted")
        time.sleep(rnd.uniform(0, 0.05))
        g.proc.send_signal(signal.SIGTERM)
        assert_exits_promptly(g, f"after a restart, round {i}")
        log = g.proc.log_text()
        # SIGTERM may reach the master before it reaps the killed process: the death is then
        # told as one "while draining", and nothing is restarted either way
        assert "died (signal 9)" in log, log
        after = log.split("SIGTERM: draining", 1)[1]
        assert "restarting" not in after, after
