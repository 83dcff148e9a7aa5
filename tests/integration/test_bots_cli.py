"""kefu-bot, the bot authors' tool: --check, transcripts with a simulated clock, @expect, JSON
output, and the exit statuses CI relies on (0 ok, 1 load error, 2 usage, 3 rule failure,
4 expectation failed)."""

import json
import subprocess
import uuid
from pathlib import Path

import kefu_harness as H

RETAIL = H.REPO / "lua" / "bots" / "retail"


def kefu_bot(*args, stdin=None):
    r = subprocess.run([str(H.find_bin("kefu-bot")), *map(str, args)], input=stdin,
                       capture_output=True, timeout=30, env=H.child_env(), text=True)
    return r.returncode, r.stdout, r.stderr


def rules(tmp, text):
    d = Path(tmp) / f"cli-{uuid.uuid4().hex[:6]}"
    d.mkdir(parents=True)
    (d / "10_rules.lua").write_text(text, encoding="utf-8")
    return d


def test_check(workdir):
    rc, out, _ = kefu_bot("--check", RETAIL)
    assert rc == 0 and "ok (10 files" in out, out
    rc, _, err = kefu_bot("--check", rules(workdir, "rule { keywords = 'a' reply = 'b' }"))
    assert rc == 1 and "10_rules.lua:1:" in err, err
    rc, _, err = kefu_bot("--check", rules(workdir, "calendar { hours = { mon = '9-18' } }"))
    assert rc == 1 and "bad hours '9-18'" in err, err
    rc, _, err = kefu_bot("--check", workdir / "does-not-exist")
    assert rc == 1 and "cannot open" in err
    rc, _, _ = kefu_bot()
    assert rc == 2


def test_example_transcripts_hold():
    tests = sorted((RETAIL / "tests").glob("*.txt"))
    assert tests
    rc, out, err = kefu_bot("-q", RETAIL, *tests)
    assert rc == 0, out + err
    assert out == "", out


def test_transcript_clock_and_expect(workdir):
    t = Path(workdir) / f"t-{uuid.uuid4().hex[:6]}.txt"
    t.write_text("@at 2026-10-03 10:00\n@open\n@expect 国庆节\n@expect 2026-10-08 09:00\n"
                 "退货\n@expect no such text\n", encoding="utf-8")
    rc, out, _ = kefu_bot(RETAIL, t)
    assert rc == 4, out
    assert "EXPECT FAILED" in out and "7天无理由退货" in out, out
    assert out.count("EXPECT FAILED") == 1


def test_rule_failure_exit_status_and_json(workdir):
    d = rules(workdir, "rule { keywords = 'loop', run = function() while true do end end }\n"
                       "on('message', function(c, t) c:reply('you said ' .. t) end)\n")
    rc, out, _ = kefu_bot("--json", "--instructions", "5000", d, stdin="hello\nloop\n")
    assert rc == 3, out
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["opened", "message", "message"], events
    assert events[1]["actions"] == [{"kind": "reply", "value": "you said hello"}], events[1]
    assert "instruction budget of 5000" in events[2]["error"], events[2]
    assert events[2]["actions"] == [{"kind": "handoff", "key": "bot_error"}], events[2]


def test_usage_errors(workdir):
    t = Path(workdir) / f"u-{uuid.uuid4().hex[:6]}.txt"
    t.write_text("@teleport 5\n")
    rc, _, err = kefu_bot(RETAIL, t)
    assert rc == 2 and "unknown directive @teleport" in err, err
    rc, _, err = kefu_bot("--at", "tomorrow", RETAIL)
    assert rc == 2, err
