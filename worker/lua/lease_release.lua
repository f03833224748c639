-- Give a lease back and wake waiters on every worker at once. Idempotent: only the call that
-- actually removes the lease publishes.
-- KEYS: 1 leases zset.  ARGV: 1 lease id, 2 channel, 3 event payload.
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
if removed == 1 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return removed
