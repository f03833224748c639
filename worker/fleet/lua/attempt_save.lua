-- Save a job's attempt record with its paid answer (if any) in the job's calls hash, once: attempt n is
-- field "n", so a write re-sent after a lost reply finds it there.
-- With KEYS[2], the call's spend on budgets without a cap (an entry, agg_lib.lua) is left in the process's
-- pending hash in the same step, so it too counts once; the process applies it with its next flush.
-- KEYS: 1 the job's calls hash, 2 pending hash (optional).
-- ARGV: 1 n, 2 the call's JSON ({"attempt": ..., "answer": ... or null}), 3 TTL s, 4 pending member,
--       5 its entry.
-- Returns 1 if written, 0 if it was there already.
if not save_call(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then return 0 end
if KEYS[2] then redis.call('HSET', KEYS[2], ARGV[4], ARGV[5]) end
return 1
