-- Take from (mode "reserve": all-or-nothing) or settle (mode "settle": signed deltas applied as they
-- are, refunds capped at capacity) a tier's rpm/itpm/otpm token buckets.
-- KEYS: 1 limits config hash, 2 rpm bucket, 3 itpm bucket, 4 otpm bucket
-- ARGV: 1 tier, 2 mode, 3..5 settings defaults for rpm, itpm, otpm ("none" = unlimited),
--       6..8 amounts (reserve) or deltas (settle) for rpm, itpm, otpm
-- Returns {ok 0|1, kind causing the wait or "", wait ms}.
local tier = ARGV[1]
local now = now_ms()
local keys = {KEYS[2], KEYS[3], KEYS[4]}
local caps = {
  limit_of(KEYS[1], tier, 'rpm', ARGV[3]),
  limit_of(KEYS[1], tier, 'itpm', ARGV[4]),
  limit_of(KEYS[1], tier, 'otpm', ARGV[5]),
}
local amounts = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
if ARGV[2] == 'settle' then
  buckets_settle(keys, caps, amounts, now)
  return {1, '', 0}
end
local wait, kind = buckets_take(keys, {'rpm', 'itpm', 'otpm'}, caps, amounts, now)
if kind ~= nil then return {0, kind, wait} end
return {1, '', 0}
