-- unlock: release a lock only if we still hold it.
-- KEYS: [1] lock key (a string set with SET NX PX)
-- ARGV: [1] owner token
-- Returns 1 if released, 0 if the lock had expired or belongs to someone else.
-- Invariant: a replica never releases a lock another replica took after ours expired.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
