-- Credit (or, with a negative amount, debit) an account's balance, ledgered, idempotent.
-- KEYS[1] account hash, KEYS[2] ledger stream, KEYS[3] the top-up's idempotency key,
-- KEYS[4] the outbox stream (the archive's: docs/billing.md)
-- ARGV: amount micros, reason ("topup", "adjustment"), id, seconds the id is remembered (0:
--       for ever), balance limit micros, "1" when the top-up has an id (KEYS[3] is only used
--       then), the actor (an API key id, "cli"), a note (free text, may be empty), the account
-- A top-up without an id is ledgered as "<reason>:<the account's new version>" (unique: a
-- version is never given twice). The ledger entry is also appended to the outbox, in this
-- same atomic step.
-- An id is remembered with the balance its top-up left and its amount, "<balance> <amount>"
-- (records written before the amount was kept hold the balance alone: such an id replays
-- whatever the amount).
-- Returns, with amounts as decimal strings of micros:
--   {"ok", balance}                     applied
--   {"replay", balance then, amount}    the id was applied before with this amount
--   {"conflict", balance then, amount}  the id was applied before with another amount
--   {"unknown"}                         no such account
--   {"limit", balance}                  the balance would leave ±limit
--   {"negative", balance, reserved}     a debit below zero, the account may not go negative
--   {"reserved", balance, reserved}     a debit of money open sessions hold
--   {"corrupt"}                         a field it needs is missing or unreadable
-- Nothing is written unless "ok".
local idempotent = ARGV[6] == '1'
if idempotent then
  local seen = redis.call('GET', KEYS[3])
  if seen then
    local balance_then, amount_then = string.match(seen, '^(%S+) (%S+)$')
    if not balance_then then return {'replay', seen} end
    if amount_then ~= ARGV[1] then return {'conflict', balance_then, amount_then} end
    return {'replay', balance_then, amount_then}
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
-- an account the engine cannot read (decode_account) is not written either: a script that
-- fails half-way is not rolled back, so everything is checked before the first write
local fields = redis.call('HMGET', KEYS[1], 'bal', 'ver', 'plan', 'res', 'neg')
local function whole(v) return v and string.match(v, '^[+-]?%d+$') end
-- the version as the engine writes it: digits, no sign or leading zero, below 2^53 - 1 so
-- that it and the next are exact Lua numbers
local function version(v)
  if not (v and (v == '0' or string.match(v, '^[1-9]%d*$'))) then return nil end
  local n = tonumber(v)
  return n < 9007199254740991 and n
end
local ver = version(fields[2])
local ledger_type = redis.call('TYPE', KEYS[2])['ok']
if not (whole(fields[1]) and ver and fields[3]
        and (not fields[4] or whole(fields[4]))
        and (ledger_type == 'none' or ledger_type == 'stream')) then
  return {'corrupt'}  -- never guess a balance, a version or a plan
end
local amount = tonumber(ARGV[1])
local balance = tonumber(fields[1])
local reserved = tonumber(fields[4] or '0')
local negative = fields[5] == '1'
local limit = tonumber(ARGV[5])
local after = balance + amount
-- the stored strings go back, not tostring(): Lua would write 1e+15 for large numbers
if after > limit or after < -limit then return {'limit', fields[1]} end
if amount < 0 and not negative then
  if after < 0 then return {'negative', fields[1], fields[4] or '0'} end
  if after < reserved then return {'reserved', fields[1], fields[4] or '0'} end
end
-- a version never given before (lua/write.lua): the engine's cached state of the account,
-- whatever Redis forgot, can no longer pass the version check
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- checked above: none of the writes can fail
local new_ver = string.format('%.0f', math.max(ver + 1, now))
redis.call('HSET', KEYS[1], 'bal', string.format('%.0f', after), 'ver', new_ver)
local entry = {'id', ARGV[3] ~= '' and ARGV[3] or (ARGV[2] .. ':' .. new_ver),
               'delta', ARGV[1], 'balance', string.format('%.0f', after), 'reason', ARGV[2],
               'actor', ARGV[7]}
if ARGV[8] ~= '' then
  entry[#entry + 1] = 'note'
  entry[#entry + 1] = ARGV[8]
end
redis.call('XADD', KEYS[2], '*', unpack(entry))
redis.call('XADD', KEYS[4], '*', 'r', cmsgpack.pack({account = ARGV[9], ledger = {entry}}))
if idempotent then
  local remembered = string.format('%.0f', after) .. ' ' .. ARGV[1]
  if ARGV[4] ~= '0' then  -- whole seconds from 1 to MAX_ID_RETENTION_S (BalanceStore.topup)
    redis.call('SET', KEYS[3], remembered, 'EX', ARGV[4])
  else
    redis.call('SET', KEYS[3], remembered)
  end
end
return {'ok', string.format('%.0f', after)}
