-- Append a job's attempt record (and the paid answer, if any), once: attempts are numbered 1, 2, ... in
-- order, so attempt n is already there when the list holds n records (a write re-sent after a lost reply).
-- With KEYS[3], the call's spend on budgets without a cap (an entry, agg_lib.lua) is left in the process's
-- pending hash in the same step, so it too counts once; the process applies it with its next flush.
-- KEYS: 1 attempts list, 2 paid answers hash, 3 pending hash (optional).
-- ARGV: 1 n, 2 attempt JSON, 3 answer JSON or "", 4 TTL s, 5 pending member, 6 its entry.
-- Returns 1 if written, 0 if it was there already.
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
if KEYS[3] then redis.call('HSET', KEYS[3], ARGV[5], ARGV[6]) end
return 1
