-- expire_reservations: release holds whose deadline has passed (runtime died before commit).
-- KEYS: [1] lease HASH, [2] res HASH, [3] res_exp ZSET (id -> deadline ms)
-- ARGV: [1] now ms, [2] limit (max holds released by this call, > 0)
-- Returns the number of reservations released (deadline <= now), oldest deadline first.
-- Invariant: lease.reserved == sum(res); nothing is charged (a late commit is still charged,
--   flagged as unknown reservation).
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #due == 0 then return 0 end
local held, freed = redis.call('HMGET', KEYS[2], unpack(due)), 0
for i = 1, #held do freed = freed + (tonumber(held[i]) or 0) end
redis.call('HDEL', KEYS[2], unpack(due))
redis.call('ZREM', KEYS[3], unpack(due))
if freed > 0 then redis.call('HINCRBY', KEYS[1], 'reserved', string.format('%d', -freed)) end
return #due
