-- Applies one bot event to a conversation atomically: stores the bot's replies, the fields it
-- set, its new state, and a handoff (bot -> waiting) or finish (-> closed), all or nothing.
-- KEYS[1] meta hash, KEYS[2] messages stream, KEYS[3] bot state hash {v, s}, KEYS[4] record
-- ARGV: [1] expected state version, [2] new state (msgpack), [3] stream maxlen, [4] bot name,
--       [5] now (ms), [6] the conversation state the event needs ("bot" or "waiting"),
--       [7] R = number of replies, then R texts, then F = number of meta fields, then F pairs,
--       then handoff reason ('' = none), finish resolution ('' = none)
-- Returns {"R"} when another event changed the state first (re-run), {"E", code[, state]},
-- or {"S", state now, customer, agent, group, R, prev, id..., sup...} (prev: the message before
-- the first reply, '' for none; meta "last" keeps the newest id, as msg_send.lua does).
local st = redis.call('HMGET', KEYS[1], 'state', 'customer', 'agent', 'group', 'sups', 'last')
if not st[1] then return {'E', 'not_found'} end
local v = tonumber(redis.call('HGET', KEYS[3], 'v') or '0') or 0
if v ~= tonumber(ARGV[1]) then return {'R'} end
if st[1] ~= ARGV[6] then return {'E', 'conflict', st[1]} end
local state, group = st[1], st[4] or 'default'
local now = ARGV[5]
local r = tonumber(ARGV[7])
local ids = {}
local prev = st[6]
if not prev and r > 0 then
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  prev = tail[1] and tail[1][1] or ''
end
for i = 1, r do
  ids[i] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'from', 'bot', 'role', 'bot',
    'name', ARGV[4], 'text', ARGV[7 + i], 'cid', 'bot-' .. (v + 1) .. '-' .. i)
end
if r > 0 then redis.call('HSET', KEYS[1], 'last', ids[r]) end
local k = 8 + r
local f = tonumber(ARGV[k])
for i = 1, f do
  local name, value = ARGV[k + 2 * i - 1], ARGV[k + 2 * i]
  redis.call('HSET', KEYS[1], name, value)
  if name == 'group' then group = value end
  if name == 'sensitive' then
    redis.call('XADD', KEYS[4], '*', 'ev', 'flagged', 'by', 'bot', 'ts', now, 'reason', value)
  end
end
k = k + 2 * f + 1
redis.call('HSET', KEYS[3], 'v', v + 1, 's', ARGV[2])
local handoff, finish = ARGV[k], ARGV[k + 1]
if handoff ~= '' and state == 'bot' then
  state = 'waiting'
  redis.call('HSET', KEYS[1], 'state', 'waiting', 'handoff', handoff)
  local m = redis.call('HMGET', KEYS[1], 'priority', 'level')
  redis.call('XADD', KEYS[4], '*', 'ev', 'queued', 'by', 'bot', 'ts', now, 'group', group,
    'priority', m[1] or 'medium', 'level', m[2] or '0', 'reason', handoff)
end
if finish ~= '' and state ~= 'closed' then
  state = 'closed'
  redis.call('HSET', KEYS[1], 'state', 'closed', 'resolution', finish, 'closed_by', 'bot',
    'closed_at', now)
  redis.call('XADD', KEYS[4], '*', 'ev', 'closed', 'by', 'bot', 'ts', now, 'resolution', finish)
end
local out = {'S', state, st[2] or '', st[3] or '', group, r, prev or ''}
for i = 1, r do out[#out + 1] = ids[i] end
-- joined supervisors: '\n'-joined in "sups" (as conv_join.lua keeps them)
for s in string.gmatch(st[5] or '', '[^\n]+') do out[#out + 1] = s end
return out
