-- Extend a held lease. Only a lease still present is extended: a reaped one stays lost (returns 0),
-- because its slot may already belong to someone else.
-- KEYS: 1 leases zset.  ARGV: 1 lease id, 2 ttl ms.
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
