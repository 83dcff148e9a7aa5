-- Commits an automatic assignment: a conversation still waiting in the group it was picked
-- from becomes assigned to the reserved agent. Exactly one of this and conv.accept wins.
-- KEYS[1] meta hash, KEYS[2] messages stream, KEYS[3] record stream
-- ARGV: agent, agent name, now (ms), group, history count, actor (recorded as `by`)
-- Returns {"S", json view} or {"E", "conflict", state, agent} / {"E", "not_found"}.
-- view: the conversation's metadata, participants and its last messages, for conv.assigned.
local st = redis.call('HMGET', KEYS[1], 'state', 'agent', 'group')
if not st[1] then return {'E', 'not_found'} end
if st[1] ~= 'waiting' or (st[3] or 'default') ~= ARGV[4] then
  return {'E', 'conflict', st[1], st[2] or ''}
end
local seq = redis.call('HINCRBY', KEYS[1], 'assign_seq', 1)
redis.call('HSET', KEYS[1], 'state', 'assigned', 'agent', ARGV[1], 'agent_name', ARGV[2],
  'assigned_at', ARGV[3])
redis.call('XADD', KEYS[3], '*', 'ev', 'assigned', 'by', ARGV[6], 'ts', ARGV[3], 'agent', ARGV[1],
  'group', ARGV[4], 'seq', seq)
local meta = redis.call('HGETALL', KEYS[1])
local m, sups = {}, {}
for i = 1, #meta, 2 do
  m[meta[i]] = meta[i + 1]
  if string.sub(meta[i], 1, 4) == 'sup:' then sups[#sups + 1] = string.sub(meta[i], 5) end
end
local msgs = {}
local n = tonumber(ARGV[5]) or 0
if n > 0 then
  local r = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
  for i = #r, 1, -1 do
    local e, f = r[i], {}
    for k = 1, #e[2], 2 do f[e[2][k]] = e[2][k + 1] end
    msgs[#msgs + 1] = {id = e[1], from = f.from or '', role = f.role or '', name = f.name or '',
      text = f.text or '', cid = f.cid or ''}
  end
end
return {'S', cjson.encode({customer = m.customer or '', customer_name = m.customer_name or '',
  ticket = m.ticket or '', channel = m.channel or '', topic = m.topic or '',
  level = tonumber(m.level or '0') or 0, priority = m.priority or 'medium',
  created = tonumber(m.created or '0') or 0, group = m.group or 'default',
  assigned_at = tonumber(ARGV[3]), seq = seq, sups = sups, msgs = msgs})}
