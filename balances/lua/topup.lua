-- Credit (or, with a negative amount, debit) an account's balance, ledgered, idempotent.
-- KEYS[1] account hash, KEYS[2] ledger stream, KEYS[3] the top-up's idempotency key
-- ARGV: amount micros, reason, id, idempotency retention s, balance limit micros,
--       "1" when the top-up has an id (KEYS[3] is only used then)
-- Returns {"ok", balance} | {"replay", stored} | {"unknown"} | {"limit", balance} | {"corrupt"}
local idempotent = ARGV[6] == '1'
if idempotent then
  local seen = redis.call('GET', KEYS[3])
  if seen then return {'replay', seen} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
local amount = tonumber(ARGV[1])
local balance = tonumber(redis.call('HGET', KEYS[1], 'bal'))
if not balance then return {'corrupt'} end  -- no readable balance: never guess one
local reserved = tonumber(redis.call('HGET', KEYS[1], 'res') or '0')
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
  redis.call('SET', KEYS[3], string.format('%.0f', after), 'EX', tonumber(ARGV[4]))
end
return {'ok', string.format('%.0f', after)}
