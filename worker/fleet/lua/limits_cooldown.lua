-- Start a tier-wide cooldown unless a longer one is already running (never shortens).
-- KEYS: 1 cooldown key.  ARGV: 1 duration ms, 2 reason.
-- Returns the cooldown remaining afterwards (ms).
local want = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left >= want then return left end
redis.call('SET', KEYS[1], ARGV[2], 'PX', want)
return want
