// The agent workbench: status and breaks, assigned conversations, chatting, transfer, close,
// the record. Talks to the gateway over the public protocol only (docs/protocol.md).
import { Kefu, ConvLog, pageSettings, el, clock, dur, chime, idCmp } from "./kefu.js";
import { t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const cfg = pageSettings();
const k = new Kefu(cfg);
const convs = new Map();   // conv -> {info, log, unread, readBy, typingUntil, warn, replied, closed}
let sel = null;
let titleFlash = 0;

/* First-response SLA per channel, shown as a countdown from the assignment. The worker does not
 * publish its sla_first_response_ms to clients, so the page takes it from the fragment
 * (sla=web=15000,app=20000,*=30000), defaulting to the worker's defaults; the worker's
 * sla.warning push is what marks a conversation overdue. */
const SLA = { web: 15000, app: 20000, "*": 30000 };
for (const kv of (cfg.params.get("sla") || "").split(",").filter(Boolean)) {
  const [c, v] = kv.split("=");
  if (c && +v > 0) SLA[c] = +v;
}
const slaOf = (ch) => SLA[ch] || SLA["*"];

/* Canned replies: standard greeting and closing lines. The worker's canned_replies, listed by
 * canned.list once signed in; without them, the list saved in localStorage under kefu.canned
 * (one line per reply), else these defaults. {customer} is the customer's name, {agent} the
 * agent's. */
function cannedLines() {
  const saved = localStorage.getItem("kefu.canned");
  if (saved) return saved.split("\n").filter(Boolean).map((l) => ({ label: l, text: l }));
  return [t("greet1"), t("greet2"), t("close1"), t("close2")].map((l) => ({ label: l, text: l }));
}

function fillCanned(replies) {
  $("canned").replaceChildren(el("option", { value: "", text: t("canned") }));
  for (const r of replies) {
    const label = r.label && r.label !== r.text ? `${r.label}: ${r.text}` : r.text;
    $("canned").append(el("option", { value: r.text, text: label }));
  }
}
let agentName = "";

function setup() {
  document.documentElement.lang = navigator.language || "en";
  $("brand").textContent = t("brand");
  document.title = t("brand");
  $("list-title").textContent = t("conversations");
  $("pick").textContent = t("pick");
  $("status-label").textContent = t("status") + " ";
  for (const s of ["", "available", "away", "offline"])
    $("status").append(el("option", { value: s, text: s ? t(s) : t("unknown") }));
  for (const r of ["meal", "restroom", "other", "handover"])
    $("reason").append(el("option", { value: r, text: t(r) }));
  $("status").onchange = () => {
    $("reason").hidden = $("status").value !== "away";
    setStatus();
  };
  $("reason").onchange = setStatus;
  $("send").textContent = t("send");
  $("btn-record").textContent = t("record");
  $("btn-transfer").textContent = t("transfer");
  $("btn-close").textContent = t("close");
  $("back").onclick = () => { document.body.className = "show-list"; sel = null; renderList(); };
  fillCanned(cannedLines());
  $("canned").onchange = () => {
    const c = convs.get(sel);
    const name = c?.info.customer_name || "";
    $("text").value = $("canned").value.replaceAll("{customer}", name)
      .replaceAll("{agent}", agentName);
    $("canned").value = "";
    $("text").focus();
  };
  $("composer").onsubmit = (e) => { e.preventDefault(); send(); };
  $("text").onkeydown = (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  };
  $("text").oninput = typing;
  $("btn-transfer").onclick = transferPanel;
  $("btn-close").onclick = closePanel;
  $("btn-record").onclick = recordPanel;
  document.addEventListener("visibilitychange", () => { if (!document.hidden) { markRead(); titleReset(); } });
  window.addEventListener("focus", titleReset);
  setInterval(tick, 1000);
}

function notice(text) {
  $("notice").textContent = text;
  $("notice").hidden = !text;
}

async function setStatus() {
  const status = $("status").value;
  if (!status) return;
  const f = { status };
  if (status === "away") f.reason = $("reason").value;
  try {
    const r = await k.request("agent.status", f);
    showState(r);
    notice(r.message || "");
  } catch (e) {
    notice(e.message || e.code);
  }
}

function showState(s) {
  if (s.status) $("status").value = s.status;
  $("reason").hidden = s.status !== "away";
  if (s.status === "away" && s.reason) $("reason").value = s.reason;
  $("pending").hidden = !s.pending;
  $("pending").textContent = s.pending ? t("pending", { reason: t(s.pending) }) : "";
}

function entry(conv, info) {
  let c = convs.get(conv);
  if (!c) {
    c = { info: {}, unread: 0, readBy: "", typingUntil: 0, warn: null, replied: false, closed: null };
    c.log = new ConvLog(k, conv, () => { if (sel === conv) renderConv(); renderList(); });
    convs.set(conv, c);
  }
  Object.assign(c.info, info);
  return c;
}

async function refresh() {
  try {
    const r = await k.request("conv.list");
    const open = new Set(r.convs.map((x) => x.conv));
    for (const x of r.convs) {
      const c = entry(x.conv, x);
      if (x.last_id !== c.log.last) c.log.resume();
    }
    for (const [id, c] of convs) if (!open.has(id) && !c.closed) convs.delete(id);
    if (sel && !convs.has(sel)) sel = null;
    renderList();
    if (sel) renderConv();
  } catch (e) { /* reconnecting */ }
}

function renderList() {
  const ul = $("convs");
  ul.replaceChildren();
  const now = k.now();
  for (const [id, c] of convs) {
    const i = c.info;
    const sla = slaPill(c, now);
    ul.append(el("li", { "data-conv": id, class: id === sel ? "sel" : "", onclick: () => select(id) },
      el("div", { class: "row" },
        el("span", { class: "name", text: i.customer_name || i.customer || "" }),
        i.level ? el("span", { class: "pill", text: t("level", { level: i.level }) }) : null,
        el("span", { class: "grow" }),
        c.unread ? el("span", { class: "badge unread", text: c.unread }) : null),
      el("div", { class: "row muted" },
        el("span", { class: "ticket", text: i.ticket || "" }),
        el("span", { class: "pill", text: i.channel || "" }),
        i.priority && i.priority !== "medium" ? el("span", { class: "pill warn", text: i.priority }) : null),
      el("div", { class: "row slarow" }, sla)));
  }
  $("empty").textContent = convs.size ? "" : t("none");
  const unread = [...convs.values()].reduce((n, c) => n + c.unread, 0);
  if (!titleFlash) document.title = (unread ? `(${unread}) ` : "") + t("brand");
}

// The row's last line: the first-response countdown, overdue, or closed (with a dismiss).
function slaPill(c, now) {
  const i = c.info;
  if (c.closed) {
    const id = c.log.conv;
    return [el("span", { class: "pill", text: t("closed", { resolution: t(c.closed) }) }), " ",
      el("button", { class: "dismiss", title: t("dismiss"), onclick: (e) => {
        e.stopPropagation();
        convs.delete(id);
        if (sel === id) { sel = null; $("conv").hidden = true; document.body.className = "show-list"; }
        renderList();
      }, text: "×" })];
  }
  if (c.warn) return el("span", { class: "pill bad sla", text: t("sla_over", { t: dur(now - c.warn.deadline) }) });
  if (!c.replied && i.assigned_at) {
    const left = i.assigned_at + slaOf(i.channel) - now;
    return el("span", { class: "pill sla " + (left < 5000 ? "warn" : "ok"), text: t("sla", { t: dur(left) }) });
  }
  return null;
}

function select(id) {
  sel = id;
  document.body.className = "show-conv";
  $("conv").hidden = false;
  $("panel").hidden = true;
  const c = convs.get(id);
  c.unread = 0;
  renderConv(true);
  renderList();
  markRead();
  $("text").focus();
}

function renderConv(scroll) {
  const c = convs.get(sel);
  if (!c) { $("conv").hidden = true; return; }
  const i = c.info;
  $("conv-title").replaceChildren(el("b", { text: i.customer_name || i.customer || "" }), " ",
    el("span", { class: "muted", text: `${i.ticket || ""} · ${i.channel || ""}${i.topic ? " · " + i.topic : ""}` }),
    i.transferred_from ? el("div", { class: "muted", text: t("transferred_from",
      { from: i.transferred_from, note: i.note ? ": " + i.note : "" }) }) : "");
  const ol = $("msgs");
  const atEnd = ol.scrollTop + ol.clientHeight >= ol.scrollHeight - 30;
  ol.replaceChildren();
  const me = k.me?.user || c.me;
  const first = c.log.msgs[0];
  if (first && (first.prev || c.earlier)) ol.append(el("li", {}, el("button", { onclick: () => earlier(c), text: t("earlier") })));
  for (const m of c.log.msgs) {
    const mine = m.from && m.from.id === me;
    const read = mine && c.readBy && idCmp(m.id, c.readBy) <= 0;
    ol.append(el("li", { "data-id": m.id, class: (mine ? "mine" : "") + (m.from?.role === "bot" ? " bot" : "") },
      el("div", { class: "meta", text: `${m.from?.name || m.from?.id || ""} · ${clock(m.ts)}` }),
      el("div", { class: "b", text: m.text }),
      read ? el("div", { class: "meta read", text: t("read") + " ✓" }) : null));
  }
  for (const o of c.log.outbox) {
    ol.append(el("li", { class: "mine out " + o.state, onclick: o.state === "failed" ? () => c.log.push(o).catch(() => {}) : null },
      el("div", { class: "b", text: o.text }),
      el("div", { class: "meta", text: o.state === "failed" ? (o.error || t("failed")) : t("sending") })));
  }
  $("typing").textContent = c.typingUntil > Date.now() ? t("typing", { name: c.typingName || "" }) : "";
  $("composer").hidden = !!c.closed;
  for (const b of ["btn-transfer", "btn-close"]) $(b).disabled = !!c.closed;
  if (scroll || atEnd) ol.scrollTop = ol.scrollHeight;
}

/* The assignment's copy of the messages carries no prev (whatever protocol.md says), so
 * whether older messages exist is asked: the conversation's first message is the first held? */
async function probeEarlier(c) {
  const first = c.log.msgs[0];
  if (!first) return;
  try {
    const r = await k.request("history", { conv: c.log.conv, limit: 1 });
    c.earlier = !!(r.msgs[0] && r.msgs[0].id !== first.id && c.log.msgs[0] === first);
    if (sel === c.log.conv) renderConv();
  } catch (e) { /* offline: the button stays hidden */ }
}

// history has no "before": earlier pages are read from the start up to the oldest held.
async function earlier(c) {
  const stop = c.log.msgs[0].id;
  const got = [];
  let after = "";
  try {
    for (;;) {
      const q = { conv: c.log.conv, limit: 100 };
      if (after) q.after = after;
      const r = await k.request("history", q);
      let done = !r.more;
      for (const m of r.msgs) {
        if (idCmp(m.id, stop) >= 0) { done = true; break; }
        got.push(m);
        after = m.id;
      }
      if (done || !r.msgs.length) break;
    }
  } catch (e) { return; }
  for (const m of got) c.log.ids.add(m.id);
  c.log.msgs = got.concat(c.log.msgs);
  c.earlier = false;
  renderConv();
}

function send() {
  const text = $("text").value.trim();
  const c = convs.get(sel);
  if (!text || !c || c.closed) return;
  $("text").value = "";
  c.replied = true;
  c.log.send(text);
}

let lastTyping = 0;
function typing() {
  if (!sel || Date.now() - lastTyping < 2500 || !$("text").value) return;
  lastTyping = Date.now();
  k.request("typing", { conv: sel }).catch(() => {});
}

// Tells the customer what the agent has read: the newest message from someone else.
function markRead() {
  const c = convs.get(sel);
  if (!c || document.hidden) return;
  const me = k.me?.user;
  const theirs = c.log.msgs.filter((m) => m.from && m.from.id !== me);
  const last = theirs.length ? theirs[theirs.length - 1].id : "";
  if (last && last !== c.sentRead) {
    c.sentRead = last;
    k.request("read", { conv: sel, id: last }).catch(() => { c.sentRead = ""; });
  }
}

function panel(...kids) {
  const p = $("panel");
  p.replaceChildren(...kids);
  p.hidden = false;
}

function transferPanel() {
  const conv = sel;
  const kind = el("select", { id: "tr-kind" }, el("option", { value: "to_agent", text: t("to_agent") }),
    el("option", { value: "to_group", text: t("to_group") }));
  const target = el("input", { id: "tr-target", placeholder: t("target") });
  const note = el("input", { id: "tr-note", placeholder: t("note") });
  const err = el("div", { class: "err", id: "tr-error" });
  panel(el("form", { onsubmit: async (e) => {
    e.preventDefault();
    err.textContent = "";
    try {
      const f = { conv, [kind.value]: target.value.trim() };
      if (note.value.trim()) f.note = note.value.trim();
      const r = await k.request("conv.transfer", f);
      notice(t("transferred_away", { ticket: convs.get(conv)?.info.ticket || r.conv, agent: r.agent || r.group }));
      convs.delete(conv);
      sel = null;
      document.body.className = "show-list";
      $("conv").hidden = true;
      renderList();
    } catch (e2) {
      err.textContent = e2.message || e2.code;   // the supervisor's wording when forbidden
    }
  } }, kind, " ", target, " ", note, " ", el("button", { class: "primary", id: "tr-go", text: t("do_transfer") }), " ",
  el("button", { type: "button", onclick: () => { $("panel").hidden = true; }, text: t("cancel") }), err));
  target.focus();
}

function closePanel() {
  const conv = sel;
  const res = el("select", { id: "cl-resolution" }, ...["resolved", "unresolved"].map((v) => el("option", { value: v, text: t(v) })));
  const cat = el("select", { id: "cl-category" }, el("option", { value: "", text: t("cat_none") }),
    ...["consultation", "complaint", "suggestion", "fault"].map((v) => el("option", { value: v, text: t(v) })));
  const err = el("div", { class: "err" });
  panel(el("form", { onsubmit: async (e) => {
    e.preventDefault();
    try {
      const f = { conv, resolution: res.value };
      if (cat.value) f.category = cat.value;
      await k.request("conv.close", f);
      const c = convs.get(conv);
      if (c) c.closed = res.value;
      $("panel").hidden = true;
      renderConv();
      renderList();
    } catch (e2) { err.textContent = e2.message || e2.code; }
  } }, el("label", {}, t("resolution") + " ", res), el("label", {}, t("category") + " ", cat),
  el("button", { class: "primary", id: "cl-go", text: t("do_close") }), " ",
  el("button", { type: "button", onclick: () => { $("panel").hidden = true; }, text: t("cancel") }), err));
}

async function recordPanel() {
  try {
    const r = await k.request("conv.record", { conv: sel });
    const skip = new Set(["id", "ev", "by", "ts"]);
    panel(el("table", { id: "record" }, el("tr", {}, el("td", { text: t("when") }), el("td", { text: t("ev") }),
      el("td", { text: t("by") }), el("td", { text: t("details") })),
    ...r.events.map((e) => el("tr", {}, el("td", { text: clock(e.ts) }), el("td", { text: e.ev }),
      el("td", { text: e.by || "" }),
      el("td", { text: Object.entries(e).filter(([kk]) => !skip.has(kk)).map(([kk, v]) => `${kk}=${v}`).join(" ") })))),
    el("button", { type: "button", onclick: () => { $("panel").hidden = true; }, text: t("cancel") }));
  } catch (e) { notice(e.message || e.code); }
}

function titleReset() {
  if (titleFlash) { clearInterval(titleFlash); titleFlash = 0; }
  renderList();
}

// A new assignment: a chime, and the tab's title blinks until the agent looks.
function announce(text) {
  chime();
  if (titleFlash) clearInterval(titleFlash);
  let on = false;
  titleFlash = setInterval(() => { on = !on; document.title = on ? "🔔 " + text : t("brand"); }, 1000);
  document.title = "🔔 " + text;
  if (document.hasFocus() && !document.hidden) setTimeout(titleReset, 4000);
}

/* Every second: the countdowns only. Redrawing whole rows would swallow a click whose press
 * and release straddle the redraw. */
function tick() {
  const now = k.now();
  for (const li of $("convs").children) {
    const c = convs.get(li.dataset.conv);
    const row = li.querySelector(".slarow");
    if (c && row && !c.closed) row.replaceChildren(...[slaPill(c, now)].flat().filter(Boolean));
  }
  const c = convs.get(sel);
  if (c && c.typingUntil && c.typingUntil < Date.now()) { c.typingUntil = 0; renderConv(); }
}

k.on("_conn", (s) => {
  const e = $("conn");
  e.className = "conn " + s.state;
  if (s.url) e.dataset.url = s.url; // the gateway tried or in use (for operators and tests)
  e.textContent = t(s.state === "offline" ? "offline_conn" : s.state);
  if (s.state === "refused") notice(s.message || "");
});
k.on("welcome", (w) => {
  $("who").textContent = w.name;
  $("who").title = w.user;
  agentName = w.name || "";
  k.request("canned.list").then((r) => {
    if (r.replies && r.replies.length) fillCanned(r.replies);
  }).catch(() => {});
  refresh();
});
k.on("conv.assigned", (p) => {
  const c = entry(p.conv, p);
  c.closed = null; c.warn = null; c.replied = false;
  c.info.transferred_from = p.transferred_from || "";
  c.info.note = p.note || "";
  c.log.msgs = []; c.log.ids.clear(); c.log.last = "";
  for (const m of p.msgs || []) c.log.add(m);
  c.log.fill();  // anything after the push's copy
  probeEarlier(c);
  if (sel !== p.conv) c.unread = (p.msgs || []).length;
  announce(t("new_conv", { ticket: p.ticket || "" }));
  renderList();
});
k.on("msg", (m) => {
  const c = convs.get(m.conv);
  if (!c) { refresh(); return; }
  c.log.apply(m);
  if (m.from && m.from.id === k.me?.user) c.replied = true;
  else if (m.from) c.typingUntil = 0;
  if (sel !== m.conv || document.hidden) c.unread++;
  else markRead();
  renderList();
  if (sel === m.conv) renderConv();
});
k.on("typing", (p) => {
  const c = convs.get(p.conv);
  if (!c) return;
  c.typingUntil = Date.now() + 4000;
  c.typingName = p.from?.name || p.from?.id;
  if (sel === p.conv) renderConv();
});
k.on("read", (p) => {
  const c = convs.get(p.conv);
  if (!c || (p.from && p.from.role !== "customer")) return;
  if (!c.readBy || idCmp(p.id, c.readBy) > 0) c.readBy = p.id;
  if (sel === p.conv) renderConv();
});
k.on("conv.state", (p) => {
  const c = convs.get(p.conv);
  if (!c) return;
  if (p.state === "closed") c.closed = p.resolution || "closed";
  else if ((p.state === "assigned" && p.agent !== k.me?.user) || p.state === "waiting") convs.delete(p.conv);
  if (sel === p.conv && !convs.has(p.conv)) { sel = null; $("conv").hidden = true; document.body.className = "show-list"; }
  renderList();
  if (sel === p.conv) renderConv();
});
k.on("conv.revoked", (p) => {
  convs.delete(p.conv);
  if (sel === p.conv) { sel = null; $("conv").hidden = true; document.body.className = "show-list"; }
  renderList();
});
k.on("sla.warning", (p) => {
  const c = convs.get(p.conv);
  if (c) { c.warn = p; renderList(); }
});
k.on("resync", (p) => {
  if (p.conv && convs.has(p.conv)) convs.get(p.conv).log.fill();
  refresh();
});
k.on("agent.state", showState);
k.on("break.decision", (p) => {
  notice(t(p.decision === "approved" ? "break_approved" : "break_denied",
    { reason: t(p.reason), note: p.note ? ": " + p.note : "" }));
});
k.on("callback.assigned", (p) => notice(t("callback", { ticket: p.task?.ticket || "" })));
k.on("conv.rated", (p) => notice(t("rated", { ticket: convs.get(p.conv)?.info.ticket || p.conv, stars: p.stars })));

setup();
if (!cfg.token) notice(t("token_needed"));
else k.start();
window.kefu = k;  // for the browser tests and the curious
