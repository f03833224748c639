-- Claim a prefix for a call. KEYS: warm marker, warming lock. ARGV: cache ttl ms, claim token, lock ms.
-- warm: the marker exists (its PX is refreshed, as the API refreshes the entry's TTL on a hit);
-- leader: this claim took the lock, so it writes the prefix first; follower: someone else is writing.
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return 'warm'
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  return 'leader'
end
return 'follower'
