-- Apply a process's recorded jobs to their aggregates, in one call per ~100 ms instead of ~27 HINCRBYs
-- per job (record.lua left each job's entry in the process's pending hash).
-- The process sends the sums of its entries; they apply only if every member is still pending. A member
-- already gone was applied by someone else (a reaper that took this process for dead, or `routeq retry`
-- undoing it): then each member still pending is applied from its own stored entry instead.
-- KEYS[1] the process's pending hash.
-- ARGV: 1 n members, 2..n+1 job ids, then (key, retention ms) pairs for the batch aggregates, up to the
--       separator "|", then (key, field, increment) triples: the members' summed increments.
-- Returns how many members it applied.
local n = tonumber(ARGV[1])
local ids = {}
for i = 2, n + 1 do ids[#ids + 1] = ARGV[i] end
local entries = redis.call('HMGET', KEYS[1], unpack(ids))
local present = 0
for i = 1, n do if entries[i] then present = present + 1 end end
if present == 0 then return 0 end
redis.call('HDEL', KEYS[1], unpack(ids))
if present < n then
  for i = 1, n do if entries[i] then agg_apply(entries[i], 1) end end
  return present
end
local i = n + 2
local expiries = {}
while ARGV[i] ~= '|' do
  expiries[#expiries + 1] = i
  i = i + 2
end
i = i + 1
while i <= #ARGV do
  redis.call('HINCRBY', ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
-- After the increments: a key they create gets its TTL too.
for _, e in ipairs(expiries) do redis.call('PEXPIRE', ARGV[e], ARGV[e + 1]) end
return n
