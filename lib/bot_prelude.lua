-- The kefu bot rule API (bot, vars, templates, calendar, faq, rule, on, the conversation object)
-- and the dispatcher the engine calls for every event. Compiled into the engine and run once
-- per rule set, before the rule files, which see only the sandbox environment E.
local K, E = ...

local type, pairs, ipairs, error, tostring, select, setmetatable, rawget, pcall =
  type, pairs, ipairs, error, tostring, select, setmetatable, rawget, pcall
local sfind, sgsub, smatch, sformat = string.find, string.gsub, string.match, string.format
local tconcat, tsort, tunpack = table.concat, table.sort, table.unpack
local ulen = utf8.len

local EVENTS = {"opened", "message", "no_agent", "queue_wait", "off_hours"}
local chains = {}
for _, e in ipairs(EVENTS) do chains[e] = {} end
local settings = {name = "bot", max_replies = 5}
local V, T = {}, {}     -- vars, templates
local owners = 0        -- keyword owners (rules, faq tables), numbered from 1
local waits = {}        -- queue_wait thresholds (seconds), as a set
local loading = true
local ANY, ALL, NONE = 0, 1, 2

local PRIORITIES = {high = true, medium = true, low = true}
local CATEGORIES = {consultation = true, complaint = true, suggestion = true, fault = true}
local RESOLUTIONS = {resolved = true, unresolved = true}

local function fail(at, msg) error(at .. ": " .. msg, 0) end

local function declaring(at, what)
  if not loading then fail(at, what .. " can only be declared while the rule files load") end
end

-- The start of every table declaration (bot, vars, templates, ...): where the rule file called
-- it, refused outside loading and when s is no table. Returns that place for later messages.
local function declaration(what, s, expects)
  local at = K.where(3)
  declaring(at, what)
  if type(s) ~= "table" then fail(at, what .. " expects " .. expects) end
  return at
end

local function events_list() return tconcat(EVENTS, ", ") end

local function set(list)
  local t = {}
  for _, k in ipairs(list) do t[k] = true end
  return t
end

local ACTION_FIELDS = {"reply", "say", "priority", "category", "group", "tags", "sensitive",
  "handoff", "finish", "run", "continue", "name"}
local COND_FIELDS = {"channel", "hours", "pattern", "when"}
local RULE_FIELDS = set{"on", "keywords", "all", "none", tunpack(ACTION_FIELDS)}
for _, k in ipairs(COND_FIELDS) do RULE_FIELDS[k] = true end
local ENTRY_FIELDS = set{"q", "keywords", "all", "none", "a", tunpack(ACTION_FIELDS)}
local FAQ_FIELDS = set{"name", "continue", "on", tunpack(COND_FIELDS)}
local ON_FIELDS = set{"after", "continue", "name", tunpack(COND_FIELDS)}

-- A misspelt field would silently change what a rule does (`keyword =` makes it match every
-- message): every table field must be known. Array entries (faq) are skipped.
local function known_fields(at, what, s, known, hint)
  for k in pairs(s) do
    if type(k) ~= "number" and not known[k] then
      fail(at, what .. ": unknown field '" .. tostring(k) .. "'" .. (hint and (" (" .. hint .. ")") or ""))
    end
  end
end

-- Adds the keywords of one list of one entry to the engine's matcher; returns how many.
local function keywords(at, owner, entry, list, kws, what)
  if kws == nil then return 0 end
  if type(kws) == "string" then kws = {kws} end
  if type(kws) ~= "table" then fail(at, what .. " must be a string or a list of strings") end
  local n = 0
  for _, k in ipairs(kws) do
    if type(k) ~= "string" then fail(at, what .. " must hold only strings") end
    local ok, err = K.keyword(owner, entry, list, k)
    if not ok then fail(at, what .. " '" .. k .. "': " .. err) end
    n = n + 1
  end
  return n
end

local function check_group(g)
  return type(g) == "string" and #g >= 1 and #g <= 32 and not sfind(g, "[^a-z0-9_-]")
end

local function check_tag(t)
  return type(t) == "string" and #t >= 1 and #t <= 64 and not sfind(t, "[%c,]") and ulen(t) ~= nil
end

-- The action fields shared by rule{}, faq entries and on(): checked once at load time.
local function actions_of(at, s, into)
  local a = into or {}
  if s.reply ~= nil then
    if type(s.reply) ~= "string" then fail(at, "reply must be a text") end
    a.reply = s.reply
  end
  if s.a ~= nil then
    if type(s.a) ~= "string" then fail(at, "a (the answer) must be a text") end
    a.reply = s.a
  end
  if s.say ~= nil then
    if type(s.say) ~= "string" then fail(at, "say must name a template") end
    a.say = s.say
  end
  if s.priority ~= nil then
    if not PRIORITIES[s.priority] then fail(at, "priority must be high, medium or low") end
    a.priority = s.priority
  end
  if s.category ~= nil then
    if not CATEGORIES[s.category] then
      fail(at, "category must be consultation, complaint, suggestion or fault")
    end
    a.category = s.category
  end
  if s.group ~= nil then
    if not check_group(s.group) then fail(at, "group must match [a-z0-9_-]{1,32}") end
    a.group = s.group
  end
  if s.tags ~= nil then
    local t = type(s.tags) == "string" and {s.tags} or s.tags
    if type(t) ~= "table" then fail(at, "tags must be a text or a list of texts") end
    for _, x in ipairs(t) do
      if not check_tag(x) then fail(at, "a tag must be 1..64 bytes of text without commas") end
    end
    a.tags = t
  end
  if s.sensitive ~= nil then
    if s.sensitive == true then a.sensitive = "flagged by a rule"
    elseif type(s.sensitive) == "string" and #s.sensitive > 0 then a.sensitive = s.sensitive
    else fail(at, "sensitive must be true or a reason") end
  end
  if s.handoff ~= nil and s.handoff ~= false then
    local h = s.handoff
    if h == true then a.handoff = {}
    elseif type(h) == "string" then a.handoff = {reason = h}
    elseif type(h) == "table" then
      if h.group ~= nil and not check_group(h.group) then fail(at, "handoff.group must match [a-z0-9_-]{1,32}") end
      a.handoff = {reason = h.reason, group = h.group}
    else fail(at, "handoff must be true, a reason or {reason=..., group=...}") end
  end
  if s.finish ~= nil and s.finish ~= false then
    local f = s.finish == true and "resolved" or s.finish
    if not RESOLUTIONS[f] then fail(at, "finish must be true, 'resolved' or 'unresolved'") end
    a.finish = f
  end
  if s.run ~= nil then
    if type(s.run) ~= "function" then fail(at, "run must be a function(c, text, ...)") end
    a.run = s.run
  end
  if s.continue ~= nil then a.continue = s.continue and true or false end
  return a
end

-- Conditions shared by rule{} and faq{}: channel, hours, pattern, when.
local function conditions_of(at, s, r)
  if s.channel ~= nil then
    local list = type(s.channel) == "string" and {s.channel} or s.channel
    if type(list) ~= "table" then fail(at, "channel must be a text or a list") end
    r.channels = {}
    for _, ch in ipairs(list) do r.channels[ch] = true end
  end
  if s.hours ~= nil then
    if s.hours ~= "open" and s.hours ~= "closed" then fail(at, "hours must be 'open' or 'closed'") end
    r.hours = s.hours
  end
  if s.pattern ~= nil then
    if type(s.pattern) ~= "string" then fail(at, "pattern must be a Lua pattern text") end
    local ok, err = pcall(sfind, "", s.pattern)
    if not ok then fail(at, "bad pattern: " .. tostring(err)) end
    r.pattern = s.pattern
  end
  if s.when ~= nil then
    if type(s.when) ~= "function" then fail(at, "when must be a function(c, text)") end
    r.when = s.when
  end
end

local function event_of(at, ev)
  ev = ev or "message"
  if not chains[ev] then fail(at, "unknown event '" .. tostring(ev) .. "' (" .. events_list() .. ")") end
  return ev
end

-- ---- declarations ----

function E.bot(s)
  local at = declaration("bot", s, "a table: bot { name = '...' }")
  if s.name ~= nil then
    if type(s.name) ~= "string" or #s.name == 0 or #s.name > 64 then fail(at, "bot name must be 1..64 bytes") end
    settings.name = s.name
  end
  if s.max_replies ~= nil then
    if math.type(s.max_replies) ~= "integer" or s.max_replies < 1 or s.max_replies > 20 then
      fail(at, "max_replies must be an integer 1..20")
    end
    settings.max_replies = s.max_replies
  end
end

function E.vars(s)
  local at = declaration("vars", s, "a table of names and values")
  for k, v in pairs(s) do
    if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
      fail(at, "vars: names must be texts and values texts or numbers")
    end
    V[k] = v
  end
end

function E.templates(s)
  local at = declaration("templates", s, "a table of names and texts")
  for k, v in pairs(s) do
    if type(k) ~= "string" or type(v) ~= "string" then fail(at, "templates: names and texts must be texts") end
    T[k] = v
  end
end

function E.calendar(s)
  local at = declaration("calendar", s, "a table")
  local ok, err = K.calendar(s)
  if not ok then fail(at, "calendar: " .. err) end
end

function E.rule(s)
  local at = declaration("rule", s, "a table: rule { keywords = {...}, reply = '...' }")
  known_fields(at, "rule", s, RULE_FIELDS, s.q and "a rule matches keywords = {...} and sends reply = '...'"
    or s.a and "a rule sends reply = '...'" or nil)
  local ev = event_of(at, s.on)
  owners = owners + 1
  local r = {kind = "rule", id = owners, at = at, name = s.name or at}
  local n = keywords(at, r.id, 1, ANY, s.keywords, "keywords") + keywords(at, r.id, 1, ALL, s.all, "all")
    + keywords(at, r.id, 1, NONE, s.none, "none")
  r.kw = n > 0
  if ev ~= "message" and r.kw then fail(at, "keywords only apply to message rules") end
  conditions_of(at, s, r)
  actions_of(at, s, r)
  chains[ev][#chains[ev] + 1] = r
  return r
end

function E.faq(s)
  local at = declaration("faq", s, "a list: faq { {q = {...}, a = '...'}, ... }")
  known_fields(at, "faq", s, FAQ_FIELDS, "entries go in the list: faq { {q = {...}, a = '...'}, ... }")
  if s.on ~= nil and s.on ~= "message" then fail(at, "faq tables answer messages (on = 'message')") end
  owners = owners + 1
  local f = {kind = "faq", id = owners, at = at, name = s.name or at, kw = true, entries = {}}
  conditions_of(at, s, f)
  if s.continue ~= nil then f.continue = s.continue and true or false end
  for i, e in ipairs(s) do
    local eat = at .. " (entry " .. i .. ")"
    if type(e) ~= "table" then fail(eat, "an faq entry is a table {q = {...}, a = '...'}") end
    known_fields(eat, "faq entry", e, ENTRY_FIELDS)
    local n = keywords(eat, f.id, i, ANY, e.q or e.keywords, "q") + keywords(eat, f.id, i, ALL, e.all, "all")
    keywords(eat, f.id, i, NONE, e.none, "none")
    if n == 0 then fail(eat, "an faq entry needs q (keywords)") end
    local a = actions_of(eat, e)
    if not (a.reply or a.say or a.run or a.handoff or a.finish) then
      fail(eat, "an faq entry needs a (the answer), say, run, handoff or finish")
    end
    a.name = e.name or (f.name .. "#" .. i)
    f.entries[i] = a
  end
  if #f.entries == 0 then fail(at, "faq without entries") end
  chains.message[#chains.message + 1] = f
  return f
end

function E.on(ev, a, b)
  local at = K.where(2)
  declaring(at, "on")
  ev = event_of(at, ev)
  local opts, h = {}, a
  if type(a) == "table" then opts, h = a, b end
  known_fields(at, "on", opts, ON_FIELDS)
  local r = {kind = "on", at = at, name = opts.name or at}
  if type(h) == "function" then r.run = h
  elseif type(h) == "string" then r.reply = h
  else fail(at, "on(event, [options,] handler): the handler is a function(c, ...) or a reply text") end
  conditions_of(at, opts, r)
  actions_of(at, {continue = opts.continue}, r)
  if ev == "queue_wait" then
    local n = opts.after
    if math.type(n) ~= "integer" or n < 1 or n > 86400 then
      fail(at, "on('queue_wait', {after = seconds}, ...) needs after = 1..86400")
    end
    r.after = n
    waits[n] = true
  end
  chains[ev][#chains[ev] + 1] = r
  return r
end

-- ---- the conversation object ----

local Conv = {}
Conv.__index = Conv

local function act(c, kind, key, value)
  local a = c._acts
  local n = #a
  a[n + 1], a[n + 2], a[n + 3] = kind, key or false, value or false
end

local function fmt_next_open(c)
  local t = rawget(c, "next_open")
  if not t then return nil end
  if K.strftime("%Y-%m-%d", t) == K.strftime("%Y-%m-%d", c.now) then return K.strftime("%H:%M", t) end
  return K.strftime("%Y-%m-%d %H:%M", t)
end

-- Values computed for templates on demand.
local computed = {
  bot_name = function() return settings.name end,
  now_time = function(c) return K.strftime("%H:%M", c.now) end,
  today = function(c) return K.strftime("%Y-%m-%d", c.now) end,
  next_open = fmt_next_open,
  next_open_time = function(c) local t = rawget(c, "next_open"); return t and K.strftime("%H:%M", t) end,
  next_open_date = function(c) local t = rawget(c, "next_open"); return t and K.strftime("%Y-%m-%d", t) end,
  tags = function(c) return tconcat(c.tags, ",") end,
}

local function render(c, text, vars, lvl)
  if type(text) ~= "string" then error("a reply or template must be a text", lvl) end
  if not sfind(text, "{", 1, true) then return text end
  text = sgsub(text, "{{", "\1")
  text = sgsub(text, "{([%w_]+)}", function(k)
    local v
    if vars ~= nil then v = vars[k] end
    if v == nil and computed[k] then v = computed[k](c) end
    if v == nil then v = rawget(c, k) end
    if v == nil then v = V[k] end
    if v == nil or type(v) == "table" or type(v) == "boolean" then return nil end
    return tostring(v)
  end)
  return (sgsub(text, "\1", "{"))
end

local function do_reply(c, text, vars, lvl)
  local s = render(c, text, vars, lvl + 1)
  if s == "" then return end
  if #s > 4096 then error("a reply is longer than 4096 bytes", lvl) end
  if not ulen(s) then error("a reply is not valid UTF-8", lvl) end
  c._replies = c._replies + 1
  if c._replies > settings.max_replies then
    error("more than " .. settings.max_replies .. " replies in one event (bot { max_replies = ... })", lvl)
  end
  act(c, "reply", nil, s)
  c._did = true
end

function Conv:reply(text, vars) do_reply(self, text, vars, 3) end

function Conv:say(name, vars)
  local t = T[name]
  if not t then error("no template named '" .. tostring(name) .. "'", 2) end
  do_reply(self, t, vars, 3)
end

function Conv:render(text, vars)
  if T[text] then text = T[text] end
  return render(self, text, vars, 3)
end

function Conv:set_priority(p)
  if not PRIORITIES[p] then error("priority must be high, medium or low", 2) end
  self.priority = p
  act(self, "set", "priority", p)
end

function Conv:set_category(x)
  if not CATEGORIES[x] then error("category must be consultation, complaint, suggestion or fault", 2) end
  self.category = x
  act(self, "set", "category", x)
end

function Conv:set_group(g)
  if not check_group(g) then error("group must match [a-z0-9_-]{1,32}", 2) end
  self.group = g
  act(self, "set", "group", g)
end

function Conv:tag(...)
  for i = 1, select("#", ...) do
    local t = select(i, ...)
    if not check_tag(t) then error("a tag must be 1..64 bytes of text without commas", 2) end
    local have = false
    for _, x in ipairs(self.tags) do if x == t then have = true end end
    if not have then
      self.tags[#self.tags + 1] = t
      act(self, "tag", nil, t)
    end
  end
end

function Conv:flag_sensitive(reason)
  if reason == nil then reason = "flagged by a rule" end
  if type(reason) ~= "string" or #reason == 0 or #reason > 256 then
    error("flag_sensitive(reason): the reason is a text of 1..256 bytes", 2)
  end
  if not self.sensitive then
    self.sensitive = reason
    act(self, "sensitive", nil, reason)
  end
end

function Conv:handoff(h)
  local reason, group
  if type(h) == "string" then reason = h
  elseif type(h) == "table" then reason, group = h.reason, h.group
  elseif h ~= nil then error("handoff([reason] or {reason=..., group=...})", 2) end
  if reason ~= nil and (type(reason) ~= "string" or #reason > 256) then error("handoff reason must be a text", 2) end
  if group ~= nil then
    if not check_group(group) then error("group must match [a-z0-9_-]{1,32}", 2) end
    if group ~= self.group then self.group = group; act(self, "set", "group", group) end
  end
  if self._ended then return end
  self._ended = "handoff"
  self._did = true
  act(self, "handoff", reason or "bot handoff", nil)
end

function Conv:finish(resolution)
  resolution = resolution or "resolved"
  if not RESOLUTIONS[resolution] then error("finish([resolution]): resolved or unresolved", 2) end
  if self._ended then return end
  self._ended = "finish"
  self._did = true
  act(self, "finish", nil, resolution)
end

function Conv:stop() self._stop = true end

function Conv:is_open(group, t)
  return K.is_open(group or self.group, t or self.now)
end

-- ---- dispatch ----

-- Runs one rule / faq / handler; returns true when its conditions held.
local function run_item(c, r, text, hits)
  local entry = r
  if r.kw then
    local e = hits and hits[r.id]
    if e == nil then return false end
    if r.kind == "faq" then entry = r.entries[e] end
  end
  if r.channels and not r.channels[c.channel] then return false end
  if r.hours == "open" and c.off_hours then return false end
  if r.hours == "closed" and not c.off_hours then return false end
  local caps
  if r.pattern then
    caps = {sfind(text or "", r.pattern)}
    if caps[1] == nil then return false end
  end
  if r.when and not r.when(c, text) then return false end
  c.rule = entry.name or r.name
  if entry.group then c:set_group(entry.group) end
  if entry.priority then c:set_priority(entry.priority) end
  if entry.category then c:set_category(entry.category) end
  if entry.tags then c:tag(tunpack(entry.tags)) end
  if entry.sensitive then c:flag_sensitive(entry.sensitive) end
  if entry.say then c:say(entry.say) end
  if entry.reply then do_reply(c, entry.reply, nil, 2) end
  if entry.run then
    if caps then entry.run(c, text, select(3, tunpack(caps))) else entry.run(c, text) end
  end
  if entry.handoff then c:handoff(entry.handoff) end
  if entry.finish then c:finish(entry.finish) end
  return true
end

-- Built by P.finish: per event, the chain positions of the items without keywords; for the
-- message chain, the position of each keyword owner. Owner ids grow in declaration order, as
-- positions do, so the matched owners (ascending) merge with the keyword-less items in chain
-- order without looking at the rules that cannot match.
local uncond, pos_of = {}, {}

local function run_chain(c, ev, text, hits, hitlist, waited, from)
  local chain, un = chains[ev], uncond[ev]
  local fired = from
  local i, j, nh = 1, 1, hitlist and #hitlist or 0
  while not (c._ended or c._stop) do
    local pa, pb = un[i], nil
    while j <= nh and not pb do
      pb = pos_of[hitlist[j]]
      if not pb then j = j + 1 end
    end
    local p
    if pa and (not pb or pa < pb) then p, i = pa, i + 1
    elseif pb then p, j = pb, j + 1
    else break end
    local r = chain[p]
    if not r.after or (r.after <= waited and r.after > from) then
      local did0 = c._did
      c._did = false
      local matched = run_item(c, r, text, hits)
      local did = c._did
      c._did = did0 or did
      if r.after and matched and r.after > fired then fired = r.after end
      if matched and did and not r.continue then break end
    end
  end
  return fired
end

local P = {}

-- ev: event name; c: the conversation (fields filled by the engine); text: message or nil;
-- hits: {[owner id] = entry} from the matcher, hitlist: those owners ascending; sys: engine
-- bookkeeping kept in the state. Returns the flat action list {kind, key|false, value|false, ...}
-- and whether off_hours ran.
function P.dispatch(ev, c, text, hits, hitlist, sys)
  setmetatable(c, Conv)
  c._acts, c._replies, c._did, c._ended, c._stop = {}, 0, false, false, false
  local oh = false
  if ev == "opened" or ev == "message" then
    if c.off_hours then
      if not sys.oh then
        sys.oh = true
        oh = true
        run_chain(c, "off_hours", text, hits, nil, 0, 0)
        c._stop = false
      end
    else
      sys.oh = nil
    end
  end
  if not c._ended then
    if ev == "queue_wait" then
      sys.qw = run_chain(c, ev, text, hits, hitlist, c.waited or 0, sys.qw or 0)
    else
      run_chain(c, ev, text, hits, hitlist, 0, 0)
    end
  end
  return c._acts, oh
end

-- After the last rule file: freezes the declarations, reports what the engine needs.
function P.finish()
  loading = false
  for ev, chain in pairs(chains) do
    local un = {}
    for p, r in ipairs(chain) do
      if r.kw then pos_of[r.id] = p else un[#un + 1] = p end
    end
    uncond[ev] = un
  end
  local w = {}
  for n in pairs(waits) do w[#w + 1] = n end
  tsort(w)
  local handles = {}
  for _, e in ipairs(EVENTS) do handles[e] = #chains[e] > 0 end
  return settings.name, handles, w
end

P.Conv = Conv
return P
