-- Picks agents for the head of a group's queue and reserves their capacity: for each waiting
-- conversation in queue order, the available, connected agent of the group with the lowest
-- load (ties: longest since the last assignment, then id), never at or above its max_chats;
-- after relax_ms of waiting, the fallback group's agents too. A reservation adds the
-- conversation to the agent's load set; the caller commits it on the conversation's shard
-- (conv_assign.lua) and removes it again (agent_load.lua remove) when the commit loses.
-- KEYS[1] kefu:{staff}:config, or kefu:{staff:<domain>}:config of a staff domain
-- ARGV: group, fallback group ('' = none), relax_ms, now (ms), batch, default max_chats
--       batch: one line per conversation, "<conv>\t<waited ms>\t<agent to avoid or ''>"
-- Returns {"S", json {a: [[conv, state]...], monitors}}.
-- every key of the staff domain shares the prefix of its configuration copy (KEYS[1])
local P = string.sub(KEYS[1], 1, -7)
local now = tonumber(ARGV[4])
local relax = tonumber(ARGV[3]) or 0
local defmax = tonumber(ARGV[6]) or 5

local function split(s)
  local t = {}
  for x in string.gmatch(s or '', '[^,]+') do t[#t + 1] = x end
  return t
end

local cands = {}
local function candidates(g)
  if cands[g] then return cands[g] end
  local out = {}
  for _, m in ipairs(redis.call('SMEMBERS', P .. 'group:' .. g)) do
    local a = redis.call('HMGET', P .. 'agent:' .. m, 'status', 'max', 'last_assigned',
      'gone_since', 'name', 'groups', 'reason', 'since')
    if a[1] == 'available' and (not a[4] or a[4] == '0') then
      local max = tonumber(a[2] or '0') or 0
      if max <= 0 then max = defmax end
      local load = redis.call('SCARD', P .. 'load:' .. m)
      if load < max then
        out[#out + 1] = {id = m, load = load, max = max, last = tonumber(a[3] or '0') or 0,
          name = a[5] or m, groups = a[6], since = tonumber(a[8] or '0') or 0}
      end
    end
  end
  cands[g] = out
  return out
end

-- Best candidate of list, skipping `avoid` unless it is the only one; index or nil.
local function best(list, avoid)
  local bi, alt
  for i, c in ipairs(list) do
    if c.load < c.max then
      if c.id == avoid then
        alt = alt or i
      elseif not bi then
        bi = i
      else
        local b = list[bi]
        if c.load < b.load or (c.load == b.load and (c.last < b.last or
            (c.last == b.last and c.id < b.id))) then
          bi = i
        end
      end
    end
  end
  return bi or alt
end

local out = {}
local agents_by_id = {}
for line in string.gmatch(ARGV[5], '[^\n]+') do
  local conv, waited, avoid = string.match(line, '^([^\t]+)\t([^\t]*)\t?(.*)$')
  if conv then
    local list = candidates(ARGV[1])
    local i = best(list, avoid)
    if not i and ARGV[2] ~= '' and (tonumber(waited) or 0) >= relax then
      list = candidates(ARGV[2])
      i = best(list, avoid)
    end
    if i then
      local c = list[i]
      -- the same agent may sit in both candidate lists: keep one load count
      local shared = agents_by_id[c.id]
      if shared and shared ~= c then c.load = shared.load end
      if redis.call('SADD', P .. 'load:' .. c.id, conv) == 1 then c.load = c.load + 1 end
      c.last = now
      agents_by_id[c.id] = c
      for _, l in pairs(cands) do
        for _, o in ipairs(l) do if o.id == c.id then o.load, o.last = c.load, c.last end end
      end
      redis.call('HSET', P .. 'agent:' .. c.id, 'last_assigned', now)
      out[#out + 1] = {conv, {agent = c.id, name = c.name, status = 'available', reason = '',
        since = c.since, pending = '', groups = split(c.groups), load = c.load, max = c.max,
        connected = true}}
    elseif not (ARGV[2] ~= '' and relax > 0) then
      -- nobody left in the group; later (younger) lines cannot relax either
      local any = false
      for _, c in ipairs(candidates(ARGV[1])) do if c.load < c.max then any = true end end
      if not any then break end
    end
  end
end
return {'S', cjson.encode({a = out,
  monitors = redis.call('ZRANGEBYSCORE', P .. 'monitors', now, '+inf')})}
