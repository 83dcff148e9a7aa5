"""Scale-out behind a load balancer: Debian's HAProxy, started here with deploy/haproxy.cfg (its
bind and server lines replaced by loopback ones), in front of two gateway hosts on one Redis.
Under load, one host is killed (kill -9) and comes back; then both are restarted in turn (a
rolling restart, SIGTERM). The clients (kefu-load relay, following the protocol's rules)
reconnect through HAProxy and resume; no acknowledged message is lost or stored twice."""

import csv
import io
import json
import socket
import subprocess
import time
from pathlib import Path

import pytest

import kefu_harness as H

HAPROXY = "/usr/sbin/haproxy"
REPO = Path(__file__).resolve().parents[2]


class HAProxy(H.Proc):
    def __init__(self, workdir, backends):
        self.port = H.free_port()
        self.sock = Path(workdir) / f"haproxy-{self.port}.sock"
        text = (REPO / "deploy" / "haproxy.cfg").read_text()
        lines = []
        for line in text.splitlines():
            s = line.strip()
            if s.startswith("server "):
                continue
            if s == "bind :8000":
                line = f"    bind {H.HOST}:{self.port}"
            if s.startswith("maxconn"):
                line = "    maxconn 4000"
            lines.append(line)
            if s == "global":
                lines.append(f"    stats socket {self.sock} level admin")
        assert any(l.strip() == f"bind {H.HOST}:{self.port}" for l in lines), \
            "deploy/haproxy.cfg no longer has the 'bind :8000' line this test replaces"
        lines += [f"    server {name} {H.HOST}:{g.port} check" for name, g in backends]
        self.cfg = Path(workdir) / f"haproxy-{self.port}.cfg"
        self.cfg.write_text("\n".join(lines) + "\n")
        super().__init__(f"haproxy:{self.port}", [HAPROXY, "-db", "-f", self.cfg],
                         Path(workdir) / f"haproxy-{self.port}.log", scan=False)

    @property
    def ws_url(self):
        return f"ws://{H.HOST}:{self.port}/ws"

    def status(self):
        """Server name -> HAProxy's status (UP, DOWN, ...) in the gateways' backend."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = csv.DictReader(io.StringIO(data.decode().lstrip("# ")))
        return {r["svname"]: r["status"].split()[0] for r in rows
                if r["pxname"] == "kefu_gateways" and r["svname"] not in ("BACKEND", "FRONTEND")}

    def wait_status(self, want, timeout=15):
        H.wait_until(lambda: self.sock.exists() and all(self.status().get(k) == v
                                                        for k, v in want.items()),
                     timeout=timeout, what=f"haproxy servers {want}")


def test_haproxy_example_config_is_valid():
    r = subprocess.run([HAPROXY, "-c", "-f", str(REPO / "deploy" / "haproxy.cfg")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.long(57)
def test_host_killed_and_rolling_restart_behind_haproxy(spawn, tmp_path):
    if not Path(HAPROXY).exists():
        pytest.skip("haproxy is not installed (scripts/deps.sh installs it)")
    redis = spawn.redis()
    opts = dict(rate_per_s=100000, rate_burst=100000, drain_timeout_ms=2000, log_level="info")
    h1 = spawn.gateway([redis], name="h1", **opts)
    h2 = spawn.gateway([redis], name="h2", **opts)
    lb = HAProxy(spawn.workdir, [("h1", h1), ("h2", h2)])
    lb.start()
    try:
        lb.wait_status({"h1": "UP", "h2": "UP"})
        jf = tmp_path / "relay.json"
        load = subprocess.Popen(
            [str(H.find_bin("kefu-load")), "relay", "--url", lb.ws_url, "--url", lb.ws_url,
             "--pairs", "60", "--rate", "600", "--duration", "24", "--drain", "30",
             "--secret", H.SECRETS[0], "--quiet", "--json", str(jf)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(4)
        # a host dies: its clients reconnect through HAProxy to the other one
        h1.proc.expect_exit = True
        h1.proc.kill_group()
        h1.proc.p.wait(5)
        lb.wait_status({"h1": "DOWN"}, timeout=10)
        h1.proc.expect_exit = False
        h1.start()                        # same node name and port: its inbox carries over
        lb.wait_status({"h1": "UP", "h2": "UP"})
        # rolling restart: each host drains (SIGTERM), exits, and starts again
        for h in (h2, h1):
            assert h.proc.stop() == 0, f"{h.proc.name} did not drain cleanly"
            h.start()
            lb.wait_status({"h1": "UP", "h2": "UP"})
        out, _ = load.communicate(timeout=150)
        assert jf.exists(), f"kefu-load relay exited {load.returncode}:\n{out.decode()[-3000:]}"
        c = json.loads(jf.read_text())["counters"]
        print(out.decode()[-1500:])
        assert c["acked"] > 5000, c
        assert c["reconnects"] > 0, "no client had to reconnect: did the hosts go down?"
        assert c.get("lost", 0) == 0, f"acknowledged messages never seen: {c}"
        assert c.get("duplicated", 0) == 0, c
    finally:
        lb.stop()
        if lb in H.LIVE:
            H.LIVE.remove(lb)
