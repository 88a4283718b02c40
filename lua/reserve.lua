-- reserve: hold an estimated cost against the agent's lease before an LLM call.
-- KEYS: [1] lease HASH, [2] res HASH (reservation id -> held micros),
--   [3] res_exp ZSET (reservation id -> deadline ms)
-- ARGV: [1] reservation id, [2] estimate micros (integer >= 0), [3] now ms, [4] hold deadline ms
-- Returns {code, remaining}: code 1 admitted (also when the id is already held: idempotent),
--   0 refused, -1 no lease, -2 lease expired (now >= expires_at);
--   remaining = granted - spent - reserved after this call.
-- Invariant: admits only if granted - spent - reserved >= estimate; lease.reserved == sum(res).
-- First releases at most 32 holds whose deadline <= now, so expiry needs no separate timer.
local lease, res, exp = KEYS[1], KEYS[2], KEYS[3]
local id, now = ARGV[1], ARGV[3]
local due = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 32)
if #due > 0 then
  local held, freed = redis.call('HMGET', res, unpack(due)), 0
  for i = 1, #held do freed = freed + (tonumber(held[i]) or 0) end
  redis.call('HDEL', res, unpack(due))
  redis.call('ZREM', exp, unpack(due))
  if freed > 0 then redis.call('HINCRBY', lease, 'reserved', string.format('%d', -freed)) end
end
local l = redis.call('HMGET', lease, 'id', 'granted', 'spent', 'reserved', 'expires_at')
local remaining = (tonumber(l[2]) or 0) - (tonumber(l[3]) or 0) - (tonumber(l[4]) or 0)
if redis.call('HEXISTS', res, id) == 1 then return {1, remaining} end
if not l[1] then return {-1, remaining} end
if tonumber(now) >= (tonumber(l[5]) or 0) then return {-2, remaining} end
local estimate = tonumber(ARGV[2])
if remaining < estimate then return {0, remaining} end
redis.call('HSET', res, id, ARGV[2])
redis.call('ZADD', exp, ARGV[4], id)
redis.call('HINCRBY', lease, 'reserved', ARGV[2])
return {1, remaining - estimate}
