-- commit: charge the actual cost of a reserved call, release its hold, journal it. Idempotent.
-- KEYS: [1] lease HASH, [2] res HASH, [3] res_exp ZSET, [4] seen ZSET (charged ids -> ms),
--   [5] journal STREAM
-- ARGV: [1] reservation id, [2] cost micros (integer >= 0), [3] now ms,
--   [4] dedup cutoff ms (seen entries scored below it are trimmed, at most 64 per call),
--   [5] the usage record (the budget protocol's JSON, journaled as given for the flusher to ship)
-- Returns {code, remaining}: code 1 charged, 2 charged without a live reservation (unknown or
--   expired: flagged in the journal), 0 duplicate (charged and journaled zero times);
--   remaining = granted - spent - reserved after this call.
-- Invariant: usage is never dropped (charged in full even above the estimate or with no lease),
--   each id is charged and journaled at most once within the dedup window, and the charge and its
--   journal entry are one atomic step; lease.reserved == sum(res).
local lease, res, exp, seen = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local id = ARGV[1]
local old = redis.call('ZCOUNT', seen, '-inf', '(' .. ARGV[4])
if old > 0 then redis.call('ZREMRANGEBYRANK', seen, 0, math.min(old, 64) - 1) end
local dup = redis.call('ZSCORE', seen, id)
local held = redis.call('HGET', res, id)
if held then
  redis.call('HDEL', res, id)
  redis.call('ZREM', exp, id)
  if held ~= '0' then redis.call('HINCRBY', lease, 'reserved', '-' .. held) end
end
local l = redis.call('HMGET', lease, 'id', 'granted', 'spent', 'reserved')
local granted, reserved = tonumber(l[2]) or 0, tonumber(l[4]) or 0
if dup then return {0, granted - (tonumber(l[3]) or 0) - reserved} end
local spent = redis.call('HINCRBY', lease, 'spent', ARGV[2])
redis.call('ZADD', seen, ARGV[3], id)
redis.call('XADD', KEYS[5], '*', 'event_id', id, 'lease_id', l[1] or '', 'cost', ARGV[2],
  'usage', ARGV[5], 'unknown_reservation', held and '0' or '1')
return {held and 1 or 2, granted - spent - reserved}
