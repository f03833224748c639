-- Undo a final outcome before re-running the job (`routeq retry`): the reverse of record.lua.
-- The job's attempts list is kept, so the new outcome will again carry every paid call.
-- KEYS as record.lua; ARGV[1] job id, ARGV[2..] pairs: agg field, increment to subtract
if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then
  return 0
end
for i = 2, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[3], ARGV[i], -tonumber(ARGV[i + 1]))
  if string.byte(ARGV[i]) ~= 64 then  -- '@': batch-only field, as in record.lua
    redis.call('HINCRBY', KEYS[4], ARGV[i], -tonumber(ARGV[i + 1]))
  end
end
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
