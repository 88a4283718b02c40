-- leave: a sidecar replica stops; the last one out takes the lease with it.
-- KEYS: [1] members ZSET (replica id -> last heartbeat ms), [2] lease HASH
-- ARGV: [1] replica id, [2] now ms, [3] member ttl ms (a replica silent this long is gone)
-- Returns the lease id to return to the control plane when no live replica remains, else ''.
-- Invariant: a lease is removed from Redis (so nobody admits against it) exactly when it is
--   handed back, and never while another live replica may still serve from it.
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (tonumber(ARGV[2]) - tonumber(ARGV[3])))
if redis.call('ZCARD', KEYS[1]) > 0 then return '' end
local id = redis.call('HGET', KEYS[2], 'id')
if not id then return '' end
redis.call('DEL', KEYS[2])
return id
