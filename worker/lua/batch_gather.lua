-- Add one request to its model's gathering set, once per custom_id.
-- KEYS: 1 items hash, 2 gathering zset, 3 gathering bytes hash, 4 the routeq batch's in-api set.
-- ARGV: 1 custom_id, 2 item JSON, 3 model, 4 job id.
-- Returns 1 if gathered now, 0 if that request was gathered before (a re-delivered job).
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], 'NX', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), ARGV[1])
redis.call('HINCRBY', KEYS[3], ARGV[3], string.len(ARGV[2]))
redis.call('SADD', KEYS[4], ARGV[4])
return 1
