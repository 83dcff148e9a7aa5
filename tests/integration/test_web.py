"""The web assets on the gateway's port (gateway/web.c, docs/web.md): every file of web/ served
as it is in the repository, with its content type, ETag and If-None-Match, gzip, Cache-Control,
the pages' Content-Security-Policy, HEAD, 405, no way out of the tree; `web_dir` serves a
directory read on every request; `web no` serves nothing."""

import gzip
import http.client
import os
import socket
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parents[2] / "web"
FILES = sorted(p for p in WEB.rglob("*") if p.is_file() and not any(
    part.startswith(".") for part in p.relative_to(WEB).parts))


def request(node, method, path, headers=None, body=None):
    """(status, body bytes, headers with lower-case names)."""
    conn = http.client.HTTPConnection(node.host, node.port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data, {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def raw(node, request_line):
    """Sends a request line as it is (http.client would normalise the path); returns the
    status code."""
    with socket.create_connection((node.host, node.port), timeout=5) as s:
        s.sendall(f"{request_line}\r\nHost: {node.host}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_every_file_served_as_in_the_repository(cluster):
    assert any(p.name == "widget.js" for p in FILES) and (WEB / "demo" / "index.html").is_file()
    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
    for p in FILES:
        rel = "/" + p.relative_to(WEB).as_posix()
        st, body, h = request(cluster.n1, "GET", rel)
        assert st == 200, rel
        assert body == p.read_bytes(), rel
        assert "content-encoding" not in h, rel      # no Accept-Encoding: identity
        if p.suffix in types:
            assert h["content-type"] == types[p.suffix], rel
        assert h["x-content-type-options"] == "nosniff"
    # a directory's index; the root is the demo page; a directory without its slash redirects
    st, body, h = request(cluster.n1, "GET", "/demo/")
    assert st == 200 and body == (WEB / "demo" / "index.html").read_bytes()
    st, _, h = request(cluster.n1, "GET", "/")
    assert st == 302 and h["location"] == "/demo/"
    st, _, h = request(cluster.n1, "GET", "/demo")
    assert st == 301 and h["location"] == "/demo/"
    # a query string does not change the file
    st, body, _ = request(cluster.n1, "GET", "/widget.js?v=1")
    assert st == 200 and body == (WEB / "widget.js").read_bytes()
    assert request(cluster.n1, "GET", "/no-such-file.js")[0] == 404
    # the other endpoints are unchanged
    assert request(cluster.n1, "GET", "/healthz")[:2] == (200, b"ok\n")
    assert request(cluster.n1, "GET", "/ws")[0] == 426


def test_gzip_when_accepted_and_smaller(cluster):
    js = (WEB / "widget.js").read_bytes()
    st, body, h = request(cluster.n1, "GET", "/widget.js", {"Accept-Encoding": "br, gzip"})
    assert st == 200 and h["content-encoding"] == "gzip" and h["vary"] == "Accept-Encoding"
    assert len(body) < len(js) and gzip.decompress(body) == js
    assert int(h["content-length"]) == len(body)
    for ae in ("gzip;q=0", "identity", "br"):
        st, body, h = request(cluster.n1, "GET", "/widget.js", {"Accept-Encoding": ae})
        assert st == 200 and "content-encoding" not in h and body == js, ae
    # a PNG does not shrink: sent as it is even to a gzip client
    for p in FILES:
        if p.suffix == ".png":
            st, body, h = request(cluster.n1, "GET", "/" + p.relative_to(WEB).as_posix(),
                                  {"Accept-Encoding": "gzip"})
            assert "content-encoding" not in h and body == p.read_bytes()
            break


def test_etag_and_if_none_match(cluster):
    st, body, h = request(cluster.n1, "GET", "/widget.js")
    etag = h["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 10
    assert h["cache-control"] == "no-cache"
    # the same content has the same tag on every node and for the gzip copy
    assert request(cluster.n2, "GET", "/widget.js")[2]["etag"] == etag
    assert request(cluster.n1, "GET", "/widget.js", {"Accept-Encoding": "gzip"})[2]["etag"] == etag
    # another file has another tag
    assert request(cluster.n1, "GET", "/demo/index.html")[2]["etag"] != etag
    for inm in (etag, f'"x", {etag}', f"W/{etag}", "*"):
        st, body, h = request(cluster.n1, "GET", "/widget.js", {"If-None-Match": inm})
        assert st == 304 and body == b"" and h["etag"] == etag, inm
    st, body, _ = request(cluster.n1, "GET", "/widget.js", {"If-None-Match": '"stale"'})
    assert st == 200 and body == (WEB / "widget.js").read_bytes()


def test_head_and_other_methods(cluster):
    js = (WEB / "widget.js").read_bytes()
    st, body, h = request(cluster.n1, "HEAD", "/widget.js")
    assert st == 200 and body == b"" and int(h["content-length"]) == len(js) and "etag" in h
    # the connection is still usable after a HEAD (keep-alive): the next answer is whole
    conn = http.client.HTTPConnection(cluster.n1.host, cluster.n1.port, timeout=5)
    try:
        conn.request("HEAD", "/widget.js")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b""
        conn.request("GET", "/widget.js")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == js
        conn.request("GET", "/widget.js", headers={"If-None-Match": r.getheader("etag")})
        r = conn.getresponse()
        assert r.status == 304 and r.read() == b""
        conn.request("GET", "/widget.js")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == js
    finally:
        conn.close()
    for m in ("POST", "PUT", "DELETE"):
        st, body, h = request(cluster.n1, m, "/widget.js", body=b"x=1")
        assert st == 405 and h["allow"] == "GET, HEAD", m


def test_content_security_policy(cluster):
    n = cluster.n1
    st, _, h = request(n, "GET", "/demo/")
    csp = {d.split()[0]: d.split()[1:] for d in h["content-security-policy"].split("; ")}
    assert csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["default-src"] == ["'self'"] and csp["object-src"] == ["'none'"]
    host = f"{n.host}:{n.port}"
    assert f"ws://{host}" in csp["connect-src"] and f"wss://{host}" in csp["connect-src"]
    assert csp["frame-ancestors"] == ["'self'"]
    # a Host header that could smuggle policy is left out
    st, _, h = request(n, "GET", "/demo/", {"Host": "evil; script-src *"})
    assert st == 200 and "evil" not in h["content-security-policy"]
    # the widget's files are loaded by other sites' pages: CORS and CORP allow it; no policy
    st, _, h = request(n, "GET", "/widget.js", {"Origin": "https://shop.example"})
    assert h["access-control-allow-origin"] == "*"
    assert h["cross-origin-resource-policy"] == "cross-origin"
    assert "content-security-policy" not in h


def test_no_path_out_of_the_tree(cluster, spawn, tmp_path):
    site = tmp_path / "site"
    (site / "demo").mkdir(parents=True)
    (site / "demo" / "index.html").write_text("<p>dev</p>")
    (site / ".secret").write_text("hidden")
    (tmp_path / "outside.txt").write_text("outside")
    os.symlink(tmp_path / "outside.txt", site / "link.txt")
    dev = spawn.gateway(cluster.shards, name="dev", web_dir=str(site))
    for n in (cluster.n1, dev):
        for line in ("GET /../CMakeLists.txt HTTP/1.1", "GET /demo/../../README.md HTTP/1.1",
                     "GET /%2e%2e/README.md HTTP/1.1", "GET /demo/%2e%2e/%2e%2e/outside.txt HTTP/1.1",
                     "GET /../outside.txt HTTP/1.1", "GET /.secret HTTP/1.1",
                     "GET /..%2foutside.txt HTTP/1.1"):
            st = raw(n, line)
            assert st in (400, 403, 404), (line, st)
    assert request(dev, "GET", "/link.txt")[0] == 404     # a symlink out of web_dir
    assert request(dev, "GET", "/.secret")[0] == 404


def test_web_dir_is_read_on_every_request(cluster, spawn, tmp_path):
    (tmp_path / "demo").mkdir()
    page = tmp_path / "demo" / "index.html"
    page.write_text("<p>one</p>")
    g = spawn.gateway(cluster.shards, name="dev", web_dir=str(tmp_path))
    st, body, h = request(g, "GET", "/demo/", {"Accept-Encoding": "gzip"})
    assert st == 200 and body == b"<p>one</p>" and h["cache-control"] == "no-store"
    assert "content-encoding" not in h and "content-security-policy" in h
    etag = h["etag"]
    page.write_text("<p>two, changed</p>")
    st, body, h = request(g, "GET", "/demo/", {"If-None-Match": etag})
    assert st == 200 and body == b"<p>two, changed</p>" and h["etag"] != etag
    assert request(g, "GET", "/demo/", {"If-None-Match": h["etag"]})[0] == 304
    (tmp_path / "new.js").write_text("let x = 1;")
    st, body, h = request(g, "GET", "/new.js")
    assert st == 200 and body == b"let x = 1;" and h["content-type"].startswith("text/javascript")
    # only the directory: the compiled-in widget is not served from it
    assert request(g, "GET", "/widget.js")[0] == 404


def test_web_off(cluster, spawn):
    g = spawn.gateway(cluster.shards, name="noweb", web="no")
    for p in ("/widget.js", "/demo/", "/"):
        assert request(g, "GET", p)[0] == 404, p
    assert request(g, "GET", "/healthz")[0] == 200
