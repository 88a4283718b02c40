-- report: charge usage that had no reservation (e.g. a call made outside reserve), journal it.
-- KEYS: [1] lease HASH, [2] seen ZSET (charged ids -> ms), [3] journal STREAM
-- ARGV: [1] request id, [2] cost micros (integer >= 0), [3] now ms,
--   [4] dedup cutoff ms (seen entries scored below it are trimmed, at most 64 per call),
--   [5] the usage record (the budget protocol's JSON, journaled as given for the flusher to ship)
-- Returns {code, remaining}: code 1 charged, 0 duplicate (charged and journaled zero times);
--   remaining = granted - spent - reserved after this call.
-- Invariant: usage is never dropped (charged even with no lease), each id is charged and
--   journaled at most once within the dedup window, charge and journal entry are one atomic step.
local lease, seen = KEYS[1], KEYS[2]
local id = ARGV[1]
local old = redis.call('ZCOUNT', seen, '-inf', '(' .. ARGV[4])
if old > 0 then redis.call('ZREMRANGEBYRANK', seen, 0, math.min(old, 64) - 1) end
local l = redis.call('HMGET', lease, 'id', 'granted', 'spent', 'reserved')
local granted, reserved = tonumber(l[2]) or 0, tonumber(l[4]) or 0
if redis.call('ZSCORE', seen, id) then
  return {0, granted - (tonumber(l[3]) or 0) - reserved}
end
local spent = redis.call('HINCRBY', lease, 'spent', ARGV[2])
redis.call('ZADD', seen, ARGV[3], id)
redis.call('XADD', KEYS[3], '*', 'event_id', id, 'lease_id', l[1] or '', 'cost', ARGV[2],
  'usage', ARGV[5], 'unknown_reservation', '0')
return {1, granted - spent - reserved}
