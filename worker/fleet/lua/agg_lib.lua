-- Shared helpers of the scripts that move counters on a worker's behalf (record, attempt_save, agg_flush,
-- agg_fold, unrecord, recovery_reap). worker/fleet/store.py and recovery.py prepend this file to them.
--
-- An entry (worker/fleet/aggregates.py writes it) is one string of lines separated by "\n", each either
-- "+ <key> <field> <integer>" (HINCRBY) or "~ <key> <ms>" (PEXPIRE): a recorded job's batch and tenant
-- aggregate increments, or a call's spend on budgets without a cap. Keys and fields hold no whitespace
-- (batch and tenant names are safe names; fields are routeq's own).

-- Apply one entry (sign 1), or take its increments out again (sign -1).
local function agg_apply(entry, sign)
  for op, a, b, c in string.gmatch(entry, '([+~]) (%S+) (%S+) ?(%S*)') do
    if op == '+' then
      local v = c
      if sign < 0 then v = string.sub(v, 1, 1) == '-' and string.sub(v, 2) or ('-' .. v) end
      redis.call('HINCRBY', a, b, v)
    else
      redis.call('PEXPIRE', a, b)
    end
  end
end

-- Apply every entry still in a pending hash (member -> entry) and delete it: what a process left that
-- died (or failed its last flush) before applying them itself. Returns how many entries it applied.
local function agg_fold(pending_key)
  local all = redis.call('HGETALL', pending_key)
  for i = 2, #all, 2 do agg_apply(all[i], 1) end
  if #all > 0 then redis.call('DEL', pending_key) end
  return #all / 2
end

-- Save a model call in a job's calls hash once (field n: a write re-sent after a lost reply finds it
-- there), with the hash's TTL. Returns true if it was written now.
local function save_call(calls_key, n, call_json, ttl_s)
  if redis.call('HSETNX', calls_key, n, call_json) == 0 then return false end
  redis.call('EXPIRE', calls_key, ttl_s)
  return true
end
