-- Admission to a tier (see acquire() in limits_lib.lua), for a newcomer or for a waiter in the line.
-- A waiter already granted a slot by a release (its grant event may have been lost) is told so; a waiter
-- refused again keeps its place in the line (re-joining it if the line was lost, e.g. a Redis restart).
-- A newcomer that may join (ARGV[12] > 0) and is refused only for want of a slot joins the line's tail
-- while fewer than ARGV[12] wait in it: it is then handed a slot by a release like any waiter.
--
-- KEYS: 1 leases zset (lease id -> deadline ms), 2 cooldown, 3 limits config hash,
--       4 rpm bucket, 5 itpm bucket, 6 otpm bucket, 7 line zset
-- ARGV: 1 tier, 2 lease id, 3 lease ttl ms,
--       4..7 settings defaults for concurrency, rpm, itpm, otpm ("none" = unlimited),
--       8..10 amounts to reserve from rpm, itpm, otpm,
--       11 1 for a caller that waits in the line (0 = a newcomer that never joins it),
--       12 for a newcomer with ARGV[11] > 0: join the line if it holds fewer waiters than this
-- Returns {granted 0|1, reason, retry ms, holders, concurrency limit (-1 = none), 1 if it joined the
-- line}; reason "granted" when a release had already handed the slot over. A caller refused and left in
-- the line is also told 7 when it joined (-1: it had joined before, unchanged) and the line's view
-- (line_view): 8 first waiter's join ms, 9 local handover open 0|1.
local now = now_ms()
local in_line = tonumber(ARGV[11]) > 0
local join = tonumber(ARGV[12] or '0')
local waiting = in_line and join == 0
local member = line_member(ARGV[2], ARGV[9], ARGV[10])
if waiting and redis.call('ZSCORE', KEYS[1], ARGV[2]) then
  redis.call('ZREM', KEYS[7], member)
  return {1, 'granted', 0, redis.call('ZCARD', KEYS[1]), limit_of(KEYS[3], ARGV[1], 'concurrency', ARGV[4]) or -1}
end
local lims = limits_of(KEYS[3], ARGV[1], ARGV[4], ARGV[5], ARGV[6], ARGV[7])
local res = acquire(KEYS, ARGV, waiting and member or nil, now, lims)
if res[1] == 1 or not in_line then return res end
if not waiting then
  if (res[2] ~= 'concurrency' and res[2] ~= 'queued') or redis.call('ZCARD', KEYS[7]) >= join then
    return res
  end
end
-- No TTL on the line (one set by one waiter could lapse under others still in it): every entry leaves on
-- its grant or withdrawal, or with its dead process (the reaper).
res[7] = -1
if redis.call('ZADD', KEYS[7], 'NX', now, member) == 1 then res[7] = now end
res[6] = 1
res[8], res[9] = line_view(KEYS[7], lims, function() return now end, res[4])
return res
