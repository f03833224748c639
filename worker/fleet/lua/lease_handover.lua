-- A process handed a slot it held to one of its own waiters (local handover, worker/fleet/handover.py):
-- the waiter's call already runs under the lease, which stays held; here its place leaves the line, the
-- lease is renewed for it, and the buckets are settled with the finished call's usage and charged the
-- waiter's asks (only if rate limits were set meanwhile: a handover is made only while there are none).
-- Re-sent after a lost connection it changes nothing: the settling goes with the place's removal.
-- KEYS: 1 leases zset, 2 limits config hash, 3 rpm bucket, 4 itpm bucket, 5 otpm bucket, 6 line zset
-- ARGV: 1 lease id, 2 the waiter's line member, 3 tier, 4..6 settings defaults for rpm, itpm, otpm,
--       7..9 deltas for rpm, itpm, otpm (the finished call's settling plus the waiter's asks),
--       10 concurrency default, 11 lease ttl ms
-- Returns {1 if the lease is still held (0: reaped meanwhile, the waiter's call runs over the limit),
-- first waiter's join ms, local handover open 0|1 (-1: no news)} (line_view).
local now = now_ms()
local lims = limits_of(KEYS[2], ARGV[3], ARGV[10], ARGV[4], ARGV[5], ARGV[6])
if redis.call('ZREM', KEYS[6], ARGV[2]) == 1 and (lims[2] or lims[3] or lims[4]) then
  local deltas = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
  buckets_settle({KEYS[3], KEYS[4], KEYS[5]}, {lims[2], lims[3], lims[4]}, deltas, now)
end
local held = 0
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[11]), ARGV[1])
  held = 1
end
local first, open = line_view(KEYS[6], lims, function() return now end, redis.call('ZCARD', KEYS[1]))
return {held, first, open}
