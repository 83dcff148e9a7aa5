// The supervisor console: agents (state, load, breaks to approve or deny), queues per group
// (transfers allowed or forbidden), alerts as they arrive, joining a conversation and moving it,
// taking it over (the supervisor becomes its handler: conv.transfer to oneself),
// yesterday's and today's figures with inline SVG charts, call-back tasks and the QA sample.
// Public protocol only (docs/protocol.md).
import { Kefu, ConvLog, pageSettings, el, clock, dur } from "../agent/kefu.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const cfg = pageSettings();
const k = new Kefu(cfg);
const agents = new Map();  // id -> agent state object
const breaks = new Map();  // agent -> {agent, reason, since, message}
const groups = new Map();  // group -> {group, waiting, transfers}
let watch = null;          // {conv, log, info}
let subTimer = 0;

/* Statistics days are the worker's local days (its stats_timezone, default UTC); the page
 * cannot ask which, so it takes tz= from the fragment (an IANA name), else UTC. */
const TZ = cfg.params.get("tz") || "UTC";
function dayOf(ms) {
  return new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit" })
    .format(new Date(ms));
}

function setup() {
  document.documentElement.lang = navigator.language || "en";
  $("brand").textContent = document.title = t("brand");
  for (const [id, key] of [["h-agents", "agents"], ["h-queues", "queues"], ["h-alerts", "alerts"],
    ["h-watch", "watch"], ["h-stats", "stats"], ["h-callbacks", "callbacks"], ["h-qa", "qa"],
    ["join-go", "join"], ["send", "send"], ["take-go", "take"], ["take-over", "take_over"],
    ["close-conv", "close"]]) $(id).textContent = t(key);
  $("join-conv").placeholder = t("conv_id");
  $("take-agent").placeholder = t("agent_id");
  $("join-form").onsubmit = (e) => { e.preventDefault(); join($("join-conv").value.trim()); };
  $("composer").onsubmit = (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text || !watch) return;
    $("text").value = "";
    watch.log.send(text);
  };
  $("take-form").onsubmit = (e) => { e.preventDefault(); transfer($("take-agent").value.trim()); };
  // Taking over is a transfer to oneself (docs/protocol.md, Transfers): no agent status needed.
  $("take-over").onclick = () => transfer(k.me.user);
  $("close-conv").onclick = async () => {
    $("take-err").textContent = "";
    try {
      await k.request("conv.close", { conv: watch.conv, resolution: "resolved" });
      watch.info.state = "closed";
      renderWatch();
    } catch (e) { $("take-err").textContent = e.message || e.code; }
  };
  $("alerts").append(el("li", { class: "muted none", text: t("none") }));
  setInterval(() => renderAgents(), 1000);
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

async function subscribe() {
  clearTimeout(subTimer);
  try {
    const s = await k.request("monitor.subscribe");
    agents.clear();
    for (const a of s.agents || []) agents.set(a.agent, a);
    breaks.clear();
    for (const b of s.breaks || []) breaks.set(b.agent, b);
    groups.clear();
    for (const g of s.groups || []) groups.set(g.group, g);
    notice((s.unavailable_domains || []).length ? `unavailable: ${s.unavailable_domains.join(", ")}` : "");
    renderAgents();
    renderGroups();
    // the subscription lasts monitor_ttl_ms (10 min): renewed well before
    const left = (s.expires_at || k.now() + 600000) - k.now();
    subTimer = setTimeout(subscribe, Math.max(5000, left / 2));
  } catch (e) {
    if (e.code !== "disconnected") { notice(e.message || e.code); subTimer = setTimeout(subscribe, 3000); }
  }
}

function renderAgents() {
  const tb = $("agents");
  const now = k.now();
  tb.replaceChildren(el("tr", {}, ...["agent", "status", "load", "since", "brk"].map((x) => el("th", { text: t(x) }))));
  for (const a of [...agents.values()].sort((x, y) => x.agent.localeCompare(y.agent))) {
    const b = breaks.get(a.agent);
    const st = a.connected === false && a.status !== "offline" ? "disconnected" : a.status;
    const cls = { available: "ok", away: "warn", disconnected: "bad" }[st] || "";
    tb.append(el("tr", { "data-agent": a.agent },
      el("td", { title: a.agent, text: a.name || a.agent }),
      el("td", {}, el("span", { class: "pill " + cls, text: t(st) + (a.status === "away" && a.reason ? ` · ${t(a.reason)}` : "") })),
      el("td", { text: `${a.load ?? 0}/${a.max ?? ""}` }),
      el("td", { class: "muted", text: a.since ? dur(now - a.since) : "" }),
      el("td", {}, b ? [el("span", { class: "pill warn", title: b.message || "", text: t("pending_break", { reason: t(b.reason) }) }), " ",
        el("button", { class: "approve", onclick: () => decide("break.approve", a.agent), text: t("approve") }), " ",
        el("button", { class: "deny", onclick: () => decide("break.deny", a.agent), text: t("deny") })] : null)));
  }
  // break requests of agents the snapshot did not list (another domain's, say)
  for (const b of breaks.values()) if (!agents.has(b.agent))
    tb.append(el("tr", { "data-agent": b.agent }, el("td", { text: b.agent }), el("td"), el("td"), el("td"),
      el("td", {}, el("button", { class: "approve", onclick: () => decide("break.approve", b.agent), text: t("approve") }))));
}

async function decide(type, agent) {
  try {
    await k.request(type, { agent });
    breaks.delete(agent);
    renderAgents();
  } catch (e) { notice(e.message || e.code); }
}

function renderGroups() {
  const tb = $("groups");
  tb.replaceChildren(el("tr", {}, ...["group", "waiting", "transfers", ""].map((x) => el("th", { text: x ? t(x) : "" }))));
  for (const g of [...groups.values()].sort((x, y) => x.group.localeCompare(y.group))) {
    tb.append(el("tr", { "data-group": g.group },
      el("td", { text: g.group }),
      el("td", { class: "waiting", text: g.waiting }),
      el("td", {}, el("span", { class: "pill " + (g.transfers === false ? "bad" : "ok"),
        text: t(g.transfers === false ? "forbidden" : "allowed") })),
      el("td", {}, el("button", { class: "toggle", onclick: () => transfers(g.group, g.transfers === false),
        text: t(g.transfers === false ? "allow" : "forbid") }))));
  }
}

async function transfers(group, allowed) {
  try {
    const f = { group, allowed };
    if (!allowed) f.message = t("forbid_msg");
    const r = await k.request("group.transfers", f);
    const g = groups.get(group);
    if (g) g.transfers = r.allowed;
    renderGroups();
  } catch (e) { notice(e.message || e.code); }
}

function alertText(a) {
  const parts = [a.kind, a.ticket || ""];
  if (a.overdue_ms !== undefined)
    parts.push(t("overdue", { t: a.overdue_ms < 60000 ? `${(a.overdue_ms / 1000).toFixed(1)} s` : dur(a.overdue_ms) }));
  if (a.agent) parts.push(agents.get(a.agent)?.name || a.agent);
  if (a.reason) parts.push(a.reason);
  return parts.filter(Boolean).join(" · ");
}

function addAlert(a) {
  const ul = $("alerts");
  ul.querySelector(".none")?.remove();
  const bad = a.kind === "sensitive" || a.priority === "high" || (a.kind || "").startsWith("sla.");
  ul.prepend(el("li", { "data-kind": a.kind, "data-conv": a.conv || "" },
    el("span", { class: "muted", text: clock(a.fired_at || a.ts || k.now()) + " " }),
    el("span", { class: "pill " + (bad ? "bad" : "warn"), text: a.kind }), " ",
    el("span", { text: alertText(a).replace(/^[^·]*· ?/, "") }), " ",
    a.conv ? el("button", { class: "join", onclick: () => join(a.conv), text: t("join") }) : null));
}

/* The alerts kept while this page was not watching (alert.list: the last 24 hours), oldest
 * first, so that the newest ends on top; pushes add to them as they come. */
async function loadAlerts() {
  let r;
  try { r = await k.request("alert.list", { limit: 100 }); } catch (e) { return; }
  const ul = $("alerts");
  ul.replaceChildren();
  if (!r.alerts.length) ul.append(el("li", { class: "muted none", text: t("none") }));
  for (const a of r.alerts) addAlert(a);
}

async function join(conv) {
  if (!conv) return;
  try {
    await k.request("conv.join", { conv });
  } catch (e) { notice(e.message || e.code); return; }
  $("join-conv").value = conv;
  watch = { conv, info: {}, log: new ConvLog(k, conv, renderWatch) };
  $("watch").hidden = false;
  const l = await k.request("conv.list").catch(() => ({ convs: [] }));
  watch.info = l.convs.find((x) => x.conv === conv) || {};
  await watch.log.fill();
  renderWatch();
}

async function transfer(to) {
  if (!watch || !to) return;
  const conv = watch.conv;
  $("take-err").textContent = "";
  try {
    const r = await k.request("conv.transfer", { conv, to_agent: to });
    Object.assign(watch.info, { agent: r.agent, state: r.state });
    // handed on by its handler (after taking it over), the supervisor watches it again
    if (r.agent !== k.me.user) await k.request("conv.join", { conv }).catch(() => {});
    $("take-err").textContent = r.agent === k.me.user ? t("taken") : `→ ${r.agent}`;
    renderWatch();
  } catch (e) { $("take-err").textContent = e.message || e.code; }
}

function renderWatch() {
  if (!watch) return;
  const i = watch.info;
  const mine = i.agent === k.me?.user;
  $("take-over").hidden = mine || i.state !== "assigned";
  $("close-conv").hidden = !mine || i.state === "closed";
  $("watch").dataset.handler = i.agent || "";
  $("watch-title").textContent = [i.ticket, i.channel, i.customer, i.agent && `→ ${i.agent}`, i.state].filter(Boolean).join(" · ");
  const ol = $("msgs");
  ol.replaceChildren();
  for (const m of watch.log.msgs) {
    const mine = m.from && m.from.id === k.me?.user;
    ol.append(el("li", { "data-id": m.id, class: (mine ? "mine" : "") + (m.from?.role === "bot" ? " bot" : "") },
      el("div", { class: "meta", text: `${m.from?.name || m.from?.id || ""} (${m.from?.role || ""}) · ${clock(m.ts)}` }),
      el("div", { class: "b", text: m.text })));
  }
  for (const o of watch.log.outbox)
    ol.append(el("li", { class: "mine out " + o.state }, el("div", { class: "b", text: o.text })));
  ol.scrollTop = ol.scrollHeight;
  $("typing").textContent = watch.typingUntil > Date.now() ? `${watch.typingName} …` : "";
}

// The queue moved, so the figures did: read them again, at most every 5 s.
let statsTimer = 0;
function statsSoon() {
  if (!statsTimer) statsTimer = setTimeout(() => { statsTimer = 0; loadStats(); }, 5000);
}

/* Figures and charts: stats.get for yesterday and today, by day. */
async function loadStats() {
  const box = $("stats");
  const today = dayOf(k.now()), yesterday = dayOf(k.now() - 86400000);
  let r;
  try {
    r = await k.request("stats.get", { from: yesterday, to: today, by: "day" });
  } catch (e) { box.replaceChildren(el("p", { class: "muted", text: e.message || e.code })); return; }
  const pct = (x) => (x === null || x === undefined ? "–" : `${Math.round(x * 100)}%`);
  const rows = r.rows;
  const tbl = el("table", { id: "stats-table" }, el("tr", {}, ...["day", "opened", "closed", "resolved", "abandoned", "res_rate", "frt", "csat"].map((x) => el("th", { text: t(x) }))),
    ...rows.map((x) => el("tr", { "data-day": x.period },
      el("td", { text: x.period }), el("td", { class: "opened", text: x.opened ?? "–" }), el("td", { text: x.closed }),
      el("td", { text: x.resolved }), el("td", { text: x.abandoned ?? "–" }), el("td", { text: pct(x.resolution_rate) }),
      el("td", { text: x.first_response?.p50_ms == null ? "–" : dur(x.first_response.p50_ms) }),
      el("td", { text: x.satisfaction?.mean == null ? "–" : `${x.satisfaction.mean}★` }))));
  box.replaceChildren(el("div", { class: "scroll" }, tbl), barsByDay(rows), hours(r.peak_hours?.counts || []),
    el("button", { onclick: loadStats, text: t("refresh") }));
}

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [a, v] of Object.entries(attrs)) e.setAttribute(a, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// Grouped bars: per measure, yesterday's and today's side by side.
function barsByDay(rows) {
  const measures = ["opened", "closed", "resolved", "abandoned"];
  const max = Math.max(1, ...rows.flatMap((r) => measures.map((m) => r[m] || 0)));
  const W = 400, H = 130, top = 14, bottom = 18, gw = W / measures.length;
  const s = svg("svg", { class: "chart", id: "chart-days", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" });
  const colors = ["#9db7d8", "#1677ff"];  // also in style.css (.key.k0, .key.k1)
  measures.forEach((m, i) => {
    rows.forEach((r, j) => {
      const v = r[m] || 0, h = (H - top - bottom) * v / max;
      const x = i * gw + 14 + j * (gw / 2 - 10), y = H - bottom - h;
      s.append(svg("rect", { x, y, width: gw / 2 - 16, height: h, fill: colors[j % 2] }, undefined));
      s.append(svg("text", { x: x + (gw / 2 - 16) / 2, y: y - 2, "text-anchor": "middle" }, String(v)));
    });
    s.append(svg("text", { x: i * gw + gw / 2, y: H - 4, "text-anchor": "middle" }, t(m)));
  });
  const legend = el("div", { class: "muted" }, ...rows.map((r, j) =>
    el("span", { class: `key k${j % 2}`, text: r.period })));
  return el("div", {}, s, legend);
}

function hours(counts) {
  const W = 400, H = 90, bottom = 14, max = Math.max(1, ...counts), bw = W / 24;
  const s = svg("svg", { class: "chart", id: "chart-hours", viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" });
  counts.forEach((v, h) => {
    const hh = (H - bottom - 4) * v / max;
    s.append(svg("rect", { x: h * bw + 1, y: H - bottom - hh, width: bw - 2, height: hh, fill: "#2e9d5b" }));
    if (h % 3 === 0) s.append(svg("text", { x: h * bw + bw / 2, y: H - 2, "text-anchor": "middle" }, String(h)));
  });
  return el("div", {}, el("div", { class: "muted", text: t("peak") }), s);
}

async function loadCallbacks() {
  const tb = $("callbacks");
  try {
    const r = await k.request("callback.list", { state: "pending" });
    tb.replaceChildren(el("tr", {}, ...["ticket", "reason", "deadline", "assignee", ""].map((x) => el("th", { text: x ? t(x) : "" }))));
    for (const task of r.tasks) {
      const who = el("input", { size: 10, placeholder: t("agent_id"), value: task.assignee || "" });
      tb.append(el("tr", { "data-task": task.id },
        el("td", { text: task.ticket }), el("td", { text: task.reason }),
        el("td", { class: task.overdue ? "pill bad" : "", text: clock(task.deadline) }),
        el("td", {}, who, el("button", { class: "assign", onclick: async () => {
          try { await k.request("callback.assign", { task: task.id, agent: who.value.trim() }); loadCallbacks(); }
          catch (e) { notice(e.message || e.code); }
        }, text: t("assign") })),
        el("td", {}, el("button", { onclick: async () => {
          try { await k.request("callback.done", { task: task.id }); loadCallbacks(); }
          catch (e) { notice(e.message || e.code); }
        }, text: t("done") }))));
    }
    if (!r.tasks.length) tb.append(el("tr", {}, el("td", { class: "muted", text: t("none") })));
  } catch (e) { tb.replaceChildren(el("tr", {}, el("td", { class: "muted", text: e.message || e.code }))); }
}

async function loadQA() {
  const tb = $("qa");
  try {
    const r = await k.request("qa.list", { day: dayOf(k.now() - 86400000), limit: 50 });
    tb.replaceChildren(el("tr", {}, ...["ticket", "agent", "score", ""].map((x) => el("th", { text: x ? t(x) : "" }))),
      ...r.convs.map((c) => el("tr", {}, el("td", { text: c.ticket }), el("td", { text: c.agent }),
        el("td", { text: c.review ? c.review.score : "–" }),
        el("td", {}, el("button", { onclick: () => join(c.conv), text: t("join") })))));
    if (!r.convs.length) tb.append(el("tr", {}, el("td", { class: "muted", text: t("none") })));
  } catch (e) {
    tb.replaceChildren(el("tr", {}, el("td", { class: "muted", text: e.code === "not_found" ? t("no_sample") : (e.message || e.code) })));
  }
}

k.on("_conn", (s) => {
  $("conn").className = "conn " + s.state;
  $("conn").textContent = t(s.state === "offline" ? "offline_conn" : s.state);
  if (s.state === "refused") notice(s.message || "");
});
k.on("welcome", (w) => {
  $("who").textContent = w.name;
  subscribe();
  loadAlerts();
  loadStats();
  loadCallbacks();
  loadQA();
  if (watch) watch.log.resume();
});
k.on("monitor", (p) => {
  if (p.kind === "agent") {
    agents.set(p.agent, p);
    renderAgents();
  } else if (p.kind === "queue") {
    statsSoon();
    const g = groups.get(p.group) || { group: p.group, transfers: true };
    g.waiting = p.waiting;
    groups.set(p.group, g);
    renderGroups();
  } else if (p.kind === "break") {
    if (p.state === "pending") breaks.set(p.agent, p); else breaks.delete(p.agent);
    renderAgents();
  }
});
k.on("alert", (a) => {
  addAlert(a);
  if (a.kind === "customer_left") loadCallbacks();
});
k.on("msg", (m) => { if (watch && m.conv === watch.conv) watch.log.apply(m); });
k.on("typing", (p) => {
  if (watch && p.conv === watch.conv) {
    watch.typingUntil = Date.now() + 4000;
    watch.typingName = p.from?.name || p.from?.id;
    renderWatch();
    setTimeout(renderWatch, 4100);
  }
});
k.on("conv.state", (p) => {
  if (watch && p.conv === watch.conv) {
    Object.assign(watch.info, { state: p.state }, p.agent ? { agent: p.agent } : {},
      p.state === "waiting" ? { agent: "" } : {});
    renderWatch();
  }
});
k.on("resync", (p) => { if (watch && (!p.conv || p.conv === watch.conv)) watch.log.fill(); });

setup();
if (!cfg.token) notice(t("token_needed"));
else k.start();
setInterval(() => { if (k.online()) { loadStats(); loadCallbacks(); } }, 60000);
window.kefu = k;
