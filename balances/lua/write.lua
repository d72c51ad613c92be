-- Persist what the charging logic decided, one entry per account, each atomically and only
-- if the account is still at the version the decision was computed from.
--
-- KEYS[1]  the account hash of the first entry, for routing. Every key an entry touches
--          shares the entry's {account} hash tag and is named here from ARGV, so that on a
--          Redis Cluster one call can carry the accounts of every slot of one node.
-- ARGV     prefix, idempotency retention (s), ledger retention (ms, 0: keep every entry),
--          then the entries as one MessagePack array (one argument, decoded here in C rather
--          than thousands of arguments), each entry an array:
--            1 account
--            2 expected version ("" for an account that does not exist)
--            3 {field, value, ...}          hash fields to set (the script adds "ver"),
--                                           the requests' idempotency records among them
--                                           (i:<request id>)
--            4 {field, ...}                 hash fields to delete (ended sessions, records
--                                           past the retention)
--            5 {request_id, record, ...}    idempotency records of an account that does not
--                                           exist (expected ""): keys of their own
--            6 {{field, value, ...}, ...}   ledger entries for the account's stream
--            7 expiry key
--            8 {score, member, ...}         session deadlines to set
--            9 {member, ...}                session deadlines to drop
--           10 {record, ...}                the idempotency records of the requests that
--                                           charged, for the outbox
--           11 outbox key                   the archive's stream (docs/billing.md): one entry
--                                           per written account with ledger entries, charges
--                                           or final grants: r = {account, ledger,
--                                           final_grants?}, c1, c2, ... the records
--           12 {{id, granted, balance, after}, ...}  final grants that charged nothing,
--                                           for the outbox's r (read by the notifier, not
--                                           archived); after: the charge records before it
-- Returns {now, then the conflicts flat: entry number, hgetall, {request_id, record, ...},
-- ...}: now is the server time in µs the new versions were made from, and an entry with no
-- conflict was written. A conflict (the version moved, or a request id was decided
-- already) writes nothing for that entry. The records of an existing account live in its
-- hash, so every write that adds one moves its version: the version check alone finds a
-- request decided since the account was read (its record comes back with the hash).
--
-- Versions never repeat, even on a Redis that lost acknowledged writes (a failover to a
-- lagging replica, a restore, an OS crash under appendfsync everysec): a written account
-- gets max(expected + 1, now), never a number it had before, so a writer holding a version
-- of a forgotten write conflicts instead of overwriting what came since. The caller knows
-- the expected version and gets now: it computes the new one without another read.
-- (Exact in Lua numbers: µs since 1970 stay below 2^53 until the year 2255.)
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local entries = cmsgpack.unpack(ARGV[4])
local t = redis.call('TIME')  -- once per call: versions and the ledger's trim
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
-- Ledger entries older than the retention are trimmed as new ones are appended (MINID ~:
-- whole stream nodes only, so the cost is O(1) amortised); every entry carries the balance
-- after it, so a trimmed ledger still reconciles from its oldest entry.
local trim = nil
if tonumber(ARGV[3]) > 0 then
  trim = string.format('%.0f', math.floor(now / 1000) - tonumber(ARGV[3]))
end
local out = {now}
for i, e in ipairs(entries) do
  local tag = prefix .. ':{' .. e[1] .. '}:'
  local acct = tag .. 'acct'
  local idem = e[5]
  local ok = (redis.call('HGET', acct, 'ver') or '') == e[2]
  local taken = 0
  if ok and #idem > 0 then  -- no account: claim the ids; a claimed one was decided before
    for k = 1, #idem, 2 do
      if not redis.call('SET', tag .. 'idem:' .. idem[k], idem[k + 1], 'NX', 'EX', ttl) then
        ok = false
        break
      end
      taken = k + 1
    end
  end
  if not ok then
    for k = 1, taken, 2 do redis.call('DEL', tag .. 'idem:' .. idem[k]) end
    local hits = {}
    for k = 1, #idem, 2 do
      local seen = redis.call('GET', tag .. 'idem:' .. idem[k])
      if seen then hits[#hits + 1] = idem[k]; hits[#hits + 1] = seen end
    end
    out[#out + 1] = i
    out[#out + 1] = redis.call('HGETALL', acct)
    out[#out + 1] = hits
  else
    local set = e[3]
    if #set > 0 then  -- the account changed: a new version with it
      set[#set + 1] = 'ver'
      set[#set + 1] = string.format('%.0f', math.max(tonumber(e[2]) + 1, now))
      redis.call('HSET', acct, unpack(set))
    end
    if #e[4] > 0 then redis.call('HDEL', acct, unpack(e[4])) end
    local ledger = tag .. 'ledger'
    for _, fields in ipairs(e[6]) do
      if trim then
        redis.call('XADD', ledger, 'MINID', '~', trim, '*', unpack(fields))
      else
        redis.call('XADD', ledger, '*', unpack(fields))
      end
    end
    if #e[8] > 0 then redis.call('ZADD', e[7], unpack(e[8])) end
    if #e[9] > 0 then redis.call('ZREM', e[7], unpack(e[9])) end
    local finals = e[12] or {}
    if #e[6] > 0 or #e[10] > 0 or #finals > 0 then  -- in the same atomic step: no dual write
      -- the records are binary (MessagePack): fields of their own, c1, c2, ...; final grants
      -- are text, in r, which readers that do not know them skip (no new field to refuse)
      local r = {account = e[1], ledger = e[6]}
      if #finals > 0 then r.final_grants = finals end
      local entry = {'r', cmsgpack.pack(r)}
      for k, record in ipairs(e[10]) do
        entry[#entry + 1] = 'c' .. k
        entry[#entry + 1] = record
      end
      if trim then
        redis.call('XADD', e[11], 'MINID', '~', trim, '*', unpack(entry))
      else
        redis.call('XADD', e[11], '*', unpack(entry))
      end
    end
  end
end
return out
