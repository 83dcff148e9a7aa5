-- Closes a conversation: its assigned agent, a supervisor/admin, or its customer (who ends the
-- chat: a waiting one leaves the queue). A customer's close gets the resolution `abandoned`
-- when no agent has the conversation at that moment (waiting, also after a transfer back to a
-- queue, or with the bot), `customer_closed` when one has (assigned).
-- KEYS[1] conversation meta hash, KEYS[2] (optional) its record stream (derived from KEYS[1]
--         when absent: same hash tag, same slot)
-- ARGV: user, role, resolution, now (ms), category ('' = none)
-- Returns {"E", code} | {"S", previous state, customer, agent, group, resolution, sup...}
local logkey = KEYS[2] or (string.sub(KEYS[1], 1, -5) .. 'log')
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return {'E', 'not_found'} end
local m, sups = {}, {}
for i = 1, #meta, 2 do
  local f = meta[i]
  m[f] = meta[i + 1]
  if string.sub(f, 1, 4) == 'sup:' then sups[#sups + 1] = string.sub(f, 5) end
end
local user, role = ARGV[1], ARGV[2]
if role == 'customer' then
  if m.customer ~= user then return {'E', 'forbidden'} end
elseif role == 'agent' and m.agent ~= user then
  return {'E', 'forbidden'}
end
if m.state == 'closed' then return {'E', 'conflict'} end
local resolution = ARGV[3]
if role == 'customer' then
  resolution = m.state == 'assigned' and 'customer_closed' or 'abandoned'
end
-- The first response enters the record lazily (sla_fire.lua, or here at the latest), with the
-- time and sender of the message itself.
if m.first_response and not m.fr_logged then
  local msgs = string.sub(KEYS[1], 1, -5) .. 'msgs'
  local e = redis.call('XRANGE', msgs, m.first_response, m.first_response)
  local by = ''
  if e[1] then
    for k = 1, #e[1][2], 2 do if e[1][2][k] == 'from' then by = e[1][2][k + 1] end end
  end
  redis.call('XADD', logkey, '*', 'ev', 'first_response', 'by', by,
    'ts', string.match(m.first_response, '^(%d+)'), 'id', m.first_response)
  redis.call('HSET', KEYS[1], 'fr_logged', '1')
end
redis.call('HSET', KEYS[1], 'state', 'closed', 'resolution', resolution, 'closed_by', user,
  'closed_at', ARGV[4])
local category = ARGV[5] or ''
if category ~= '' then redis.call('HSET', KEYS[1], 'category', category) end
redis.call('XADD', logkey, '*', 'ev', 'closed', 'by', user, 'ts', ARGV[4], 'resolution', resolution,
  'category', category, 'agent', m.agent or '')
local out = {'S', m.state or '', m.customer or '', m.agent or '', m.group or 'default', resolution}
for _, s in ipairs(sups) do out[#out + 1] = s end
return out
