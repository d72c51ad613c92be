-- Credit (or, with a negative amount, debit) an account's balance, ledgered, idempotent.
-- KEYS[1] account hash, KEYS[2] ledger stream, KEYS[3] the top-up's idempotency key
-- ARGV: amount micros, reason, id, seconds the id is remembered (0: for ever), balance
--       limit micros, "1" when the top-up has an id (KEYS[3] is only used then)
-- Returns {"ok", balance} | {"replay", stored} | {"unknown"} | {"limit", balance} | {"corrupt"}
local idempotent = ARGV[6] == '1'
if idempotent then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {'replay', seen} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
-- an account the engine cannot read (decode_account) is not written either: a script that
-- fails half-way is not rolled back, so everything is checked before the first write
local fields = redis.call('HMGET', KEYS[1], 'bal', 'ver', 'plan', 'res')
local function whole(v) return v and string.match(v, '^[+-]?%d+$') end
if not (whole(fields[1]) and whole(fields[2]) and fields[3]
        and (not fields[4] or whole(fields[4]))) then
  return {'corrupt'}  -- never guess a balance, a version or a plan
end
local amount = tonumber(ARGV[1])
local balance = tonumber(fields[1])
local reserved = tonumber(fields[4] or '0')
local negative = redis.call('HGET', KEYS[1], 'neg') == '1'
local limit = tonumber(ARGV[5])
local after = balance + amount
if after > limit or after < -limit or (amount < 0 and not negative and after < reserved) then
  return {'limit', tostring(balance)}
end
redis.call('HSET', KEYS[1], 'bal', string.format('%.0f', after))
redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'delta', ARGV[1],
           'balance', string.format('%.0f', after), 'reason', ARGV[2])
if idempotent then
  local ttl = tonumber(ARGV[4])
  if ttl > 0 then
    redis.call('SET', KEYS[3], string.format('%.0f', after), 'EX', ttl)
  else
    redis.call('SET', KEYS[3], string.format('%.0f', after))
  end
end
return {'ok', string.format('%.0f', after)}
