-- Admission to a tier (see acquire() in limits_lib.lua), for a newcomer or for a waiter in the line.
-- A waiter already granted a slot by a release (its grant event may have been lost) is told so; a waiter
-- refused again keeps its place in the line and refreshes its deadline.
--
-- KEYS: 1 leases zset (lease id -> deadline ms), 2 cooldown, 3 limits config hash,
--       4 rpm bucket, 5 itpm bucket, 6 otpm bucket, 7 line zset, 8 line info hash
-- ARGV: 1 tier, 2 lease id, 3 lease ttl ms,
--       4..7 settings defaults for concurrency, rpm, itpm, otpm ("none" = unlimited),
--       8..10 amounts to reserve from rpm, itpm, otpm,
--       11 ms a waiter's place is kept without a new try (0 = a newcomer, who never joins the line)
-- Returns {granted 0|1, reason, retry ms, holders, concurrency limit (-1 = none)}; reason "granted" when
-- a release had already handed the slot over.
local now = now_ms()
local keep = tonumber(ARGV[11])
local waiting = keep > 0
if waiting and redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  line_leave(KEYS[7], KEYS[8], ARGV[2])
  return {1, 'granted', 0, redis.call('ZCARD', KEYS[1]), limit_of(KEYS[3], ARGV[1], 'concurrency', ARGV[4]) or -1}
end
local res = acquire(KEYS, ARGV, waiting, now)
if res[1] == 0 and waiting then
  redis.call('ZADD', KEYS[7], 'NX', now, ARGV[2])
  redis.call('HSET', KEYS[8], ARGV[2], (now + keep) .. '|' .. ARGV[9] .. '|' .. ARGV[10])
  -- The info hash outlives any waiter only by the longest keep; a line nobody tends empties itself.
  redis.call('PEXPIRE', KEYS[7], keep * 4)
  redis.call('PEXPIRE', KEYS[8], keep * 4)
end
return res
