-- Create or update accounts, all in one atomic step (accounts load is all-or-nothing).
-- KEYS: for account i, KEYS[2i-1] its hash and KEYS[2i] its ledger stream.
-- ARGV[1] MessagePack list of {id, plan, balance_micros (string), status, neg ("0"/"1")}.
-- A new account gets its balance and an "open" ledger entry; an existing one keeps balance,
-- reservations, allowances and sessions, and takes plan, status and neg.
-- Every account written gets a version never given before, max(old + 1, server time in µs)
-- (lua/write.lua), also one created again after Redis lost it: no cached state of an earlier
-- life passes the engine's version check. Returns {created, updated}.
local specs = cmsgpack.unpack(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function next_version(acct)
  -- an unreadable or out-of-range version (the engine refuses such an account) is replaced
  local old = tonumber(redis.call('HGET', acct, 'ver') or '0')
  if not old or old < 0 or old >= 9007199254740991 then old = 0 end
  return string.format('%.0f', math.max(math.floor(old) + 1, now))
end
local created, updated = 0, 0
for i, s in ipairs(specs) do
  local acct, ledger = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', acct) == 1 then
    redis.call('HSET', acct, 'plan', s[2], 'status', s[4], 'neg', s[5],
               'ver', next_version(acct))
    updated = updated + 1
  else
    redis.call('HSET', acct, 'plan', s[2], 'status', s[4], 'neg', s[5], 'bal', s[3],
               'res', '0', 'ver', next_version(acct))
    redis.call('XADD', ledger, '*', 'id', 'open', 'delta', s[3],
               'balance', s[3], 'reason', 'open')
    created = created + 1
  end
end
return {created, updated}
