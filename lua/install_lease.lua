-- install_lease: install a lease granted by the control plane, or apply a top-up of it.
-- KEYS: [1] lease HASH
-- ARGV: [1] lease id, [2] granted total micros (the lease's TOTAL grant so far, integer >= 0),
--   [3] expires_at ms
-- Returns remaining = granted - spent - reserved after this call.
-- Invariant: a new lease id starts with spent 0 and keeps reserved (live reservations carry over);
--   for the same id granted and expires_at only grow (max), so a replayed or reordered top-up is
--   harmless. lease.reserved == sum(res) is untouched.
local lease = KEYS[1]
local l = redis.call('HMGET', lease, 'id', 'granted', 'spent', 'reserved', 'expires_at')
local reserved = tonumber(l[4]) or 0
if l[1] ~= ARGV[1] then
  redis.call('HSET', lease, 'id', ARGV[1], 'granted', ARGV[2], 'spent', '0',
    'reserved', l[4] or '0', 'expires_at', ARGV[3])
  return tonumber(ARGV[2]) - reserved
end
local granted = tonumber(l[2]) or 0
if tonumber(ARGV[2]) > granted then
  granted = tonumber(ARGV[2])
  redis.call('HSET', lease, 'granted', ARGV[2])
end
if tonumber(ARGV[3]) > (tonumber(l[5]) or 0) then
  redis.call('HSET', lease, 'expires_at', ARGV[3])
end
return granted - (tonumber(l[3]) or 0) - reserved
