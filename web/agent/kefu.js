// kefu protocol client shared by the agent workbench and the supervisor console.
// Only the public protocol (docs/protocol.md): hello/welcome, requests matched by `req`,
// pushes, and the client rules for missed pushes and resuming (per-conversation `last`).

/* Settings come from the URL fragment so one static page serves any deployment:
 *   #gw=ws://h1:8080/ws,ws://h2:8080/ws&token=<JWT>
 * Without gw, the page's own origin's /ws. Several gateways: tried in turn on reconnect. */
export function pageSettings() {
  const f = new URLSearchParams(location.hash.replace(/^#/, ""));
  const own = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
  const gw = (f.get("gw") || "").split(",").map((s) => s.trim()).filter(Boolean);
  return { urls: gw.length ? gw : [own], token: f.get("token") || "", params: f };
}

// Message ids are "<ms>-<seq>": compare both parts as numbers (BigInt: they are 64-bit).
export function idCmp(a, b) {
  const [am, as] = a.split("-"), [bm, bs] = b.split("-");
  const d = BigInt(am) - BigInt(bm);
  if (d !== 0n) return d < 0n ? -1 : 1;
  const e = BigInt(as) - BigInt(bs);
  return e === 0n ? 0 : e < 0n ? -1 : 1;
}

export class Kefu {
  constructor({ urls, token }) {
    this.urls = urls;
    this.token = token;
    this.at = 0;               // index of the gateway URL in use
    this.seq = 0;
    this.pending = new Map();  // req -> {resolve, reject}
    this.handlers = new Map(); // push type -> [fn]
    this.ws = null;
    this.me = null;            // the welcome
    this.skew = 0;             // server_time - local time
    this.backoff = 250;
    this.stopped = false;
  }

  on(type, fn) {
    if (!this.handlers.has(type)) this.handlers.set(type, []);
    this.handlers.get(type).push(fn);
  }

  emit(type, m) {
    for (const fn of this.handlers.get(type) || []) {
      try { fn(m); } catch (e) { console.error(type, e); }
    }
  }

  now() { return Date.now() + this.skew; }

  start() { this.open(); }

  open() {
    const url = this.urls[this.at % this.urls.length];
    this.emit("_conn", { state: "connecting", url });
    let ws;
    try { ws = new WebSocket(url, "kefu.v1.json"); } catch (e) { this.retry(); return; }
    this.ws = ws;
    ws.onopen = () => {
      // the token goes in the first frame, not the URL: URLs end up in proxies' logs
      ws.send(JSON.stringify({ type: "hello", req: "hello", token: this.token }));
    };
    ws.onmessage = (ev) => {
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.type === "welcome") {
        this.me = m;
        // the welcome has no name: the token's own claim (display only, nothing verified here)
        try {
          const b = this.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
          const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(atob(b), (ch) => ch.charCodeAt(0))));
          m.name = claims.name || m.user;
        } catch (e) { m.name = m.user; }
        this.skew = m.server_time - Date.now();
        this.backoff = 250;
        this.emit("_conn", { state: "online", url });
        this.emit("welcome", m);
        return;
      }
      if (m.req !== undefined && m.req !== null && this.pending.has(m.req)) {
        const p = this.pending.get(m.req);
        this.pending.delete(m.req);
        if (m.type === "error") p.reject(m); else p.resolve(m);
        return;
      }
      if (m.type === "error" && m.req === "hello") {
        this.emit("_conn", { state: "refused", message: m.message });
        return;
      }
      this.emit(m.type, m);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const was = this.me;
      this.me = null;
      for (const p of this.pending.values()) p.reject({ code: "disconnected", message: "connection lost" });
      this.pending.clear();
      // 4401/4402: the token is bad or expired; reconnecting with it cannot help
      if (ev.code === 4401 || ev.code === 4402) {
        this.emit("_conn", { state: "refused", message: ev.reason });
        return;
      }
      this.emit("_conn", { state: "offline", code: ev.code, had: !!was });
      this.retry();
    };
  }

  retry() {
    if (this.stopped) return;
    this.at++;  // the next gateway: this one may be the one that went away
    const wait = this.backoff + Math.random() * this.backoff;
    this.backoff = Math.min(this.backoff * 2, 8000);
    setTimeout(() => this.open(), wait);
  }

  online() { return !!(this.ws && this.me && this.ws.readyState === 1); }

  request(type, fields = {}) {
    if (!this.online()) return Promise.reject({ code: "disconnected", message: "not connected" });
    const req = ++this.seq;
    return new Promise((resolve, reject) => {
      this.pending.set(req, { resolve, reject });
      this.ws.send(JSON.stringify({ type, req, ...fields }));
    });
  }
}

/* One conversation's messages under the protocol's rules ("Missed pushes", "Resuming after a
 * reconnect"): `last` is the newest id held in order; a push whose prev is not `last` means a
 * gap, filled from `history after=last`; pushes arriving meanwhile are applied afterwards. */
export class ConvLog {
  constructor(kefu, conv, onChange) {
    this.k = kefu;
    this.conv = conv;
    this.onChange = onChange;
    this.msgs = [];        // in order
    this.ids = new Set();
    this.last = "";
    this.filling = null;   // promise of the gap fill under way
    this.held = [];        // pushes that arrived during a fill
    this.outbox = [];      // {cid, text, state: "sending"|"failed", ts}
  }

  add(m) {
    if (this.ids.has(m.id)) return;
    this.ids.add(m.id);
    this.msgs.push(m);
    this.last = m.id;
    this.outbox = this.outbox.filter((o) => o.cid !== m.cid || !m.from || m.from.id !== this.k.me?.user);
  }

  // Rules 1-3 for a msg push or a msg.send answer (both carry prev).
  apply(m) {
    if (this.filling) { this.held.push(m); return; }
    if (this.last && idCmp(m.id, this.last) <= 0) return;          // held already
    if ((m.prev || "") === this.last) { this.add(m); this.onChange(); return; }
    this.held.push(m);
    this.fill();
  }

  // Rule 3 and resuming: history after last until more is false, then the held pushes.
  fill() {
    if (this.filling) return this.filling;
    this.filling = (async () => {
      try {
        for (;;) {
          const q = { conv: this.conv, limit: 100 };
          if (this.last) q.after = this.last;
          const r = await this.k.request("history", q);
          for (const m of r.msgs) if (!this.last || idCmp(m.id, this.last) > 0) this.add(m);
          if (!r.more) break;
        }
      } catch (e) {
        // disconnected or refused: the reconnect calls fill again
      } finally {
        this.filling = null;
      }
      const held = this.held;
      this.held = [];
      for (const m of held) if (!this.last || idCmp(m.id, this.last) > 0) {
        if ((m.prev || "") === this.last) this.add(m); else { this.held.push(m); }
      }
      if (this.held.length && this.k.online()) { this.held = []; this.fill(); }
      this.onChange();
    })();
    return this.filling;
  }

  /* Sends with a client id; a failure that the protocol says is retryable (unavailable,
   * overloaded, a lost connection) is retried with the same cid, so it is stored once. */
  send(text) {
    const me = this.k.me?.user || "me";
    const o = { cid: `${me}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`,
                text, state: "sending", ts: this.k.now() };
    this.outbox.push(o);
    this.onChange();
    this.push(o);
    return o;
  }

  async push(o) {
    o.state = "sending";
    try {
      const r = await this.k.request("msg.send", { conv: this.conv, text: o.text, cid: o.cid });
      const m = { conv: this.conv, id: r.id, prev: r.prev, ts: r.ts, text: o.text, cid: o.cid,
                  from: { id: this.k.me.user, role: this.k.me.role, name: this.k.me.name || this.k.me.user } };
      if (r.dup) { this.outbox = this.outbox.filter((x) => x !== o); this.fill(); }
      else this.apply(m);
      this.onChange();
      return r;
    } catch (e) {
      if (e.code === "unavailable" || e.code === "overloaded" || e.code === "rate_limited") {
        setTimeout(() => this.push(o), e.retry_ms || 1000);
      } else if (e.code === "disconnected") {
        o.state = "failed";  // re-sent by resend() after the reconnect
      } else {
        o.state = "failed";
        o.error = e.message || e.code;
      }
      this.onChange();
      throw e;
    }
  }

  // After a reconnect: the history first, then the unacknowledged sends, oldest first.
  async resume() {
    await this.fill();
    for (const o of [...this.outbox]) {
      if (o.state === "failed" && !o.error) {
        try { await this.push(o); } catch (e) { break; }
      }
    }
  }
}

export function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of kids.flat()) if (c !== null && c !== undefined && c !== false)
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

export function clock(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function dur(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

/* A short two-tone chime from WebAudio: no sound file to serve. Browsers allow audio only
 * after the user interacted with the page; before that it is silently skipped. */
let actx = null;
export function chime() {
  try {
    actx = actx || new AudioContext();
    const t = actx.currentTime;
    for (const [f, at] of [[880, 0], [1320, 0.12]]) {
      const o = actx.createOscillator(), g = actx.createGain();
      o.frequency.value = f;
      g.gain.setValueAtTime(0.15, t + at);
      g.gain.exponentialRampToValueAtTime(0.001, t + at + 0.25);
      o.connect(g).connect(actx.destination);
      o.start(t + at);
      o.stop(t + at + 0.3);
    }
  } catch (e) { /* no audio */ }
}

// What a content security policy blocked, for the browser tests (the gateway serves the pages
// under a strict one: no inline scripts or styles).
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});

export const LANG = (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
export function tr(dict) {
  return (key, vars = {}) => {
    let s = (dict[LANG] && dict[LANG][key]) || dict.en[key] || key;
    for (const [k, v] of Object.entries(vars)) s = s.replaceAll(`{${k}}`, v);
    return s;
  };
}
