-- Claim up to ARGV[2] ready jobs of an arq queue for one worker process, atomically, in one round trip.
-- arq claims one job per WATCH + EXISTS + ZSCORE + MULTI/PSETEX/EXEC + UNWATCH (4-5 round trips), and with
-- several pullers on a queue most of them lose the race and start over. This writes the same keys with the
-- same meaning (the in-progress key, here holding the owner token), so the rest of arq is unaffected.
-- KEYS: 1 queue zset, 2 the owner's running set.
-- ARGV: 1 now in ms (the worker's clock, as arq uses), 2 jobs wanted, 3 in-progress key prefix,
--       4 in-progress PX in ms, 5 owner token, 6 most queue entries to look at,
--       7 the calls-hash key prefix (Keys.calls) when the queue's arq ids are routeq job ids, else '',
--       8 arq's job key prefix, 9 arq's retry key prefix, 10 arq's retry-key TTL in s.
-- Returns {id, score, fresh, job, try, ...} of the jobs claimed, oldest first; fresh is 1 when the job has
-- no calls hash (no model call of it was ever saved), so its run need not load one; job and try are what
-- arq's run_job reads first in a MULTI of its own (the job's serialized form, or nil if it expired, and its
-- delivery count, incremented here with arq's retry-key TTL), so a run starts without that round trip.
local want = tonumber(ARGV[2])
local scan = tonumber(ARGV[6])
local page = math.max(want * 2, 128)
local got = {}
local ids_got = {}
local offset = 0
while #ids_got < want and offset < scan do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', offset, page)
  if #ids == 0 then break end
  -- The claimed jobs still in the queue sit at its head (a running job leaves at its end): one MGET
  -- tells which of the page are free, instead of an EXISTS per entry.
  local keys = {}
  for i = 1, #ids, 2 do keys[#keys + 1] = ARGV[3] .. ids[i] end
  local held = redis.call('MGET', unpack(keys))
  for i = 1, #ids, 2 do
    if #ids_got < want and not held[(i + 1) / 2] then
      redis.call('SET', keys[(i + 1) / 2], ARGV[5], 'PX', ARGV[4])
      ids_got[#ids_got + 1] = ids[i]
      got[#got + 1] = ids[i]
      got[#got + 1] = ids[i + 1]
      got[#got + 1] = (ARGV[7] ~= '' and redis.call('EXISTS', ARGV[7] .. ids[i]) == 0) and 1 or 0
      got[#got + 1] = redis.call('GET', ARGV[8] .. ids[i])
      got[#got + 1] = redis.call('INCR', ARGV[9] .. ids[i])
      redis.call('EXPIRE', ARGV[9] .. ids[i], ARGV[10])
    end
  end
  if #ids < page * 2 then break end
  offset = offset + page
end
if #ids_got > 0 then redis.call('SADD', KEYS[2], unpack(ids_got)) end
return got
