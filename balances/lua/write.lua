-- Persist what the charging logic decided, one entry per account, each atomically and only
-- if the account is still at the version the decision was computed from.
--
-- KEYS[i]  the account hash of entry i (for routing; every key an entry touches shares its
--          {account} hash tag, so one entry never spans cluster slots)
-- ARGV[1]  key prefix, ARGV[2] idempotency retention in seconds,
-- ARGV[3]  MessagePack list of entries:
--   {account, expected_version, hset_fields, hdel_fields, idem, ledger, expiry_key, zadd, zrem}
--   expected_version  "" for an account that does not exist
--   hset_fields       flat {field, value, ...} (includes the new "ver")
--   idem              {{request_id, decision_blob}, ...}
--   ledger            {{field, value, ...}, ...} appended to the account's stream
--   zadd / zrem       session deadlines in the expiry index: {{score, member}} / {member}
-- Returns one reply per entry: {"ok"} or {"conflict", hgetall, {{id, blob}, ...}}.
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local entries = cmsgpack.unpack(ARGV[3])
local out = {}
for i, e in ipairs(entries) do
  local tag = prefix .. ':{' .. e[1] .. '}:'
  local acct = KEYS[i]
  local current = redis.call('HGET', acct, 'ver') or ''
  local hits = {}
  for _, rec in ipairs(e[5]) do
    local seen = redis.call('GET', tag .. 'idem:' .. rec[1])
    if seen then hits[#hits + 1] = {rec[1], seen} end
  end
  if current ~= e[2] or #hits > 0 then
    out[i] = {'conflict', redis.call('HGETALL', acct), hits}
  else
    if #e[3] > 0 then redis.call('HSET', acct, unpack(e[3])) end
    if #e[4] > 0 then redis.call('HDEL', acct, unpack(e[4])) end
    for _, rec in ipairs(e[5]) do
      redis.call('SET', tag .. 'idem:' .. rec[1], rec[2], 'EX', ttl)
    end
    for _, fields in ipairs(e[6]) do
      redis.call('XADD', tag .. 'ledger', '*', unpack(fields))
    end
    for _, z in ipairs(e[8]) do redis.call('ZADD', e[7], z[1], z[2]) end
    if #e[9] > 0 then redis.call('ZREM', e[7], unpack(e[9])) end
    out[i] = {'ok'}
  end
end
return out
