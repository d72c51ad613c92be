-- Create or update accounts, all in one atomic step (accounts load is all-or-nothing).
-- KEYS: for account i, KEYS[2i-1] its hash and KEYS[2i] its ledger stream.
-- ARGV[1] MessagePack list of {id, plan, balance_micros (string), status, neg ("0"/"1"),
--         {attribute = value, ...}} (name, country, vat_id, customer, msisdn, imsi: the ones
--         the file gives); ARGV[2] the outbox stream; ARGV[3] the actor ("cli", an API key
--         id); ARGV[4] the key prefix, ARGV[5] "1" when the identity index is written here
--         (a single Redis; on a cluster its keys live in other slots and the caller writes it)
-- A new account gets its balance and an "open" ledger entry; an existing one keeps balance,
-- reservations, allowances and sessions, and takes plan, status, neg and the attributes
-- given (the others are kept). Each account written appends an outbox entry with its
-- attributes (and its opening), in the same atomic step (docs/billing.md).
-- Every account written gets a version never given before, max(old + 1, server time in µs)
-- (lua/write.lua), also one created again after Redis lost it: no cached state of an earlier
-- life passes the engine's version check. Returns {created, updated}.
local specs = cmsgpack.unpack(ARGV[1])
local outbox, actor, prefix, index = ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'
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
  local attrs = s[6]
  local opened = {}
  if redis.call('EXISTS', acct) == 1 then
    redis.call('HSET', acct, 'plan', s[2], 'status', s[4], 'neg', s[5],
               'ver', next_version(acct))
    updated = updated + 1
  else
    redis.call('HSET', acct, 'plan', s[2], 'status', s[4], 'neg', s[5], 'bal', s[3],
               'res', '0', 'ver', next_version(acct))
    local entry = {'id', 'open', 'delta', s[3], 'balance', s[3], 'reason', 'open',
                   'actor', actor}
    redis.call('XADD', ledger, '*', unpack(entry))
    opened = {entry}
    created = created + 1
  end
  for _, kind in ipairs({'msisdn', 'imsi'}) do  -- the identity index (gateway.identities)
    local new = attrs[kind]
    if new and index then
      local old = redis.call('HGET', acct, 'a:' .. kind)
      if old and old ~= new and redis.call('GET', prefix .. ':id:' .. kind .. ':' .. old)
          == s[1] then
        redis.call('DEL', prefix .. ':id:' .. kind .. ':' .. old)
      end
      redis.call('SET', prefix .. ':id:' .. kind .. ':' .. new, s[1])
    end
  end
  local shown = {plan = s[2], status = s[4], allow_negative = s[5] == '1'}
  for key, value in pairs(attrs) do
    redis.call('HSET', acct, 'a:' .. key, value)
    shown[key] = value
  end
  redis.call('XADD', outbox, '*', 'r',
             cmsgpack.pack({account = s[1], ledger = opened, account_attrs = shown}))
end
return {created, updated}
