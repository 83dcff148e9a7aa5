"""Connecting: HTTP endpoints, paths, subprotocols, welcome, ping, req echo, kefu-token."""

import asyncio
import time

import msgpack
import pytest
import websockets

import kefu_harness as H
from kefu_client import PROTOS, SUBPROTOCOL, Client, RawWS, assert_ms, new_id, run


def test_health_ready_metrics(cluster):
    for node in cluster.nodes:
        st, body, _ = node.get("/healthz")
        assert st == 200
        assert node.status("/readyz") == 200
        st, body, headers = node.get("/metrics")
        assert st == 200
        assert headers.get("content-type", "").startswith("text/plain"), headers
        m = H.Metrics(body)
        assert not m.bad_lines, f"unparseable metric lines: {m.bad_lines[:5]}"
        for name in ("kefu_frames_in_total", "kefu_frames_out_total", "kefu_messages_stored_total",
                     "kefu_redis_commands_total", "kefu_inbox_entries_total", "kefu_inbox_lag_ms"):
            assert name in m.names(), f"metric {name} missing from /metrics"
        if not H.EXTERNAL:
            nproc = len([1 for n, l in m.samples if n == "kefu_up"])
            assert m.get("kefu_redis_slots_up") == 16384 * nproc, "every slot served"
            assert m.get("kefu_redis_masters") == nproc and m.get("kefu_redis_masters_up") == nproc
            assert m.get("kefu_redis_redirects_total", kind="moved") == 0
        assert m.has("kefu_connections", role="customer"), "kefu_connections{role=customer}"


def test_unknown_http_path_is_404(cluster):
    st, _, _ = cluster.n1.get("/nope")
    assert st == 404


@pytest.mark.parametrize("path", ["/other", "/ws/x", "/"])
def test_websocket_on_other_path_is_404(cluster, path):
    raw = RawWS(cluster.n1, path=path, protocol="kefu.v1.json")
    try:
        assert raw.status == 404, f"upgrade on {path} answered {raw.status}"
    finally:
        raw.close()


@pytest.mark.parametrize("proto", PROTOS)
def test_subprotocol_selected_and_welcome(cluster, proto):
    async def body():
        for node in cluster.nodes:
            c = await Client.open(node, proto)
            assert c.ws.subprotocol == SUBPROTOCOL[proto]
            sub = new_id("cust")
            t0 = int(time.time() * 1000)
            w = await c.hello(H.make_token(sub, "customer", name="Ann"))
            assert w == {**w, "type": "welcome", "user": sub, "role": "customer"}
            assert isinstance(w.get("node"), str) and w["node"]
            if node.name:
                # --node-name is a prefix: process i is <name>-<i>
                assert w["node"] == node.name or w["node"].startswith(node.name + "-"), w
            assert_ms(w.get("server_time"))
            assert abs(w["server_time"] - t0) < 5000
            assert "req" not in w
    run(body())


def test_default_subprotocol_is_json(cluster):
    async def body():
        c = await Client.open(cluster.n1, "json", subprotocols=None)
        assert c.ws.subprotocol in (None, "kefu.v1.json")
        await c.hello(H.make_token(new_id("cust"), "customer"))
        await c.ping()
        # a json connection answers binary frames with bad_request
        await c.send_raw(msgpack.packb({"type": "ping", "req": 1}))
        f = await c.next_frame("error")
        assert f["code"] == "bad_request"
        await c.ping()
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_ping_before_welcome_and_req_echo(cluster, proto):
    async def body():
        c = await Client.open(cluster.n1, proto)
        p = await c.request("ping", _req="first")
        assert p["type"] == "pong" and p["req"] == "first"
        p = await c.request("ping", _req=0)
        assert p["type"] == "pong" and p["req"] == 0
        await c.hello(H.make_token(new_id("cust"), "customer"))
        for req in (7, "r-7", 2**40, ""):
            f = await c.request("conv.list", _req=req)
            assert f["type"] == "ok" and f["req"] == req and isinstance(f["convs"], list)
        # a request without req gets its answer without req
        await c.send({"type": "ping"})
        f = await c.next_frame("pong")
        assert "req" not in f
        await c.send({"type": "conv.list"})
        f = await c.next_frame("ok")
        assert "req" not in f and f["convs"] == []
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_hello_with_req_echoes_it(cluster, proto):
    async def body():
        c = await Client.open(cluster.n1, proto)
        sub = new_id("cust")
        w = await c.request("hello", _req=41, token=H.make_token(sub, "customer"))
        assert w["type"] == "welcome" and w["user"] == sub and w["req"] == 41
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_url_token(cluster, proto):
    async def body():
        sub = new_id("cust")
        c = await Client.open(cluster.n2, proto, query="token=" + H.make_token(sub, "customer"))
        w = await c.next_frame("welcome")
        assert w["user"] == sub and w["role"] == "customer"
        await c.ping()
        r = await c.ok("conv.list")
        assert r["convs"] == []
    run(body())


def test_url_token_bad_signature_rejected(cluster):
    async def body():
        tok = H.make_token(new_id("cust"), "customer", secret="not-the-secret")
        try:
            c = await Client.open(cluster.n1, "json", query="token=" + tok)
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code in (401, 403)
            return
        code, reason = await c.expect_close()
        assert (code, reason) == (4401, "invalid token: bad_signature")
        assert not c.pushes("welcome")
    run(body())


@pytest.mark.parametrize("role", ["customer", "agent", "supervisor", "admin"])
def test_kefu_token_verifies(cluster, local_only, role):
    sub = new_id(role[:4])
    args = ["--sub", sub, "--role", role, "--name", "Zhang San", "--ttl", "600",
            "--secret", H.SECRETS[1]]
    if role == "customer":
        args += ["--channel", "app", "--level", "7"]
    else:
        args += ["--skills", "billing,tech", "--max-chats", "4"]
    tok = H.kefu_token(*args)
    hdr, claims = H.jwt_decode_unverified(tok)
    assert hdr.get("alg") == "HS256"
    assert claims["sub"] == sub and claims["role"] == role and claims["name"] == "Zhang San"
    assert abs(claims["exp"] - (time.time() + 600)) < 30
    if role == "customer":
        assert claims["channel"] == "app" and claims["level"] == 7
    else:
        assert claims["skills"] == ["billing", "tech"] and claims["max_chats"] == 4

    async def body():
        c = await Client.open(cluster.n1, "json")
        w = await c.hello(tok)
        assert w["user"] == sub and w["role"] == role
        if role == "customer":
            r = await c.ok("conv.open")
            assert r["ticket"].startswith("APP-"), f"token channel app must be the default: {r}"
            c2 = await Client.open(cluster.n2, "msgpack")
            await c2.hello(tok)
            lst = await c2.ok("conv.list")
            assert [x["conv"] for x in lst["convs"]] == [r["conv"]]
    run(body())


def test_plain_get_of_ws_is_426(cluster):
    st, _, _ = cluster.n1.get("/ws")
    assert st == 426


@pytest.mark.parametrize("proto", PROTOS)
def test_req_limits(cluster, proto):
    """req: a string of at most 64 bytes or an integer; anything else is bad_request."""
    async def body():
        c = await Client.open(cluster.n1, proto)
        await c.hello(H.make_token(new_id("cust"), "customer"))
        r = await c.request("ping", _req="r" * 64)
        assert r["type"] == "pong"
        r = await c.request("ping", _req="中" * 21)     # 63 bytes
        assert r["type"] == "pong"
        for bad in ("r" * 65, 1.5, [1], {"a": 1}, True):
            await c.send({"type": "ping", "req": bad})
            f = await c.take_any(("error", "pong"))
            assert f["type"] == "error" and f["code"] == "bad_request", (bad, f)
        await c.ping()
    run(body())


@pytest.mark.parametrize("code", [1000, 4321])
def test_client_close_is_echoed(cluster, code):
    async def body():
        c = await Client.open(cluster.n2, "json")
        await c.hello(H.make_token(new_id("cust"), "customer"))
        await asyncio.wait_for(c.ws.close(code, "client leaves"), 5)
        assert c.ws.close_code == code, (c.ws.close_code, c.ws.close_reason)
    run(body())
