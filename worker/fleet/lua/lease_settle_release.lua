-- Settle a tier's buckets with a call's actual usage, give its lease back, and hand the freed slot to
-- the first live waiter in the line (if the cooldown and buckets let it in), all in one round trip.
-- The grant is published as "grant:<tier>:<lease id>" on the waiter's own channel (ARGV[13] followed by
-- the lease id's owner part, everything before its last ':'), so that process starts the call without
-- asking again and no other process wakes for it; a waiter of the releasing process (ARGV[15]) is not
-- published to: that process reads the grant from the reply. A freed slot nobody could take is
-- published as "release:<tier>" on the shared channel.
-- KEYS: 1 leases zset, 2 limits config hash, 3 rpm bucket, 4 itpm bucket, 5 otpm bucket,
--       6 cooldown, 7 line zset
-- ARGV: 1 lease id, 2 channel, 3 tier, 4..6 settings defaults for rpm, itpm, otpm ("none" = unlimited),
--       7..9 deltas for rpm, itpm, otpm, 10 concurrency default, 11 lease ttl ms for the waiter's lease,
--       12 "withdraw": a waiter giving up; it leaves the line, and settles (refunds) only a slot it was
--       granted meanwhile (a finished call settles even when its lease was reaped: the call happened)
--       13 grants channel prefix (the owner is appended), 14 with "withdraw": the waiter's line member,
--       15 the releasing process's owner
-- Returns {1 if the lease was removed (0: already gone), lease id granted or ""}, and after a removal the
-- line's view (line_view): first waiter's join ms, local handover open 0|1 (-1: no news).
local tier = ARGV[3]
-- Redis TIME only when a bucket is settled or a slot is handed on: an uncapped tier with nobody waiting
-- (the common release) needs no clock.
local now = nil
local function clock()
  if now == nil then now = now_ms() end
  return now
end
local withdraw = ARGV[12] == 'withdraw'
if withdraw then redis.call('ZREM', KEYS[7], ARGV[14]) end
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
local deltas = {tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])}
local settle = (removed == 1 or not withdraw) and (deltas[1] ~= 0 or deltas[2] ~= 0 or deltas[3] ~= 0)
if removed == 0 and not settle then return {0, ''} end
-- One read of the tier's limits serves the settling and the grant below.
local lims = limits_of(KEYS[2], tier, ARGV[10], ARGV[4], ARGV[5], ARGV[6])
if settle and (lims[2] or lims[3] or lims[4]) then
  buckets_settle({KEYS[3], KEYS[4], KEYS[5]}, {lims[2], lims[3], lims[4]}, deltas, clock())
end
if removed == 0 then return {0, ''} end
local head, id, asks = line_head(KEYS[7])
if head == nil then return {1, '', 0, -1} end
local K = {KEYS[1], KEYS[6], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[7]}
local A = {tier, id, ARGV[11], ARGV[10], ARGV[4], ARGV[5], ARGV[6], 1, asks[1], asks[2]}
local res = acquire(K, A, head, clock(), lims)
local granted = ''
if res[1] == 1 then
  granted = id
  local owner = string.match(id, '^(.*):[^:]*$') or id
  if owner ~= ARGV[15] then redis.call('PUBLISH', ARGV[13] .. owner, 'grant:' .. tier .. ':' .. id) end
else
  redis.call('PUBLISH', ARGV[2], 'release:' .. tier)
end
local first, open = line_view(KEYS[7], lims, clock, res[4])
return {1, granted, first, open}
