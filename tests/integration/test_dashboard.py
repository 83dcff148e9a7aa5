"""deploy/grafana/kefu-dashboard.json: valid, and every metric its queries name is one a
running gateway or worker exports (a renamed metric would leave a panel silently empty)."""

import json
import os
import re

DASH = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "grafana",
                    "kefu-dashboard.json")


def exported(text):
    return set(re.findall(r"^# TYPE (\S+) ", text, re.M))


def test_dashboard_queries_name_exported_metrics(spawn):
    r = spawn.redis()
    g = spawn.gateway([r], name="dash")
    w = spawn.worker([r], name="dash")
    have = exported(g.metrics().text) | exported(w.http("/metrics")[1])
    assert "kefu_connections" in have and "kefu_worker_conversations_total" in have, have

    d = json.load(open(DASH))
    assert d["uid"] and d["title"] and d["schemaVersion"] >= 30
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), ids
    used = set()
    for p in d["panels"]:
        gp = p["gridPos"]
        assert 0 <= gp["x"] and gp["x"] + gp["w"] <= 24, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            names = re.findall(r"\b(kefu_[a-z0-9_]+)", t["expr"])
            assert names, (p["title"], t["expr"])
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            used |= {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(
                ("_bucket", "_sum", "_count")) else n for n in names}
    missing = sorted(n for n in used if n not in have)
    assert not missing, f"the dashboard queries metrics nobody exports: {missing}"
    # the service statistics are on it
    for m in ("kefu_worker_conversations_total", "kefu_worker_first_response_seconds",
              "kefu_worker_ratings_total", "kefu_worker_sla_conversations_total"):
        assert m in used, m
