-- The prefix is in the API's cache. KEYS: warm marker, warming lock. ARGV: cache ttl ms, token ('' if none).
-- Sets (or refreshes) the marker, and frees the lock only if this caller holds it.
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
if ARGV[2] ~= '' and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('DEL', KEYS[2])
end
return 1
