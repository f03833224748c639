-- Append a job's attempt record (and the paid answer, if any), once: attempts are numbered 1, 2, ... in
-- order, so attempt n is already there when the list holds n records (a write re-sent after a lost reply).
-- KEYS: 1 attempts list, 2 paid answers hash.  ARGV: 1 n, 2 attempt JSON, 3 answer JSON or "", 4 TTL s.
-- Returns 1 if written, 0 if it was there already.
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
return 1
