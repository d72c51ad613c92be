-- Persist what the charging logic decided, one entry per account, each atomically and only
-- if the account is still at the version the decision was computed from.
--
-- KEYS[1]  the account hash of the first entry, for routing. Every key an entry touches
--          shares the entry's {account} hash tag and is named here from ARGV, so that on a
--          Redis Cluster one call can carry the accounts of every slot of one node.
-- ARGV     prefix, idempotency retention (s), ledger retention (ms, 0: keep every entry),
--          number of entries, then per entry, flat
--          (counts before lists):
--            account, expected_version ("" for an account that does not exist),
--            n, field, value, ... (n = 2 × fields; includes the new "ver")
--            n, field, ...                         hash fields to delete (ended sessions)
--            n, request_id, decision, ...          idempotency records (n = 2 × records)
--            n, (m, field, value, ...) × n         ledger entries for the account's stream
--            expiry_key, n, score, member, ...     session deadlines to set (n = 2 × pairs)
--            n, member, ...                        session deadlines to drop
-- Returns per entry {"ok"} or {"conflict", hgetall, {request_id, decision, ...}}; a conflict
-- (the version moved, or a request id was decided already) writes nothing for that entry.
local prefix, ttl, entries = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[4])
-- Ledger entries older than the retention are trimmed as new ones are appended (MINID ~:
-- whole stream nodes only, so the cost is O(1) amortised); every entry carries the balance
-- after it, so a trimmed ledger still reconciles from its oldest entry.
local xadd_trim = {'*'}
if tonumber(ARGV[3]) > 0 then
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  xadd_trim = {'MINID', '~', string.format('%.0f', now_ms - tonumber(ARGV[3])), '*'}
end
local p = 5
local function list()
  local n = tonumber(ARGV[p])
  local first = p + 1
  p = p + 1 + n
  return first, n
end
local out = {}
for i = 1, entries do
  local account, expected = ARGV[p], ARGV[p + 1]
  p = p + 2
  local tag = prefix .. ':{' .. account .. '}:'
  local acct = tag .. 'acct'
  local hset_at, hset_n = list()
  local hdel_at, hdel_n = list()
  local idem_at, idem_n = list()
  local ledger_n = tonumber(ARGV[p])
  local ledger_at = p + 1
  p = p + 1
  for _ = 1, ledger_n do p = p + 1 + tonumber(ARGV[p]) end
  local expiry = ARGV[p]
  p = p + 1
  local zadd_at, zadd_n = list()
  local zrem_at, zrem_n = list()

  local ok = (redis.call('HGET', acct, 'ver') or '') == expected
  local taken = 0
  if ok then  -- claim the request ids; a claimed one means it was decided before
    for k = idem_at, idem_at + idem_n - 1, 2 do
      if not redis.call('SET', tag .. 'idem:' .. ARGV[k], ARGV[k + 1], 'NX', 'EX', ttl) then
        ok = false
        break
      end
      taken = taken + 2
    end
  end
  if not ok then
    for k = idem_at, idem_at + taken - 1, 2 do redis.call('DEL', tag .. 'idem:' .. ARGV[k]) end
    local hits = {}
    for k = idem_at, idem_at + idem_n - 1, 2 do
      local seen = redis.call('GET', tag .. 'idem:' .. ARGV[k])
      if seen then hits[#hits + 1] = ARGV[k]; hits[#hits + 1] = seen end
    end
    out[i] = {'conflict', redis.call('HGETALL', acct), hits}
  else
    if hset_n > 0 then redis.call('HSET', acct, unpack(ARGV, hset_at, hset_at + hset_n - 1)) end
    if hdel_n > 0 then redis.call('HDEL', acct, unpack(ARGV, hdel_at, hdel_at + hdel_n - 1)) end
    local q = ledger_at
    for _ = 1, ledger_n do
      local m = tonumber(ARGV[q])
      local args = {tag .. 'ledger', unpack(xadd_trim)}
      for k = q + 1, q + m do args[#args + 1] = ARGV[k] end
      redis.call('XADD', unpack(args))
      q = q + 1 + m
    end
    for k = zadd_at, zadd_at + zadd_n - 1, 2 do
      redis.call('ZADD', expiry, ARGV[k], ARGV[k + 1])
    end
    if zrem_n > 0 then redis.call('ZREM', expiry, unpack(ARGV, zrem_at, zrem_at + zrem_n - 1)) end
    out[i] = {'ok'}
  end
end
return out
