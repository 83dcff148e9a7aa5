"""The process interface: config file, KEFU_* environment, flags (with dashes or
underscores), their precedence, and SIGHUP reloading (secret rotation)."""

import asyncio
import secrets
import signal
import subprocess

import pytest

import kefu_harness as H
from kefu_client import Client, connect, new_id, open_assigned, run, send_msg


def test_config_env_flags_precedence_and_sighup(spawn, cluster, tmp_path):
    node = "filenode-" + secrets.token_hex(3)
    new_secret = "rotated-" + secrets.token_hex(8)
    cfg = tmp_path / "gateway.conf"
    base = (f"# kefu test config\n"
            f"node_name = {node}\n"
            f"max_text_bytes 100\n"
            f"max-message-bytes = 1024\n"
            f"log_level \"debug\"\n")
    cfg.write_text(base + f"jwt_secrets = {H.SECRETS[0]}\n")
    g = spawn.gateway(
        cluster.shards, name="cfg", node_name=None, jwt_secrets=None, log_level=None,
        config=cfg,
        env={"KEFU_MAX_TEXT_BYTES": "200", "KEFU_MAX_MESSAGE_BYTES": "2048"},
        extra_args=["--max_message_bytes", "4096"])

    async def body():
        cust = await connect(g, "customer", "json")
        # the file names the node
        assert cust.node == node or cust.node.startswith(node + "-"), cust.welcome
        agent = await connect(g, "agent", "json")
        conv = await open_assigned(cust, agent)
        # environment beats the file: max_text_bytes 200
        await send_msg(cust, conv, "x" * 200)
        await cust.err("too_large", "msg.send", conv=conv, text="x" * 201, cid=new_id("c"))
        # a flag (underscores) beats the environment: max_message_bytes 4096, not 2048
        await cust.send_raw('{"type":"ping","req":1,"pad":"' + "p" * 3000 + '"}')
        assert (await cust.answer(1))["type"] == "pong"
        # a token signed with a secret not configured yet
        c = await Client.open(g, "json")
        await c.send({"type": "hello", "token": H.make_token(new_id("c"), "customer",
                                                             secret=new_secret)})
        assert (await c.expect_close())[:2] == (4401, "invalid token: bad_signature")
        # rotate: add the new secret to the file, SIGHUP
        cfg.write_text(base + f"jwt_secrets = {H.SECRETS[0]},{new_secret}\n")
        g.proc.send_signal(signal.SIGHUP)
        ok = False
        for _ in range(30):       # the reload is asynchronous: retry for up to ~3 s
            c = await Client.open(g, "json")
            try:
                await c.hello(H.make_token(new_id("c"), "customer", secret=new_secret))
                ok = True
                break
            except AssertionError:
                await c.close()
                await asyncio.sleep(0.1)
        assert ok, "a token signed with the secret added by SIGHUP is still rejected"
        # the old secret still works, existing connections survived the reload
        await connect(g, "agent", "msgpack")
        await cust.ping()
        await send_msg(agent, conv, "after reload")
        assert (await cust.next_push("msg", conv=conv))["text"] == "after reload"
    run(body())


def shared_rows(prog):
    out = subprocess.run([str(H.find_bin(prog)), "--dump-config", "markdown"], check=True,
                         capture_output=True, text=True).stdout
    return {line.split("|")[1].strip(): line for line in out.splitlines()
            if line.startswith("| `")}


def test_shared_options_are_one_definition():
    """The options both programs read print the same default, bounds and meaning (the worker's
    inbox_maxlen once trimmed node inboxes to a tenth of what the gateways keep)."""
    gw, wk = shared_rows("kefu-gateway"), shared_rows("kefu-worker")
    for name in ("`redis`", "`redis_timeout_ms`", "`inbox_maxlen`", "`log_level`"):
        assert gw[name] == wk[name], name
    assert "| `1000000` |" in wk["`inbox_maxlen`"]


def test_dump_config_example_loads_in_each_program(tmp_path):
    """The example files, every setting uncommented, are accepted by their programs (an unknown
    or badly quoted line would stop them with status 2)."""
    for prog in ("kefu-gateway", "kefu-worker"):
        text = subprocess.run([str(H.find_bin(prog)), "--dump-config", "example"], check=True,
                              capture_output=True, text=True).stdout
        conf = tmp_path / f"{prog}.conf"
        conf.write_text("\n".join(line[1:] if line.startswith("#") and not line.startswith("# ")
                                  and line != "#" else line for line in text.splitlines()))
        # a bad value after the file proves the file itself parsed: the error names the flag
        r = subprocess.run([str(H.find_bin(prog)), "--config", str(conf), "--batch" if prog ==
                            "kefu-worker" else "--port", "0"], capture_output=True, text=True,
                           timeout=10)
        assert r.returncode == 2
        assert "out of range" in r.stderr and conf.name not in r.stderr, r.stderr
    bad = subprocess.run([str(H.find_bin("kefu-gateway")), "--dump-config", "yaml"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "markdown or example" in bad.stderr


DEV_SECRET = "kefu-dev-secret-change-me"


async def rejected(g, secret):
    c = await Client.open(g, "json")
    await c.send({"type": "hello", "token": H.make_token(new_id("c"), "customer", secret=secret)})
    assert (await c.expect_close())[:2] == (4401, "invalid token: bad_signature")


def test_no_secret_refuses_to_start(spawn, cluster):
    """No jwt_secrets (none, or an empty one) and no dev_secret: exit status 2 and a line
    saying what to set; no gateway process is started."""
    for i, configured in enumerate((None, "")):
        g = spawn.gateway(cluster.shards, name=f"nosecret{i}", jwt_secrets=configured, ready=False)
        g.proc.expect_exit = True
        assert g.proc.wait(10) == 2, g.proc.tail()
        log = g.proc.log_text()
        assert "E no jwt_secrets configured; refusing to start" in log, log
        assert "KEFU_JWT_SECRETS" in log and "--dev-secret" in log, log
        assert "started" not in log, log


def test_dev_secret_flag_runs_on_the_development_secret(spawn, cluster):
    g = spawn.gateway(cluster.shards, name="devsecret", jwt_secrets=None,
                      extra_args=["--dev-secret"])

    async def body():
        await connect(g, "customer", "json", secret=DEV_SECRET)
        await rejected(g, H.SECRETS[0])
    run(body())
    log = g.proc.log_text()
    assert "master W dev_secret: no jwt_secrets, so tokens signed with the public development " \
           "secret are accepted" in log, log
    assert "W no jwt_secrets configured: using the built-in development secret" in log, log


@pytest.mark.parametrize("dev_secret", [False, True], ids=["plain", "dev_secret"])
def test_secret_kept_when_a_reload_leaves_none(spawn, cluster, tmp_path, dev_secret):
    """A gateway started with a secret does not mention the development secret, and a reload
    whose file no longer holds one keeps the previous secrets (it once fell back to the
    development secret, so every real token failed and anyone could sign one). With
    dev_secret on too: the public secret is for a start without any secret only."""
    cfg = tmp_path / "gateway.conf"
    cfg.write_text(f"jwt_secrets = {H.SECRETS[0]}\n")
    g = spawn.gateway(cluster.shards, name="keepsecret", jwt_secrets=None, config=cfg,
                      extra_args=["--dev-secret"] if dev_secret else [])

    async def body():
        await connect(g, "customer", "json")
        await rejected(g, DEV_SECRET)
        cfg.write_text("# the secret was removed by mistake\n")
        g.proc.send_signal(signal.SIGHUP)
        H.wait_until(lambda: "jwt_secrets holds no secret; keeping the previous 1" in
                     g.proc.log_text(), what="the reload keeping the secret")
        await connect(g, "customer", "json")
        await rejected(g, DEV_SECRET)
    run(body())
    if not dev_secret:
        assert "development secret" not in g.proc.log_text()
