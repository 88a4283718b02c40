-- cancel: release a reservation's hold without charging (the call was not made).
-- KEYS: [1] lease HASH, [2] res HASH, [3] res_exp ZSET
-- ARGV: [1] reservation id
-- Returns 1 if a hold existed and was released, 0 otherwise (already committed, cancelled,
--   expired or unknown: cancelling twice is harmless).
-- Invariant: lease.reserved == sum(res); nothing is charged.
local held = redis.call('HGET', KEYS[2], ARGV[1])
if not held then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if held ~= '0' then redis.call('HINCRBY', KEYS[1], 'reserved', '-' .. held) end
return 1
