-- Start a tier-wide cooldown unless a longer one is already running (never shortens).
-- KEYS: 1 cooldown key, 2 limits config hash.  ARGV: 1 duration ms, 2 reason, 3 tier, 4 limits channel.
-- Returns the cooldown remaining afterwards (ms).
local want = tonumber(ARGV[1])
local left = redis.call('PTTL', KEYS[1])
if left >= want then return left end
cooldown_set(KEYS[1], KEYS[2], ARGV[3], ARGV[2], want, ARGV[4])
return want
