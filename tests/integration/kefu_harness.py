"""Process harness for the kefu integration tests: redis-server shards, gateway nodes, workers,
HTTP probes, Prometheus metrics, JWT minting, sanitizer scanning of the process logs."""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("KEFU_BIN_DIR") or (REPO / "build"))
REDIS_SERVER = os.environ.get("KEFU_REDIS_SERVER", "/usr/bin/redis-server")
# KEFU_TEST_REDIS_MODULE=<path of kefu_redis.so>: every redis-server the tests start loads the
# kefu Redis module, so the gateways store msg.send with KEFU.MSGSEND instead of the script.
REDIS_MODULE = os.environ.get("KEFU_TEST_REDIS_MODULE", "")
REDIS_CLI = os.environ.get("KEFU_REDIS_CLI", "/usr/bin/redis-cli")
EXTERNAL = os.environ.get("KEFU_TEST_GATEWAY", "").strip()
SECRETS = tuple(
    s for s in os.environ.get(
        "KEFU_TEST_JWT_SECRETS", "kefu-itest-secret-one,kefu-itest-secret-two").split(",") if s)
HOST = "127.0.0.1"

SANITIZER_RE = re.compile(r"AddressSanitizer|LeakSanitizer|runtime error:|SUMMARY:")

# Every process started by the harness that is still running (their logs are scanned).
LIVE = []


# Server ports come from a slice of 20000-31999, below the kernel's ephemeral range (32768 up):
# a server restarted on its port later finds it free again, not taken by some client's outgoing
# connection. Each pytest-xdist worker (PYTEST_XDIST_WORKER gw0, gw1, ...) owns its own slice and
# never hands out a port twice, so two workers, or two servers of one test picked before either
# binds (a Redis Cluster's twelve ports), can never get the same port. The bind check only keeps
# away from other programs' servers.
PORT_LO, PORT_HI = 20000, 32000
_ports_given = set()


def _port_slice():
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = (PORT_HI - PORT_LO) // max(count, 1)
    lo = PORT_LO + (index % max(count, 1)) * width
    return lo, lo + width


def free_port():
    """A port no other server of this test run uses (see above), free when picked."""
    import random
    lo, hi = _port_slice()
    for _ in range(1000):
        p = random.randrange(lo, hi)
        if p in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind((HOST, p))
            except OSError:
                continue
        _ports_given.add(p)
        return p
    raise AssertionError(f"no free port left in {lo}-{hi - 1}")


free_fixed_port = free_port     # the old name: every port is below the ephemeral range now


def wait_until(pred, timeout=5.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or raises AssertionError."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = pred()
        except (OSError, http.client.HTTPException) as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def find_bin(name):
    """A program in KEFU_BIN_DIR, or in the subdirectory CMake puts it in."""
    for sub in ("", "gateway", "tools", "worker"):
        exe = BIN_DIR / sub / name
        if os.access(exe, os.X_OK) and exe.is_file():
            return exe
    raise AssertionError(f"{name} not found under {BIN_DIR} (build first or set KEFU_BIN_DIR)")


def child_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEFU_")}
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
    return env


class Proc:
    """A child process whose stdout+stderr go to a log file."""

    def __init__(self, name, argv, log_path, scan=True, env=None):
        self.extra_env = dict(env or {})
        self.expect_exit = False    # set when a test kills the process on purpose
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.scan = scan
        self._scan_pos = 0
        self.p = None

    def start(self):
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {' '.join(self.argv)}\n".encode())
            log.flush()
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT,
                                      env={**child_env(), **self.extra_env},
                                      start_new_session=True)
        if self not in LIVE:
            LIVE.append(self)
        return self

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def send_signal(self, sig):
        if self.alive():
            self.p.send_signal(sig)

    def wait(self, timeout):
        """Returns the exit status, or None when still running after timeout seconds."""
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stops the process (SIGKILL after timeout); returns its exit status. Children left
        in its process group (a gateway's workers) are killed too."""
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(sig)
            if self.wait(timeout) is None:
                self.p.kill()
                self.p.wait(5)
        self.kill_group()
        return self.p.returncode

    def group_alive(self):
        """True while any process of the group this process leads exists."""
        try:
            os.killpg(self.p.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    def kill_group(self):
        if self.p is not None and self.group_alive():
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def log_text(self):
        try:
            return self.log_path.read_bytes().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def tail(self, n=60):
        lines = self.log_text().splitlines()
        return "\n".join(lines[-n:])

    def new_sanitizer_lines(self):
        """Sanitizer report lines written since the previous call."""
        if not self.scan:
            return []
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._scan_pos)
                data = f.read()
        except FileNotFoundError:
            return []
        # Only consume complete lines; a report being written is picked up next time.
        end = data.rfind(b"\n") + 1
        self._scan_pos += end
        text = data[:end].decode("utf-8", "replace")
        return [ln for ln in text.splitlines()
                if SANITIZER_RE.search(ln) and not ln.startswith("=== start ")]


class Redis(Proc):
    def __init__(self, workdir, port=None, name="redis", module=None):
        """module: path of a Redis module to load; None: KEFU_TEST_REDIS_MODULE's, "": none."""
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        module = REDIS_MODULE if module is None else module
        super().__init__(f"{name}:{self.port}", [
            REDIS_SERVER, "--port", self.port, "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", self.workdir, "--daemonize", "no", "--loglevel", "warning"] +
            (["--loadmodule", module] if module else []),
            self.workdir / f"redis-{self.port}.log", scan=False)

    @property
    def addr(self):
        return f"{HOST}:{self.port}"

    def ping(self):
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout=10.0):
        super().start()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if not self.alive():
                raise AssertionError(f"redis-server on {self.port} exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"redis-server on {self.port} does not answer PING")
            time.sleep(0.02)
        return self

    def call(self, *args):
        return redis_call(self.addr, *args)

    def command(self, *args):
        """Runs one command over RESP and returns the raw reply bytes (test diagnostics)."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection((HOST, self.port), timeout=2) as s:
            s.sendall(out)
            time.sleep(0.05)
            return s.recv(1 << 20)


PG_BIN = Path(os.environ.get("KEFU_PG_BIN", "/usr/lib/postgresql/15/bin"))


class Postgres(Proc):
    """A private PostgreSQL server (Debian's postgresql package) on a loopback port, with trust
    authentication for the loopback and a database `kefu`. PostgreSQL refuses to run as root:
    as root, its data directory belongs to the `postgres` user and it runs as that user.
    url is the libpq connection string kefu's options take; sql() runs a statement with psql
    and returns the rows as lists of strings."""

    def __init__(self, workdir, port=None, name="pg"):
        self.port = port or free_port()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        # its own directory: the postgres user cannot enter the tests' private (0700) workdir
        self.home = Path(tempfile.mkdtemp(prefix="kefu-pg-"))
        self.data = self.home / "data"
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        super().__init__(f"{name}:{self.port}", self.as_user + [
            PG_BIN / "postgres", "-D", self.data, "-p", self.port, "-h", HOST,
            "-k", self.data, "-c", "fsync=off", "-c", "full_page_writes=off",
            "-c", "synchronous_commit=off"],
            self.workdir / f"pg-{self.port}.log", scan=False)

    @property
    def url(self):
        return f"postgresql://postgres@{HOST}:{self.port}/kefu"

    def start(self, timeout=30.0):
        if not self.data.exists():
            if self.as_user:
                shutil.chown(self.home, "postgres")
            subprocess.run(self.as_user + [str(PG_BIN / "initdb"), "-D", str(self.data),
                                           "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                           "--locale=C.UTF-8", "--no-sync"],
                           check=True, capture_output=True, timeout=120)
        super().start()
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run([str(PG_BIN / "pg_isready"), "-h", HOST, "-p", str(self.port)],
                               capture_output=True)
            if r.returncode == 0:
                break
            if not self.alive():
                raise AssertionError(f"postgres on {self.port} exited:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"postgres on {self.port} does not answer")
            time.sleep(0.1)
        if self.sql("SELECT 1 FROM pg_database WHERE datname = 'kefu'", db="postgres") == []:
            self.sql("CREATE DATABASE kefu", db="postgres")
        return self

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        rc = super().stop(sig, timeout)
        if os.environ.get("KEFU_TEST_KEEP") != "1":
            shutil.rmtree(self.home, ignore_errors=True)
        return rc

    def sql(self, statement, db="kefu"):
        r = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-At", "-F", "\t", "-v",
                            "ON_ERROR_STOP=1", "-h", HOST, "-p", str(self.port), "-U",
                            "postgres", "-d", db, "-c", statement],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise AssertionError(f"psql: {statement!r}: {r.stderr.strip()}")
        return [line.split("\t") for line in r.stdout.splitlines()]


class RedisCluster:
    """A Redis Cluster of `masters` masters with `replicas` replicas each, on free loopback
    ports, created with redis-cli --cluster create. Short node timeout, so failovers take about
    a second; cluster-require-full-coverage no, so a failed master stalls only its own slots."""

    def __init__(self, workdir, masters=3, replicas=1, node_timeout_ms=1000, appendonly=False,
                 module=None):
        self.workdir = Path(workdir)
        self.node_timeout_ms = node_timeout_ms
        self.nodes = []
        for i in range(masters * (1 + replicas)):
            d = self.workdir / f"cluster-{i}"
            d.mkdir(parents=True, exist_ok=True)
            r = Redis(d, port=free_port(), name="cluster", module=module)
            r.argv += ["--cluster-enabled", "yes", "--cluster-config-file", str(d / "nodes.conf"),
                       "--cluster-port", str(free_port()),  # not port + 10000
                       "--cluster-node-timeout", str(node_timeout_ms),
                       "--cluster-require-full-coverage", "no",
                       "--cluster-replica-validity-factor", "0",
                       # replicas sync at once, not after the default 5 s of waiting for more
                       "--repl-diskless-sync-delay", "0"]
            if appendonly:
                k = r.argv.index("--appendonly")
                r.argv[k + 1] = "yes"
            self.nodes.append(r)
        self.masters, self.replicas = masters, replicas

    @property
    def addrs(self):
        return [n.addr for n in self.nodes]

    @property
    def addr(self):
        return ",".join(self.addrs[:3])

    def start(self, timeout=30.0):
        for n in self.nodes:
            n.start()
        r = subprocess.run([REDIS_CLI, "--cluster", "create", *self.addrs, "--cluster-replicas",
                            str(self.replicas), "--cluster-yes"], capture_output=True, timeout=60)
        assert r.returncode == 0, f"cluster create failed: {r.stdout.decode()}{r.stderr.decode()}"
        self.wait_ok(timeout)
        return self

    def info(self, node, section="cluster"):
        text = redis_call(node.addr, "CLUSTER", "INFO") if section == "cluster" else \
            redis_call(node.addr, "INFO", section)
        return dict(l.split(":", 1) for l in text.split("\r\n") if ":" in l)

    def wait_ok(self, timeout=30.0):
        """Until every live node says cluster_state:ok and all slots are served by masters that
        the others agree on."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                live = [n for n in self.nodes if n.alive()]
                if all(self.info(n).get("cluster_state") == "ok" and
                       self.info(n).get("cluster_slots_ok") == "16384" and
                       self.replicas_online(n) for n in live):
                    maps = {str(sorted(map(str, redis_call(n.addr, "CLUSTER", "SLOTS"))))
                            for n in live}
                    if len(maps) == 1:
                        return
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis cluster not ok in time")
            time.sleep(0.1)

    def slots(self):
        """The slot map now: CLUSTER SLOTS of a live node."""
        return redis_call(self.live()[0].addr, "CLUSTER", "SLOTS")

    def replicas_online(self, node):
        """A master's replicas have synced (a replica or a master without replicas: True)."""
        info = self.info(node, "replication")
        if info.get("role") != "master":
            return True
        n = int(info.get("connected_slaves", 0))
        return all("state=online" in info.get(f"slave{i}", "") for i in range(n))

    def master_of(self, key, slots=None):
        """The node serving key's slot (in the map given, or the one now)."""
        slot = key_slot(key)
        for rng in slots or self.slots():
            if rng[0] <= slot <= rng[1]:
                port = int(rng[2][1])
                return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"slot {slot} not served")

    def user_id(self, prefix, slots, on=None, off=None):
        """A fresh user id (prefix-<hex>) whose keys ({u:<id>}) live on master `on`, or not on
        master `off`, in the slot map given."""
        while True:
            sub = f"{prefix}-{uuid.uuid4().hex[:12]}"
            m = self.master_of(f"kefu:{{u:{sub}}}:nodes", slots)
            if (on is None or m is on) and (off is None or m is not off):
                return sub

    def masters_now(self, slots=None):
        ports = {int(rng[2][1]) for rng in slots or self.slots()}
        return [n for n in self.nodes if n.port in ports]

    def live(self):
        return [n for n in self.nodes if n.alive()]

    def call(self, *args):
        return redis_call(self.live()[0].addr, *args)

    def stop(self):
        for n in self.nodes:
            n.stop(signal.SIGTERM, timeout=5)
            if n in LIVE:
                LIVE.remove(n)


def http_get(host, port, path, timeout=3.0):
    """Returns (status, body text, headers dict with lower-case keys)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read().decode("utf-8", "replace")
        return r.status, body, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


_SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed Prometheus text exposition."""

    def __init__(self, text):
        self.text = text
        self.samples = {}
        self.bad_lines = []
        for line in text.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            m = _SAMPLE_RE.match(line.strip())
            if not m:
                self.bad_lines.append(line)
                continue
            labels = frozenset(_LABEL_RE.findall(m.group(3) or ""))
            try:
                value = float(m.group(4))
            except ValueError:
                self.bad_lines.append(line)
                continue
            self.samples[(m.group(1), labels)] = value

    def _matching(self, name, labels):
        want = frozenset((k, str(v)) for k, v in labels.items())
        return [v for (n, ls), v in self.samples.items() if n == name and want <= ls]

    def has(self, name, **labels):
        """True when a sample of name carries these labels (extra labels, such as the
        gateway's per-process label, are allowed)."""
        return bool(self._matching(name, labels))

    def get(self, name, **labels):
        """Sum of the samples of name carrying these labels (extra labels allowed, so the
        per-process samples of one node add up); 0 when absent (counters start at 0)."""
        return float(sum(self._matching(name, labels)))

    def names(self):
        return {n for n, _ in self.samples}


class Gateway:
    """One kefu-gateway process (or, with proc None, an external one)."""

    def __init__(self, workdir, redis_addrs, name="n1", port=None, env=None, extra_args=(),
                 **opts):
        self.name = name
        self.port = port or free_port()
        self.host = HOST
        self.redis_addrs = list(redis_addrs)
        self.opts = {
            "bind": HOST, "port": self.port, "processes": 1, "node_name": name,
            "redis": ",".join(self.redis_addrs), "jwt_secrets": ",".join(SECRETS),
            "log_level": "debug",
        }
        self.opts.update(opts)
        argv = [find_bin("kefu-gateway")]
        for k, v in self.opts.items():
            if v is not None:   # None: leave the option to the environment / config file
                argv += ["--" + k.replace("_", "-"), str(v)]
        argv += list(extra_args)
        self.proc = Proc(f"gateway:{name}:{self.port}", argv,
                         Path(workdir) / f"gateway-{name}-{self.port}.log", env=env)

    @classmethod
    def external(cls, url):
        g = cls.__new__(cls)
        m = re.match(r"^wss?://([^:/]+):(\d+)", url)
        if not m:
            raise ValueError(f"KEFU_TEST_GATEWAY must look like ws://host:port, got {url!r}")
        g.host, g.port = m.group(1), int(m.group(2))
        g.name = None
        g.proc = None
        g.opts = {}
        g.redis_addrs = []
        return g

    @property
    def ws_url(self):
        return f"ws://{self.host}:{self.port}/ws"

    def get(self, path, timeout=3.0):
        return http_get(self.host, self.port, path, timeout)

    def status(self, path):
        try:
            return self.get(path, timeout=2.0)[0]
        except (OSError, http.client.HTTPException):
            return None

    def metrics(self):
        st, body, _ = self.get("/metrics")
        assert st == 200, f"/metrics answered {st}"
        return Metrics(body)

    def start(self, ready=True, timeout=15.0):
        self.proc.start()
        if ready:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and not self.proc.alive():
                raise AssertionError(
                    f"{self.proc.name} exited with {self.proc.p.returncode} during startup:\n"
                    f"{self.proc.tail()}")
            if self.status("/readyz") == 200:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.proc.name} not ready after {timeout}s:\n"
                                     f"{self.proc.tail() if self.proc else ''}")
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        return self.proc.stop(sig, timeout) if self.proc else None


# ---------------------------------------------------------------------------------------------
# Redis commands with parsed replies, and kefu-worker processes

def _resp_read(f):
    line = f.readline()
    if not line:
        raise EOFError("redis closed the connection")
    t, rest = line[:1], line[1:-2]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise RuntimeError(rest.decode())
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        try:
            return data.decode()
        except UnicodeDecodeError:
            return data
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RuntimeError(f"unexpected RESP {line!r}")


def redis_call(addr, *args, timeout=5.0):
    """Runs one command on the redis at addr ("host:port") and returns the parsed reply
    (str, int, None, lists; error replies raise RuntimeError). A cluster node's MOVED or ASK
    is followed, so addr may be any node of a Redis Cluster."""
    host, port = addr.rsplit(":", 1)
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    for _ in range(5):
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(out)
            with s.makefile("rb") as f:
                try:
                    return _resp_read(f)
                except RuntimeError as e:
                    words = str(e).split()
                    if len(words) != 3 or words[0] not in ("MOVED", "ASK"):
                        raise
            host, port = words[2].rsplit(":", 1)
            if words[0] == "ASK":
                with socket.create_connection((host, int(port)), timeout=timeout) as s:
                    s.sendall(b"*1\r\n$6\r\nASKING\r\n" + out)
                    with s.makefile("rb") as f:
                        _resp_read(f)
                        return _resp_read(f)
    raise RuntimeError("too many redirections")


def shard_addr(addrs, tag):
    """An address to reach the keys tagged {tag}: the one server, or a cluster node (redis_call
    follows redirections)."""
    addrs = [a.addr if hasattr(a, "addr") else a for a in addrs]
    return addrs[0]


class Worker:
    """One kefu-worker process, with its HTTP listener on a port of its own. start() waits until
    its /readyz answers 200 (every slot reachable, reading the lifecycle stream, configuration
    published), so gateways route with its configuration."""

    def __init__(self, workdir, redis_addrs, name="w1", env=None, extra_args=(), **opts):
        self.name = name
        self.redis_addrs = [a.addr if hasattr(a, "addr") else a for a in redis_addrs]
        self.opts = {"redis": ",".join(self.redis_addrs), "consumer": name, "log_level": "debug",
                     "stats_interval_s": 0, "http_port": free_fixed_port()}
        self.opts.update(opts)
        self.http_port = int(self.opts["http_port"] or 0)
        argv = [find_bin("kefu-worker")]
        for k, v in self.opts.items():
            if v is not None:
                argv += ["--" + k.replace("_", "-"), str(v)]
        argv += list(extra_args)
        self.proc = Proc(f"worker:{name}", argv, Path(workdir) / f"worker-{name}.log", env=env)

    def published(self):
        addr = shard_addr(self.redis_addrs, "staff")
        return redis_call(addr, "HGET", "kefu:{staff}:config", "published_by") == self.name

    def http(self, path, timeout=3.0):
        """GET path of the worker's HTTP listener: (status, body, headers)."""
        return http_get(HOST, self.http_port, path, timeout=timeout)

    def ready(self):
        try:
            return self.http("/readyz", timeout=1.0)[0] == 200
        except (OSError, http.client.HTTPException):
            return False

    def start(self, ready=True, timeout=10.0):
        self.proc.start()
        if ready:
            deadline = time.monotonic() + timeout
            while not (self.ready() if self.http_port else self.published()):
                if not self.proc.alive():
                    raise AssertionError(f"{self.proc.name} exited with {self.proc.p.returncode}:"
                                         f"\n{self.proc.tail()}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"{self.proc.name} not ready after {timeout}s:\n"
                                         f"{self.proc.tail()}")
                time.sleep(0.02)
        return self

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        return self.proc.stop(sig, timeout)

# ---------------------------------------------------------------------------------------------
# Tokens

def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_encode(payload, secret=None, alg="HS256", header=None, sign=True):
    """An HS256 (or deliberately broken) JWT. payload/header may be dicts or raw bytes."""
    secret = SECRETS[0] if secret is None else secret
    if header is None:
        header = {"alg": alg, "typ": "JWT"}
    hb = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    pb = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    signing_input = b64u(hb) + "." + b64u(pb)
    if not sign:
        return signing_input + "."
    digest = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64u(digest)


def jwt_decode_unverified(tok):
    h, p, _ = tok.split(".")
    return json.loads(b64u_decode(h)), json.loads(b64u_decode(p))


def user_tag(sub, secret=None):
    """What a gateway's log shows for user id sub: its keyed tag (kf_mask_user, lib/mask.c)."""
    key = (SECRETS[0] if secret is None else secret).encode()
    return hmac.new(key, b"kefu-log-user:" + sub.encode(), hashlib.sha256).hexdigest()[:12]


def make_token(sub, role, ttl=3600, secret=None, **claims):
    payload = {"sub": sub, "role": role, "exp": int(time.time()) + ttl}
    payload.update({k: v for k, v in claims.items() if v is not None})
    return jwt_encode(payload, secret=secret)


def kefu_token(*args):
    """Runs kefu-token with args, returns the printed token (stripped)."""
    exe = find_bin("kefu-token")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, timeout=10,
                       env=child_env())
    assert r.returncode == 0, f"kefu-token {args} exited {r.returncode}: {r.stderr.decode()}"
    return r.stdout.decode().strip()


# ---------------------------------------------------------------------------------------------
# Key placement (include/kefu/keys.h, include/kefu/slot.h): Redis Cluster slots of the hash
# tag.

def crc16_xmodem(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def key_slot(key):
    """Redis Cluster slot of a key (hash tags included)."""
    b = key.encode() if isinstance(key, str) else key
    i = b.find(b"{")
    if i >= 0:
        j = b.find(b"}", i + 1)
        if j > i + 1:
            b = b[i + 1:j]
    return crc16_xmodem(b) % 16384


def key_shard(tag, nshards):
    """Shard of the keys with hash tag {tag} (e.g. "c:<conv>")."""
    slot = crc16_xmodem(tag.encode()) % 16384
    if nshards <= 1:
        return 0
    return min(slot // (16384 // nshards), nshards - 1)


def conv_shard(conv, nshards):
    return key_shard("c:" + conv, nshards)


# Partitions of the lifecycle stream and the SLA deadlines (include/kefu/keys.h): the same
# tags and the same hash as the C side; a mismatch shows as events or timers not found.
PARTS = 16
EV_TAGS = ["ev:0-ca", "ev:1-ri", "ev:2-ny", "ev:3-ou", "ev:4-kd", "ev:5-zl", "ev:6-vx",
           "ev:7-gp", "ev:8-oz", "ev:9-nv", "ev:10-yz", "ev:11-ww", "ev:12-ja", "ev:13-km",
           "ev:14-nz", "ev:15-ov"]
SLA_TAGS = ["sla:0-lu", "sla:1-my", "sla:2-qi", "sla:3-pe", "sla:4-dp", "sla:5-ux", "sla:6-yl",
            "sla:7-hd", "sla:8-pj", "sla:9-ab", "sla:10-wn", "sla:11-ff", "sla:12-kt",
            "sla:13-jx", "sla:14-oo", "sla:15-nc"]
OLD_LIFECYCLE = "kefu:{ev}:lifecycle"


def part_of(ident):
    """Partition of a conversation (or of an event's subject): 64-bit FNV-1a folded to 32 bits
    (kf_hash32), mod PARTS."""
    h = 14695981039346656037
    for b in ident.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return ((h ^ (h >> 32)) & 0xFFFFFFFF) % PARTS


def lifecycle_key(p):
    return f"kefu:{{{EV_TAGS[p]}}}:lifecycle"


def sla_key(p, what):
    return f"kefu:{{{SLA_TAGS[p]}}}:{what}"
