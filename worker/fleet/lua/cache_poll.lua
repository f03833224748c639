-- A follower's look: 1 warm, 0 still being written, -1 neither (the leader failed or its lock expired).
-- KEYS: warm marker, warming lock.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
return -1
