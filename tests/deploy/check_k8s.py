"""Checks that the Kubernetes manifests agree with each other and with the programs.

Usage: check_k8s.py K8S_DIR BIN_DIR
No cluster is needed (kubectl --dry-run=client is not offline): what the manifests name is
checked against the manifests themselves, deploy/Dockerfile and the built programs (their
--dump-config markdown lists every option with its default; the HTTP paths probed must be in the binary).
Prints one line per problem; exit status 1 when there is one.
"""
import os
import re
import shlex
import sys

import yaml

k8s_dir, bin_dir = sys.argv[1], sys.argv[2]
problems = []


def bad(msg):
    problems.append(msg)
    print(msg)


def program_options(prog):
    """option name -> default (None when empty), from PROG --dump-config markdown, whose rows
    read "| `name` | `default` | SIGHUP | meaning |" ("empty" for no default)."""
    out = os.popen(shlex.quote(os.path.join(bin_dir, prog)) + " --dump-config markdown").read()
    opts = {}
    for line in out.splitlines():
        m = re.match(r"\| `([a-z0-9_]+)` \| (`(.*?)`|empty) \|", line)
        if m:
            opts[m.group(1)] = m.group(3)
    if not opts:
        bad(f"{prog}: no options read from --dump-config markdown in {bin_dir}")
    return opts


def config_values(text):
    """name -> value of a kefu configuration file (the syntax of lib/config.c)."""
    vals = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([^\s=]+)\s*=?\s*(.*)$", line)
        v = m.group(2).strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
            v = v[1:-1]
        vals[m.group(1)] = v
    return vals


docs = []
files = sorted(f for f in os.listdir(k8s_dir) if f.endswith((".yaml", ".yml")))
for f in files:
    with open(os.path.join(k8s_dir, f), encoding="utf-8") as fh:
        for d in yaml.safe_load_all(fh):
            if d is None:
                continue
            for k in ("apiVersion", "kind"):
                if k not in d:
                    bad(f"{f}: a document without {k}")
            d["_file"] = f
            docs.append(d)

# kustomization.yaml lists every manifest but the Secret's template
kust = [d for d in docs if d.get("kind") == "Kustomization"]
if len(kust) != 1:
    bad("expected one kustomization.yaml")
else:
    listed = set(kust[0].get("resources", []))
    want = {d["_file"] for d in docs if d.get("kind") not in ("Kustomization", "Secret")}
    for f in sorted(want - listed):
        bad(f"kustomization.yaml does not list {f}")
    for f in sorted(listed - set(files)):
        bad(f"kustomization.yaml lists {f}, which does not exist")
    for d in docs:
        if d.get("kind") == "Secret" and d["_file"] in listed:
            bad(f"kustomization.yaml lists the Secret {d['_file']}: applying it would "
                "replace the real secret")


def named(kind, name):
    for d in docs:
        if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    return None


# the image's user, which runAsUser must match for runAsNonRoot to hold
dockerfile_user = None
with open("deploy/Dockerfile", encoding="utf-8") as fh:
    for line in fh:
        m = re.match(r"USER\s+(\S+)", line)
        if m:
            dockerfile_user = m.group(1)

workloads = [d for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
if not workloads:
    bad("no workloads")
for w in workloads:
    wname = f"{w['kind']}/{w['metadata']['name']}"
    spec = w["spec"]
    tmpl = spec["template"]
    labels = tmpl["metadata"].get("labels", {})
    sel = spec["selector"]["matchLabels"]
    if any(labels.get(k) != v for k, v in sel.items()):
        bad(f"{wname}: the selector does not match the pod labels")
    pod = tmpl["spec"]
    psc = pod.get("securityContext", {})
    if dockerfile_user and psc.get("runAsNonRoot"):
        uid, _, gid = dockerfile_user.partition(":")
        if not uid.isdigit():
            bad(f"deploy/Dockerfile: USER {dockerfile_user} is not numeric; runAsNonRoot "
                "cannot be verified by the kubelet")
        elif str(psc.get("runAsUser")) != uid or (gid and str(psc.get("runAsGroup")) != gid):
            bad(f"{wname}: runAsUser/runAsGroup differ from the image's USER {dockerfile_user}")
    if w["kind"] == "StatefulSet":
        svc = named("Service", spec.get("serviceName"))
        if not svc or svc["spec"].get("clusterIP") != "None":
            bad(f"{wname}: serviceName is not a headless Service of these manifests")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        cname = f"{wname} {c['name']}"
        cmd = c.get("command", [])
        prog = cmd[0] if cmd else ""
        if prog not in ("kefu-gateway", "kefu-worker"):
            bad(f"{cname}: runs {prog!r}, not kefu-gateway or kefu-worker")
            continue
        opts = program_options(prog)
        # the configuration file: --config PATH, mounted from the ConfigMap
        conf = {}
        if "--config" in cmd:
            path = cmd[cmd.index("--config") + 1]
            mount = next((m for m in c.get("volumeMounts", [])
                          if m["mountPath"] == os.path.dirname(path)), None)
            vol = volumes.get(mount["name"]) if mount else None
            cm = named("ConfigMap", vol["configMap"]["name"]) if vol and "configMap" in vol else None
            key = os.path.basename(path)
            items = (vol or {}).get("configMap", {}).get("items")
            if items is not None:
                key = next((i["key"] for i in items if i["path"] == os.path.basename(path)), None)
            if not cm or key not in cm.get("data", {}):
                bad(f"{cname}: {path} comes from no ConfigMap key")
            else:
                conf = config_values(cm["data"][key])
                for name in conf:
                    if name not in opts:
                        bad(f"{cname}: {path} sets {name}, which {prog} does not know")
        for a in cmd[1:]:
            if a.startswith("--") and a != "--config" and a[2:].replace("-", "_") not in opts:
                bad(f"{cname}: {prog} has no option {a}")
        for e in c.get("env", []):
            n = e["name"]
            if n.startswith("KEFU_") and n[5:].lower() not in opts:
                bad(f"{cname}: {n} is no option of {prog}")
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                s = named("Secret", ref["name"])
                if not s or ref["key"] not in {**s.get("data", {}), **(s.get("stringData") or {})}:
                    bad(f"{cname}: {n} refers to {ref['name']}/{ref['key']}, not in secret.yaml")

        def value(name):
            return conf.get(name, opts.get(name))

        # the port the program serves HTTP on, on an address the kubelet reaches
        port_opt, bind_opt = ("port", "bind") if prog == "kefu-gateway" else ("http_port", "http_bind")
        port = value(port_opt)
        if value(bind_opt) and value(bind_opt).startswith("127."):
            bad(f"{cname}: {bind_opt} {value(bind_opt)}: probes from the kubelet cannot reach it")
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        if str(port) not in {str(p) for p in ports.values()}:
            bad(f"{cname}: containerPort is not the program's {port_opt} {port}")
        with open(os.path.join(bin_dir, prog), "rb") as fh:
            binary = fh.read()
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet")
            if not get:
                bad(f"{cname}: no {probe} with httpGet")
                continue
            if get["path"] != path:
                bad(f"{cname}: {probe} on {get['path']}, expected {path}")
            if b"\0" + get["path"].encode() + b"\0" not in binary:
                bad(f"{cname}: {prog} does not serve {get['path']}")
            if str(ports.get(get["port"], get["port"])) != str(port):
                bad(f"{cname}: {probe} port {get['port']} is not {port_opt} {port}")
        # a gateway drains on SIGTERM: the pod must leave the endpoints first (preStop) and
        # the kubelet must wait for the drain
        if "drain_timeout_ms" in opts:
            pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            pause = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else None
            if pause is None:
                bad(f"{cname}: no preStop pause before the drain")
                pause = 0
            # a drain closes connections within drain_timeout_ms, then their closing
            # handshakes get up to 3 s more
            need = pause + int(value("drain_timeout_ms")) / 1000 + 3
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace <= need:
                bad(f"{cname}: terminationGracePeriodSeconds {grace} is not above the {need} s "
                    "a stop takes")
        if "processes" in opts and int(value("processes") or 0) == 0:
            bad(f"{cname}: processes 0 counts the node's cores, not the pod's: set it")

for d in docs:
    kind, name = d.get("kind"), d.get("metadata", {}).get("name")
    if kind in ("Service", "PodDisruptionBudget"):
        sel = d["spec"]["selector"]
        sel = sel.get("matchLabels", sel) if kind == "PodDisruptionBudget" else sel
        match = [w for w in workloads
                 if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v
                        for k, v in sel.items())]
        if len(match) != 1:
            bad(f"{kind}/{name}: its selector matches {len(match)} workloads")
        elif kind == "Service":
            names = {p.get("name") for c in match[0]["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            for p in d["spec"]["ports"]:
                if isinstance(p["targetPort"], str) and p["targetPort"] not in names:
                    bad(f"Service/{name}: targetPort {p['targetPort']} is no container port")
if not any(d.get("kind") == "PodDisruptionBudget" for d in docs):
    bad("no PodDisruptionBudget")

print(f"{len(docs)} documents in {len(files)} files: "
      f"{'ok' if not problems else str(len(problems)) + ' problems'}")
sys.exit(1 if problems else 0)
