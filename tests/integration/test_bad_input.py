"""Every kind of bad input after welcome is answered bad_request and the connection stays
usable."""

import json

import msgpack
import pytest

import kefu_harness as H
from kefu_client import Client, connect, new_id, open_conv, run


@pytest.fixture(scope="module")
def customer_conv(cluster):
    """One customer identity with a waiting conversation, shared by this module's tests."""
    sub = new_id("cust")
    tok = H.make_token(sub, "customer", name="Bad Input")

    async def body():
        c = await Client.open(cluster.n1, "json")
        await c.hello(tok)
        other = await Client.open(cluster.n1, "json")
        await other.hello(tok)
        conv, _ = await open_conv(c, topic="bad inputs")
        # The customer's other devices are told of the new conversation through the node's
        # inbox, after the answer. Seen here, that push can no longer reach a test's connection
        # (same customer) opened meanwhile, which checks that nothing but its answers arrives.
        await other.next_push("conv.state", conv=conv, state="waiting")
        return conv
    conv = run(body())
    yield tok, conv

    async def cleanup():
        a = await connect(cluster.n2, "agent", "json")
        await a.ok("conv.accept", conv=conv)
        await a.ok("conv.close", conv=conv)
    run(cleanup())


def J(obj):
    return json.dumps(obj)


def M(obj):
    return msgpack.packb(obj, use_bin_type=True)


CONV = "<conv>"   # replaced by the fixture's conversation id

# name -> (frame, req expected in the answer or None)
JSON_CASES = {
    "malformed": ('{"type":"ping","req":1', None),
    "not_json": ("hello there", None),
    "trailing_garbage": ('{"type":"ping","req":1} x', None),
    "array": ("[1,2,3]", None),
    "string": ('"ping"', None),
    "number": ("42", None),
    "null": ("null", None),
    "empty_object": ("{}", None),
    "type_number": (J({"type": 5, "req": 2}), None),
    "type_missing": (J({"req": 3, "conv": CONV}), None),
    "unknown_type": (J({"type": "conv.destroy", "req": 4}), 4),
    "req_object": (J({"type": "ping", "req": {"a": 1}}), None),
    "req_float": (J({"type": "ping", "req": 1.5}), None),
    "send_no_conv": (J({"type": "msg.send", "req": 5, "text": "x", "cid": "c1"}), 5),
    "send_no_text": (J({"type": "msg.send", "req": 6, "conv": CONV, "cid": "c1"}), 6),
    "send_no_cid": (J({"type": "msg.send", "req": 7, "conv": CONV, "text": "x"}), 7),
    "send_conv_int": (J({"type": "msg.send", "req": 8, "conv": 12, "text": "x", "cid": "c"}), 8),
    "send_text_int": (J({"type": "msg.send", "req": 9, "conv": CONV, "text": 5, "cid": "c"}), 9),
    "send_text_null": (J({"type": "msg.send", "req": 10, "conv": CONV, "text": None,
                          "cid": "c"}), 10),
    "send_cid_list": (J({"type": "msg.send", "req": 11, "conv": CONV, "text": "x",
                         "cid": ["c"]}), 11),
    "history_no_conv": (J({"type": "history", "req": 12}), 12),
    "history_after_int": (J({"type": "history", "req": 13, "conv": CONV, "after": 5}), 13),
    "history_limit_string": (J({"type": "history", "req": 14, "conv": CONV, "limit": "10"}), 14),
    "history_limit_zero": (J({"type": "history", "req": 15, "conv": CONV, "limit": 0}), 15),
    "typing_no_conv": (J({"type": "typing", "req": 16}), 16),
    "read_no_id": (J({"type": "read", "req": 17, "conv": CONV}), 17),
    "read_id_int": (J({"type": "read", "req": 18, "conv": CONV, "id": 7}), 18),
    "open_topic_int": (J({"type": "conv.open", "req": 19, "topic": 5}), 19),
    "open_channel_int": (J({"type": "conv.open", "req": 20, "channel": 7}), 20),
    "conv_list_type_array": (J({"type": ["conv.list"], "req": 21}), None),
}

MSGPACK_CASES = {
    "never_used_byte": (b"\xc1", None),
    "truncated_map": (b"\x82\xa4type\xa4ping\xa3req", None),
    "trailing_garbage": (M({"type": "ping", "req": 1}) + b"\x01", None),
    "array": (M([1, 2, 3]), None),
    "int": (M(42), None),
    "nil": (M(None), None),
    "empty_map": (M({}), None),
    "int_keys": (M({1: "ping", 2: 3}), None),
    "type_int": (M({"type": 5, "req": 2}), None),
    "unknown_type": (M({"type": "conv.destroy", "req": 4}), 4),
    "req_map": (M({"type": "ping", "req": {"a": 1}}), None),
    "send_no_cid": (M({"type": "msg.send", "req": 7, "conv": CONV, "text": "x"}), 7),
    "send_conv_int": (M({"type": "msg.send", "req": 8, "conv": 12, "text": "x", "cid": "c"}), 8),
    # bin where str is required: the gateway may reject the frame before reading req
    "send_text_bin": (M({"type": "msg.send", "req": 9, "conv": CONV, "text": b"x",
                         "cid": "c"}), None),
    "send_text_array": (M({"type": "msg.send", "req": 10, "conv": CONV, "text": ["x"],
                           "cid": "c"}), 10),
    "history_limit_str": (M({"type": "history", "req": 14, "conv": CONV, "limit": "10"}), 14),
    "read_id_int": (M({"type": "read", "req": 18, "conv": CONV, "id": 7}), 18),
    "open_topic_int": (M({"type": "conv.open", "req": 19, "topic": 5}), 19),
}


def subst(frame, conv):
    if isinstance(frame, str):
        return frame.replace(CONV, conv)
    return frame.replace(M(CONV), M(conv))


async def first_answer(c, req, types=("error",)):
    """The answer to req; when req is None, the first frame of one of types, with or without a
    req (an unparseable frame has no req to echo; a req of a wrong type may be echoed)."""
    if req is not None:
        return await c.answer(req)
    return await c.take_any(types)


async def expect_bad_request(c, req):
    f = await first_answer(c, req)
    assert f["type"] == "error" and f["code"] == "bad_request", f"got {f}"
    assert isinstance(f.get("message"), str) and f["message"], f


async def check_case(node, proto, tok, conv, frame, req):
    c = await Client.open(node, proto)
    await c.hello(tok)
    await c.send_raw(subst(frame, conv))
    await expect_bad_request(c, req)
    # still usable, and nothing else was answered
    await c.ping()
    r = await c.ok("history", conv=conv)
    assert isinstance(r["msgs"], list)
    assert not c.frames and not c.answers, c._state()
    assert not c.closed


@pytest.mark.parametrize("case", sorted(JSON_CASES))
def test_bad_json(cluster, customer_conv, case):
    tok, conv = customer_conv
    frame, req = JSON_CASES[case]
    run(check_case(cluster.n1, "json", tok, conv, frame, req))


@pytest.mark.parametrize("case", sorted(MSGPACK_CASES))
def test_bad_msgpack(cluster, customer_conv, case):
    tok, conv = customer_conv
    frame, req = MSGPACK_CASES[case]
    run(check_case(cluster.n2, "msgpack", tok, conv, frame, req))


def test_binary_frame_on_json(cluster, customer_conv):
    tok, conv = customer_conv
    run(check_case(cluster.n1, "json", tok, conv, J({"type": "ping", "req": 1}).encode(), None))


def test_text_frame_on_msgpack(cluster, customer_conv):
    tok, conv = customer_conv
    run(check_case(cluster.n2, "msgpack", tok, conv, J({"type": "ping", "req": 1}), None))


@pytest.mark.parametrize("proto", ["json", "msgpack"])
def test_deep_nesting_does_not_crash(cluster, customer_conv, proto):
    tok, conv = customer_conv

    async def body():
        c = await Client.open(cluster.n1, proto)
        await c.hello(tok)
        if proto == "json":
            await c.send_raw('{"type":"ping","req":1,"x":' + "[" * 20000 + "]" * 20000 + "}")
        else:
            await c.send_raw(b"\x83\xa4type\xa4ping\xa3req\x01\xa1x" + b"\x91" * 30000 + b"\xc0")
        f = await first_answer(c, None, types=("pong", "error"))
        assert f["type"] in ("pong", "error"), f
        if f["type"] == "error":
            assert f["code"] == "bad_request"
        await c.ping()
    run(body())


@pytest.mark.parametrize("proto", ["json", "msgpack"])
def test_many_bad_frames_then_good(cluster, customer_conv, proto):
    """A burst of different bad frames on one connection: each answered, then all is well."""
    tok, conv = customer_conv
    cases = JSON_CASES if proto == "json" else MSGPACK_CASES

    async def body():
        c = await Client.open(cluster.n2, proto)
        await c.hello(tok)
        chosen = sorted(cases)[:12]
        for name in chosen:
            await c.send_raw(subst(cases[name][0], conv))
        for name in chosen:
            await expect_bad_request(c, cases[name][1])
        await c.ping()
        assert (await c.ok("conv.list"))["convs"][0]["conv"] == conv
    run(body())
