-- The API looks away (connection or timeout fault): pause the tier fleet-wide for the next step of the
-- outage schedule. While a cooldown runs, faults of calls that started before it add no step: one failed
-- probe per cooldown advances the streak, however many calls were in flight when the outage began.
-- KEYS: 1 cooldown key, 2 outage streak counter, 3 limits config hash.
-- ARGV: 1 reason, 2 streak reset ms, 3 tier, 4 limits channel, 5.. the schedule of cooldowns (ms), shortest first.
-- Returns {cooldown remaining ms, streak}.
local left = redis.call('PTTL', KEYS[1])
if left > 0 then
  return {left, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local n = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
local steps = #ARGV - 4
local want = tonumber(ARGV[4 + math.min(n, steps)])
cooldown_set(KEYS[1], KEYS[3], ARGV[3], ARGV[1], want, ARGV[4])
return {want, n}
