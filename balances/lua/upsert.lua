-- Create or update accounts, all in one atomic step (accounts load is all-or-nothing).
-- KEYS: for account i, KEYS[2i-1] its hash and KEYS[2i] its ledger stream.
-- ARGV[1] MessagePack list of {id, plan, balance_micros (string), status, neg ("0"/"1")}.
-- A new account gets its balance and an "open" ledger entry; an existing one keeps balance,
-- reservations, allowances and sessions, and takes plan, status and neg.
-- Returns {created, updated}.
local specs = cmsgpack.unpack(ARGV[1])
local created, updated = 0, 0
for i, s in ipairs(specs) do
  local acct, ledger = KEYS[2 * i - 1], KEYS[2 * i]
  if redis.call('EXISTS', acct) == 1 then
    redis.call('HSET', acct, 'plan', s[2], 'status', s[4], 'neg', s[5])
    redis.call('HINCRBY', acct, 'ver', 1)
    updated = updated + 1
  else
    redis.call('HSET', acct, 'plan', s[2], 'status', s[4], 'neg', s[5], 'bal', s[3],
               'res', '0', 'ver', '1')
    redis.call('XADD', ledger, '*', 'id', 'open', 'delta', s[3],
               'balance', s[3], 'reason', 'open')
    created = created + 1
  end
end
return {created, updated}
