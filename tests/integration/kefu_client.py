"""WebSocket clients for the kefu integration tests: an asyncio client speaking the kefu
protocol over the websockets library, and a raw blocking-socket client for frames the
library refuses to send (invalid UTF-8, split fragments, a reader that never reads)."""

import asyncio
import base64
import hashlib
import itertools
import json
import os
import re
import socket
import struct
import time
import uuid

import msgpack
import websockets
from websockets.exceptions import ConnectionClosed

from kefu_harness import make_token

SUBPROTOCOL = {"json": "kefu.v1.json", "msgpack": "kefu.v1.msgpack"}
PROTOS = ("json", "msgpack")
WAIT = 5.0          # default wait for an answer
PUSH_WAIT = 3.0     # default wait for a push
MSG_ID_RE = re.compile(r"^\d+-\d+$")

_OPEN = []          # clients opened during the current run(); closed when it ends


class Closed(AssertionError):
    """The connection closed while a frame was expected."""

    def __init__(self, code, reason, what):
        super().__init__(f"connection closed ({code} {reason!r}) while waiting for {what}")
        self.code, self.reason = code, reason


def encode(proto, obj):
    if proto == "json":
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return msgpack.packb(obj, use_bin_type=True)


def _reqkey(req):
    return (type(req).__name__, repr(req))


def url_of(node):
    return node if isinstance(node, str) else node.ws_url


class Client:
    """One kefu connection. Answers are matched by req; everything without req (pushes, and
    answers to req-less or unparseable frames) is queued in arrival order."""

    _seq = itertools.count(1)

    def __init__(self, ws, proto, label=""):
        self.ws = ws
        self.proto = proto
        self.label = label
        self.frames = []        # frames without req, not yet consumed
        self.answers = {}       # reqkey -> frame
        self.violations = []    # protocol violations seen by the reader
        self.closed = False
        self.user = self.role = self.name = self.node = None
        self.welcome = None
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    # -- opening ------------------------------------------------------------------------------
    @classmethod
    async def open(cls, node, proto="json", subprotocols="default", query="", path="/ws",
                   label="", timeout=WAIT):
        url = url_of(node)
        if path != "/ws":
            url = url[: -len("/ws")] + path
        if query:
            url += "?" + query
        if subprotocols == "default":
            subprotocols = [SUBPROTOCOL[proto]]
        ws = await asyncio.wait_for(websockets.connect(
            url, subprotocols=subprotocols, compression=None, ping_interval=None,
            close_timeout=2, max_size=None, max_queue=None, open_timeout=timeout), timeout)
        c = cls(ws, proto, label)
        _OPEN.append(c)
        return c

    async def _read(self):
        try:
            async for m in self.ws:
                self._dispatch(m)
        except ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - surfaced to the waiting test
            self.violations.append(f"reader failed: {e!r}")
        finally:
            self.closed = True
            self._changed.set()

    def _dispatch(self, m):
        if self.proto == "json":
            if not isinstance(m, str):
                self.violations.append(f"binary frame on kefu.v1.json: {m[:80]!r}")
                return
            try:
                f = json.loads(m)
            except ValueError:
                self.violations.append(f"server sent invalid JSON: {m[:200]!r}")
                return
        else:
            if not isinstance(m, bytes):
                self.violations.append(f"text frame on kefu.v1.msgpack: {m[:80]!r}")
                return
            try:
                f = msgpack.unpackb(m, raw=False, strict_map_key=False)
            except Exception as e:  # noqa: BLE001
                self.violations.append(f"server sent invalid msgpack ({e}): {m[:200]!r}")
                return
        if not isinstance(f, dict) or not isinstance(f.get("type"), str):
            self.violations.append(f"server frame is not an object with a string type: {f!r}")
            return
        if "req" in f:
            self.answers.setdefault(_reqkey(f["req"]), []).append(f)
        else:
            self.frames.append(f)
        self._changed.set()

    # -- sending ------------------------------------------------------------------------------
    async def send(self, obj):
        await self.ws.send(encode(self.proto, obj))

    async def send_raw(self, data):
        """Sends a str (text frame), bytes (binary frame) or a list of fragments."""
        await self.ws.send(data)

    def next_req(self):
        return next(Client._seq)

    # -- waiting ------------------------------------------------------------------------------
    def _state(self):
        return (f"[{self.label or self.user}] unconsumed frames={self.frames!r} "
                f"unmatched answers={list(self.answers.values())!r} "
                f"violations={self.violations!r}")

    async def _wait(self, check, timeout, what, allow_closed=False):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.violations:
                raise AssertionError(f"protocol violation: {self.violations} ({what})")
            r = check()
            if r is not None:
                return r
            if self.closed and not allow_closed:
                raise Closed(self.ws.close_code, self.ws.close_reason, what)
            rem = deadline - loop.time()
            if rem <= 0:
                raise AssertionError(f"timeout ({timeout}s) waiting for {what}; {self._state()}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), rem)
            except asyncio.TimeoutError:
                pass

    async def answer(self, req, timeout=WAIT):
        key = _reqkey(req)

        def check():
            lst = self.answers.get(key)
            if lst:
                f = lst.pop(0)
                if not lst:
                    del self.answers[key]
                return f
            return None
        return await self._wait(check, timeout, f"answer to req {req!r}")

    async def request(self, type_, _timeout=WAIT, _req=None, **fields):
        """Sends a request with a fresh integer req (or _req) and returns its answer frame."""
        req = self.next_req() if _req is None else _req
        await self.send({"type": type_, "req": req, **fields})
        f = await self.answer(req, _timeout)
        assert f["req"] == req and type(f["req"]) is type(req), f"req not echoed verbatim: {f}"
        return f

    async def ok(self, type_, **fields):
        f = await self.request(type_, **fields)
        assert f["type"] == "ok", f"{type_} {fields} -> {f} (expected ok)"
        return f

    async def err(self, code, type_, **fields):
        f = await self.request(type_, **fields)
        assert f["type"] == "error" and f.get("code") == code, \
            f"{type_} {fields} -> {f} (expected error {code})"
        assert isinstance(f.get("message"), str), f"error without message: {f}"
        return f

    async def take_any(self, types, timeout=WAIT):
        """The first frame of one of types, with or without req (for answers to frames whose
        req cannot be read, or whose req is of a wrong type and may or may not be echoed)."""
        def check():
            for i, f in enumerate(self.frames):
                if f["type"] in types:
                    return self.frames.pop(i)
            for k, lst in list(self.answers.items()):
                if lst and lst[0]["type"] in types:
                    f = lst.pop(0)
                    if not lst:
                        del self.answers[k]
                    return f
            return None
        return await self._wait(check, timeout, f"a frame of type {types}")

    def _take(self, type_, match):
        for i, f in enumerate(self.frames):
            if type_ is not None and f.get("type") != type_:
                continue
            if callable(match):
                if not match(f):
                    continue
            elif any(f.get(k) != v for k, v in match.items()):
                continue
            return self.frames.pop(i)
        return None

    async def next_push(self, type_=None, timeout=PUSH_WAIT, match=None, **kv):
        """The first queued frame without req of this type whose fields equal kv (or for which
        match(frame) is true); waits up to timeout."""
        m = match if match is not None else kv
        return await self._wait(lambda: self._take(type_, m), timeout,
                                f"push {type_} {kv or ''}")

    next_frame = next_push

    async def no_push(self, type_=None, within=0.4, **kv):
        """Asserts that no frame without req of this type (matching kv) arrives within the time."""
        await asyncio.sleep(within)
        f = self._take(type_, kv)
        assert f is None, f"unexpected push {f} on {self.label or self.user}"

    def pushes(self, type_=None):
        return [f for f in self.frames if type_ is None or f["type"] == type_]

    async def ping(self, timeout=WAIT):
        f = await self.request("ping", _timeout=timeout)
        assert f["type"] == "pong", f"ping -> {f}"
        return f

    async def expect_close(self, timeout=WAIT):
        """Waits until the connection is closed; returns (code, reason)."""
        await self._wait(lambda: True if self.closed else None, timeout, "close",
                         allow_closed=True)
        try:
            await asyncio.wait_for(self.ws.wait_closed(), timeout)
        except asyncio.TimeoutError:
            pass
        return self.ws.close_code, self.ws.close_reason

    async def hello(self, token, timeout=WAIT):
        """Sends hello (without req) and returns the welcome; sets user/role/node."""
        await self.send({"type": "hello", "token": token})
        f = await self.next_frame(match=lambda f: f["type"] in ("welcome", "error"),
                                  timeout=timeout)
        assert f["type"] == "welcome", f"hello -> {f}"
        self._welcomed(f)
        return f

    def _welcomed(self, f):
        self.welcome = f
        self.user, self.role, self.node = f.get("user"), f.get("role"), f.get("node")

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:  # noqa: BLE001
            pass
        self._reader.cancel()


def new_id(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def connect(node, role="customer", proto="json", sub=None, name=None, label="",
                  secret=None, **claims):
    """A welcomed client for a fresh user (uuid-based id unless sub given)."""
    sub = sub or new_id(role[:4])
    name = name or f"{role.capitalize()} {sub[-4:]}"
    tok = make_token(sub, role, name=name, secret=secret, **claims)
    c = await Client.open(node, proto, label=label or sub)
    w = await c.hello(tok)
    assert w["user"] == sub and w["role"] == role, f"welcome {w} for {sub}/{role}"
    c.name = name
    c.token = tok
    return c


async def close_all():
    while _OPEN:
        c = _OPEN.pop()
        await c.close()


def run(coro, timeout=60.0):
    """Runs a test coroutine with an overall time bound; closes every client it opened."""
    async def main():
        try:
            return await asyncio.wait_for(coro, timeout)
        finally:
            await close_all()
    return asyncio.run(main())


# ---------------------------------------------------------------------------------------------
# Raw client

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class RawWS:
    """A blocking WebSocket client that writes whatever frames it is told to."""

    def __init__(self, node, path="/ws", query="", protocol=None, rcvbuf=None, timeout=5.0):
        host, port = (node.host, node.port) if not isinstance(node, tuple) else node
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        key = base64.b64encode(os.urandom(16)).decode()
        target = path + ("?" + query if query else "")
        req = (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if protocol:
            req += f"Sec-WebSocket-Protocol: {protocol}\r\n"
        self.sock.sendall((req + "\r\n").encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise AssertionError(f"connection closed during the handshake: {buf!r}")
            buf += chunk
        head, self.buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        if self.status == 101:
            want = base64.b64encode(hashlib.sha1(
                (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == want, "bad Sec-WebSocket-Accept"

    def send_frame(self, opcode, payload=b"", fin=True):
        self.sock.sendall(self.frame(opcode, payload, fin))

    def send_frames(self, frames):
        """Sends several (opcode, payload) frames with one write."""
        self.sock.sendall(b"".join(self.frame(op, p) for op, p in frames))

    @staticmethod
    def frame(opcode, payload=b"", fin=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            hdr = struct.pack("!BB", b0, 0x80 | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, 0x80 | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, 0x80 | 127, n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return hdr + mask + masked

    def send_text(self, data):
        self.send_frame(OP_TEXT, data if isinstance(data, bytes) else data.encode())

    def send_close(self, code=1000, reason=b""):
        self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason)

    def _recv_exact(self, n, deadline):
        while len(self.buf) < n:
            rem = deadline - time.monotonic()
            if rem <= 0:
                raise socket.timeout("frame read timed out")
            self.sock.settimeout(rem)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=5.0):
        """(fin, opcode, payload); raises EOFError on EOF, socket.timeout on timeout."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._recv_exact(2, deadline)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._recv_exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._recv_exact(8, deadline))[0]
        mask = self._recv_exact(4, deadline) if b1 & 0x80 else None
        payload = self._recv_exact(n, deadline)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self, timeout=5.0, pong=True):
        """Next data message as (opcode, payload), answering pings; raises on close."""
        deadline = time.monotonic() + timeout
        parts, op = [], None
        while True:
            fin, opcode, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if opcode == OP_PING:
                if pong:
                    self.send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise EOFError(f"close frame {code} {payload[2:]!r}")
            if opcode != OP_CONT:
                op = opcode
            parts.append(payload)
            if fin:
                return op, b"".join(parts)

    def recv_obj(self, proto="json", timeout=5.0):
        op, payload = self.recv_message(timeout)
        if proto == "json":
            assert op == OP_TEXT, f"expected a text frame, got opcode {op}"
            return json.loads(payload)
        assert op == OP_BIN, f"expected a binary frame, got opcode {op}"
        return msgpack.unpackb(payload, raw=False)

    def read_until_close(self, timeout=5.0):
        """Reads and discards frames until a close frame or EOF/reset.
        Returns (code, reason, frames_seen) with code None when the TCP connection ended
        without a close frame. Raises socket.timeout if still open after timeout."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            rem = deadline - time.monotonic()
            if rem <= 0:
                raise socket.timeout(f"connection still open after {timeout}s")
            try:
                fin, opcode, payload = self.recv_frame(rem)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                return None, None, seen
            seen.append(opcode)
            if opcode == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode("utf-8", "replace"), seen

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Protocol checks and small flows shared by the tests

TICKET_RE = re.compile(r"^([A-Z0-9_-]{1,24})-(\d{8})-(\d{3,})$")


def today_days(t0=None):
    """Local-time YYYYMMDD strings around now (covers a midnight crossing during a test)."""
    t = time.time() if t0 is None else t0
    return {time.strftime("%Y%m%d", time.localtime(x)) for x in (t - 120, t, t + 120)}


def assert_ticket(ticket, channel):
    """Checks CHANNEL-YYYYMMDD-NNN and returns the sequence number."""
    assert isinstance(ticket, str), f"ticket {ticket!r}"
    m = TICKET_RE.match(ticket)
    assert m, f"ticket {ticket!r} is not CHANNEL-YYYYMMDD-NNN"
    assert m.group(1) == channel.upper(), f"ticket {ticket!r} for channel {channel!r}"
    assert m.group(2) in today_days(), f"ticket {ticket!r}: day is not today"
    return int(m.group(3))


def assert_ms(ts, slack=10_000):
    assert isinstance(ts, int) and not isinstance(ts, bool), f"time {ts!r} is not an integer"
    now = int(time.time() * 1000)
    assert now - 600_000 < ts < now + slack, f"time {ts} is not near now ({now})"


def assert_from(f, client):
    frm = f.get("from")
    assert isinstance(frm, dict), f"from missing in {f}"
    assert frm.get("id") == client.user, f"from.id in {f}, expected {client.user}"
    assert frm.get("role") == client.role, f"from.role in {f}, expected {client.role}"
    assert frm.get("name") == client.name, f"from.name in {f}, expected {client.name}"


def assert_msg(f, conv, sender, text, cid, id_=None, ts=None, push=True):
    """Checks a msg push (push=True) or a history entry."""
    if push:
        assert f.get("type") == "msg", f
        assert "req" not in f, f"push with req: {f}"
    else:
        assert "type" not in f, f"history entry with type: {f}"
    assert f.get("conv") == conv, f"conv in {f}"
    assert isinstance(f.get("id"), str) and MSG_ID_RE.match(f["id"]), f"id in {f}"
    if id_ is not None:
        assert f["id"] == id_, f"id {f['id']} != {id_}"
    assert_from(f, sender)
    assert f.get("text") == text, f"text in {f}"
    assert f.get("cid") == cid, f"cid in {f}"
    assert_ms(f.get("ts"))
    if ts is not None:
        assert f["ts"] == ts, f"ts {f['ts']} != {ts}"


def id_key(msg_id):
    a, b = msg_id.split("-")
    return int(a), int(b)


async def send_msg(c, conv, text, cid=None):
    cid = cid or new_id("cid")
    r = await c.ok("msg.send", conv=conv, text=text, cid=cid)
    assert isinstance(r.get("id"), str) and MSG_ID_RE.match(r["id"]), f"msg.send -> {r}"
    assert_ms(r.get("ts"))
    assert r.get("dup") is False, f"first msg.send must have dup false: {r}"
    return r["id"], r["ts"], cid


async def open_conv(cust, **fields):
    r = await cust.ok("conv.open", **fields)
    assert isinstance(r.get("conv"), str) and r["conv"], f"conv.open -> {r}"
    assert r.get("state") == "waiting", f"conv.open -> {r}"
    return r["conv"], r


async def open_conv_where(cust, pred, tries=50):
    """Opens conversations until one satisfies pred(conv) (its keys' placement, say); returns
    it. The others stay open."""
    for _ in range(tries):
        conv, _ = await open_conv(cust)
        if pred(conv):
            return conv
    raise AssertionError(f"no conversation out of {tries} satisfied {pred}")


async def open_assigned(cust, agent, **fields):
    """Customer opens, agent accepts, customer sees conv.state assigned. Returns conv."""
    conv, _ = await open_conv(cust, **fields)
    a = await agent.ok("conv.accept", conv=conv)
    assert a.get("conv") == conv and a.get("state") == "assigned", f"conv.accept -> {a}"
    st = await cust.next_push("conv.state", conv=conv, state="assigned")
    assert st.get("agent") == agent.user, st
    return conv


async def history_all(c, conv, after=None, limit=None, max_pages=100):
    """Pages through history while more is true; returns (msgs, pages)."""
    out, pages = [], 0
    while True:
        fields = {"conv": conv}
        if after is not None:
            fields["after"] = after
        if limit is not None:
            fields["limit"] = limit
        r = await c.ok("history", **fields)
        assert isinstance(r.get("msgs"), list) and isinstance(r.get("more"), bool), r
        out += r["msgs"]
        pages += 1
        if not r["more"]:
            return out, pages
        assert r["msgs"], f"more true with an empty page: {r}"
        after = r["msgs"][-1]["id"]
        assert pages < max_pages, "history paging does not end"


def sid(msg_id):
    """A message id as a comparable (ms, seq) pair."""
    ms, _, seq = msg_id.partition("-")
    return int(ms), int(seq)


class Follower:
    """Follows one conversation by the client rules of docs/protocol.md ("Missed pushes"): holds
    the newest id it has in order (`last`); a msg push whose prev is not `last`, and a resync
    notice, are healed with history after=last. `live` holds the ids pushed to it, `healed` the
    ids only history gave it, so a test can tell "healed by history" from "never seen"."""

    def __init__(self, client, conv, last=""):
        self.c, self.conv, self.last = client, conv, last
        self.held = {}                 # id -> message
        self.live, self.from_history = set(), set()
        self.gaps = self.resyncs = 0

    @property
    def healed(self):
        return self.from_history - self.live

    async def heal(self):
        while True:
            fields = {"conv": self.conv, "limit": 200}
            if self.last:
                fields["after"] = self.last
            page = await self.c.ok("history", **fields)
            for m in page["msgs"]:
                self.held.setdefault(m["id"], m)
                self.from_history.add(m["id"])
                if not self.last or sid(m["id"]) > sid(self.last):
                    self.last = m["id"]
            if not page["more"]:
                return

    async def apply(self, m):
        if m["type"] == "resync":
            self.resyncs += 1
            await self.heal()
            return
        self.live.add(m["id"])
        self.held.setdefault(m["id"], m)
        if self.last and sid(m["id"]) <= sid(self.last):
            return                         # already held
        if m.get("prev", "") != self.last:
            self.gaps += 1
            await self.heal()
        if not self.last or sid(m["id"]) > sid(self.last):
            self.last = m["id"]

    async def pump(self, within=0.2):
        """Applies, in arrival order, the msg and resync pushes for this conversation (a resync
        without conv counts) received so far, waiting `within` seconds first."""
        await asyncio.sleep(within)
        while True:
            f = self.c._take(None, lambda f: f["type"] in ("msg", "resync") and
                             f.get("conv", self.conv) == self.conv)
            if f is None:
                return
            await self.apply(f)
