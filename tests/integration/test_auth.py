"""Authentication: hello, token failures and their close codes, rotation, leeway, the
hello-expected rule and the authentication timeout."""

import asyncio
import hashlib
import hmac
import json
import time

import pytest

import kefu_harness as H
from kefu_client import PROTOS, Client, connect, new_id, run


def now():
    return int(time.time())


def claims(**kw):
    c = {"sub": new_id("cust"), "role": "customer", "exp": now() + 3600}
    c.update(kw)
    return {k: v for k, v in c.items() if v is not None}


def tampered():
    tok = H.make_token(new_id("cust"), "customer")
    h, p, s = tok.split(".")
    body = H.jwt_decode_unverified(tok)[1]
    body["role"] = "admin"
    return h + "." + H.b64u(json.dumps(body).encode()) + "." + s


def hs512():
    hdr = H.b64u(b'{"alg":"HS512","typ":"JWT"}')
    pl = H.b64u(json.dumps(claims()).encode())
    sig = hmac.new(H.SECRETS[0].encode(), f"{hdr}.{pl}".encode(), hashlib.sha512).digest()
    return f"{hdr}.{pl}.{H.b64u(sig)}"


# name -> (token factory, close code, close reason)
BAD_TOKENS = {
    "missing": (None, 4401, "invalid token: missing"),
    "malformed_word": (lambda: "not-a-jwt", 4401, "invalid token: malformed"),
    "malformed_parts": (lambda: "a.b.c", 4401, "invalid token: malformed"),
    "malformed_two_parts": (lambda: H.make_token("x", "customer").rsplit(".", 1)[0],
                            4401, "invalid token: malformed"),
    "malformed_json": (lambda: H.jwt_encode(b"{not json", sign=True), 4401,
                       "invalid token: malformed"),
    "alg_none": (lambda: H.jwt_encode(claims(), alg="none", sign=False), 4401,
                 "invalid token: bad_alg"),
    "alg_hs512": (hs512, 4401, "invalid token: bad_alg"),
    "wrong_secret": (lambda: H.make_token(new_id("c"), "customer", secret="wrong-secret"),
                     4401, "invalid token: bad_signature"),
    "tampered_payload": (tampered, 4401, "invalid token: bad_signature"),
    "expired": (lambda: H.jwt_encode(claims(exp=now() - 3600)), 4402, "token expired"),
    "expired_beyond_leeway": (lambda: H.jwt_encode(claims(exp=now() - 120)), 4402,
                              "token expired"),
    "not_yet_valid": (lambda: H.jwt_encode(claims(nbf=now() + 3600)), 4401,
                      "invalid token: not_yet_valid"),
    "no_sub": (lambda: H.jwt_encode(claims(sub=None)), 4401, "invalid token: bad_claims"),
    "empty_sub": (lambda: H.jwt_encode(claims(sub="")), 4401, "invalid token: bad_claims"),
    "long_sub": (lambda: H.jwt_encode(claims(sub="u" * 129)), 4401, "invalid token: bad_claims"),
    "no_role": (lambda: H.jwt_encode(claims(role=None)), 4401, "invalid token: bad_claims"),
    "bad_role": (lambda: H.jwt_encode(claims(role="god")), 4401, "invalid token: bad_claims"),
    "no_exp": (lambda: H.jwt_encode(claims(exp=None)), 4401, "invalid token: bad_claims"),
    "exp_string": (lambda: H.jwt_encode(claims(exp=str(now() + 3600))), 4401,
                   "invalid token: bad_claims"),
    "level_101": (lambda: H.jwt_encode(claims(level=101)), 4401, "invalid token: bad_claims"),
    "bad_channel": (lambda: H.jwt_encode(claims(channel="Web Chat!")), 4401,
                    "invalid token: bad_claims"),
    "skills_not_array": (lambda: H.jwt_encode(claims(role="agent", skills="a,b")), 4401,
                         "invalid token: bad_claims"),
    "max_chats_0": (lambda: H.jwt_encode(claims(role="agent", max_chats=0)), 4401,
                    "invalid token: bad_claims"),
}


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
def test_bad_token_closes(cluster, case, proto):
    factory, code, reason = BAD_TOKENS[case]

    async def body():
        c = await Client.open(cluster.n1, proto)
        hello = {"type": "hello", "req": 1}
        if factory is not None:
            hello["token"] = factory()
        await c.send(hello)
        assert got_close(await c.expect_close()) == (code, reason)
        assert not c.pushes("welcome")
        # an answer, if any (see test_bad_token_answered_unauthorized), is unauthorized
        for f in c.answers.get(("int", "1"), []) + c.frames:
            assert f["type"] == "error" and f["code"] == "unauthorized", f
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("case", ["missing", "wrong_secret", "expired", "bad_role"])
def test_bad_token_answered_unauthorized(cluster, case, proto):
    """protocol.md: `unauthorized` answers "hello with a bad token (then the socket closes
    with 44xx)": the hello request gets its error answer before the close."""
    factory, code, reason = BAD_TOKENS[case]

    async def body():
        c = await Client.open(cluster.n1, proto)
        hello = {"type": "hello", "req": 1}
        if factory is not None:
            hello["token"] = factory()
        await c.send(hello)
        f = await c.answer(1)
        assert f["type"] == "error" and f["code"] == "unauthorized", f"hello ({case}) -> {f}"
        assert isinstance(f.get("message"), str)
        assert got_close(await c.expect_close()) == (code, reason)
    run(body())


def got_close(cr):
    return cr[0], cr[1]


@pytest.mark.parametrize("proto", PROTOS)
def test_rotation_second_secret_and_leeway(cluster, proto):
    async def body():
        sub = new_id("agen")
        c = await Client.open(cluster.n2, proto)
        w = await c.hello(H.make_token(sub, "agent", secret=H.SECRETS[1]))
        assert w["user"] == sub and w["role"] == "agent"
        await c.ok("queue.list")
        # expired 5 s ago: inside the 30 s leeway
        c2 = await Client.open(cluster.n1, proto)
        await c2.hello(H.jwt_encode(claims(exp=now() - 5)))
        await c2.ping()
        # nbf 5 s in the future: inside the leeway too
        c3 = await Client.open(cluster.n1, proto)
        await c3.hello(H.jwt_encode(claims(nbf=now() + 5)))
        await c3.ping()
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
@pytest.mark.parametrize("first", ["conv.list", "msg.send", "conv.open"])
def test_first_frame_not_hello(cluster, proto, first):
    async def body():
        c = await Client.open(cluster.n1, proto)
        await c.send({"type": first, "req": 5, "conv": "x", "text": "hi", "cid": "c"})
        code, reason = await c.expect_close()
        assert (code, reason) == (4400, "hello expected")
        # an answer before the close is allowed, but only an unauthorized error
        for lst in c.answers.values():
            for f in lst:
                assert f["type"] == "error" and f["code"] == "unauthorized", f
        assert not c.pushes("welcome")
    run(body())


@pytest.mark.parametrize("proto", PROTOS)
def test_request_before_welcome_unauthorized(cluster, proto):
    """ping first is allowed; a later request before welcome is unauthorized, and hello
    still works afterwards."""
    async def body():
        c = await Client.open(cluster.n2, proto)
        await c.ping()
        await c.err("unauthorized", "conv.list")
        await c.err("unauthorized", "conv.open")
        sub = new_id("cust")
        w = await c.hello(H.make_token(sub, "customer"))
        assert w["user"] == sub
        await c.ok("conv.list")
    run(body())


def test_auth_timeout(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="auth", auth_timeout_ms=400)

    async def body():
        before = g.metrics().get("kefu_closes_total", reason="auth_timeout")
        t0 = time.monotonic()
        silent = await Client.open(g, "json")
        pinger = await Client.open(g, "msgpack")
        await pinger.ping()
        ok = await connect(g, "customer", "json")
        assert await silent.expect_close(5) == (4408, "authentication timeout")
        assert await pinger.expect_close(5) == (4408, "authentication timeout")
        elapsed = time.monotonic() - t0
        assert 0.3 < elapsed < 4, f"closed after {elapsed:.2f}s with auth_timeout_ms 400"
        # the authenticated connection outlives the timeout
        await ok.ping()
        await ok.ok("conv.list")
        H.wait_until(lambda: g.metrics().get("kefu_closes_total", reason="auth_timeout")
                     == before + 2, what="kefu_closes_total{reason=auth_timeout} +2")
    run(body())


def test_session_refresh(spawn, cluster):
    """After exp (+ leeway, 0 here) requests are unauthorized; hello with a fresh token for the
    same user extends the session; a token of someone else is forbidden."""
    g = spawn.gateway(cluster.shards, name="refresh", jwt_leeway_s=0)

    async def body():
        sub = new_id("cust")
        c = await Client.open(g, "json")
        await c.hello(H.make_token(sub, "customer", ttl=2))
        await c.ok("conv.list")
        await asyncio.sleep(3.1)
        f = await c.err("unauthorized", "conv.list")
        assert "expired" in f["message"]
        await c.ping()
        r = await c.ok("hello", token=H.make_token(sub, "customer", ttl=600))
        assert abs(r["exp"] - (now() + 600)) < 30, r
        await c.ok("conv.list")
        await c.err("forbidden", "hello", token=H.make_token(new_id("cust"), "customer"))
        await c.err("forbidden", "hello", token=H.make_token(sub, "agent"))
        await c.ok("conv.list")
    run(body())


INT64_MAX = 2**63 - 1


@pytest.mark.parametrize("proto", PROTOS)
def test_exp_int64_max(cluster, proto):
    """A validly signed token with exp = INT64_MAX never expires: the connection is served (the
    expiry check once computed exp + leeway, which overflowed: the sanitizer build aborted, a
    release build answered every request unauthorized). Also through a session refresh and a
    token in the URL."""
    async def body():
        sub = new_id("cust")
        tok = H.jwt_encode(claims(sub=sub, exp=INT64_MAX))
        c = await Client.open(cluster.n1, proto)
        await c.hello(tok)
        await c.ok("conv.list")
        conv = (await c.ok("conv.open"))["conv"]
        await c.ok("msg.send", conv=conv, text="hi", cid=new_id("c"))  # JSON: the fast path
        r = await c.ok("hello", token=tok)
        assert r["exp"] == INT64_MAX, r
        await c.ok("history", conv=conv)
        u = await Client.open(cluster.n2, proto, query="token=" + tok)
        await u.ok("conv.list")
    run(body())


def test_user_ids_not_logged(spawn, cluster):
    """docs/operations.md: user ids are never logged. Whatever an id looks like (a name, an
    address, a phone number), the gateway's log shows only its keyed tag."""
    g = spawn.gateway(cluster.shards, name="nolog")
    ids = [new_id("zhang.wei"), new_id("li") + "@example.com", "1380013" + str(now())[-4:]]

    async def body():
        for sub, role in zip(ids, ("customer", "agent", "customer")):
            c = await Client.open(g, "json")
            await c.hello(H.make_token(sub, role))
            if role == "customer":
                conv = (await c.ok("conv.open"))["conv"]
                await c.ok("msg.send", conv=conv, text="hello", cid=new_id("c"))
            else:
                await c.ok("agent.status", status="available")
            await c.close()
        for sub in ids:
            H.wait_until(lambda: f"user {H.user_tag(sub)}" in g.proc.log_text(),
                         what=f"the tag of {sub} in the log")
        log = g.proc.log_text()
        for sub in ids:
            assert sub not in log, f"user id {sub} in the gateway log"
            assert sub.split("@")[0][1:] not in log, f"part of user id {sub} in the gateway log"
    run(body())
