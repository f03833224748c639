-- The leader's call failed: free the lock (only if still ours) so a follower can lead at once.
-- KEYS: warming lock. ARGV: token.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
