"""The charging data contexts of the Nchf door, in Redis (CONTRACT §6.1, §6.4, §6.5).

Any gateway instance may serve any message of a ChargingDataRef, so a context lives in one
Redis hash, ``{prefix}:nchf:{<ref>}``, with a TTL renewed by every message:

    account       the account the create's subscriber named
    state         open | released
    n             the number of the context's last message (the create is 0)
    slot:<0..7>   "<digest> <n>" of the last 8 messages: a retransmission is found by its body
    last_iseq     invocationSequenceNumber of the last message, last_n its number
    rg:<rg>       the message number that opened the rating group's chargeflow session

A message gets its number here, once: the same body again (a retransmission, flagged or
not), or a flagged retransmission of the last message (same invocationSequenceNumber), gets
the number it had. Request ids are built from the ref, the rating group and that number
(``nchf:<ref>:<rg>:<n>``), so a retransmission sends the engine the ids it saw already and
gets their first decisions back, with nothing changed (§3.1). invocationSequenceNumber alone
cannot serve: SMFs in the field send 0 on every message.

Every call is one Lua script on the one key (so it also runs on a Redis Cluster).
"""

from __future__ import annotations

from dataclasses import dataclass

from balances.redis_errors import store_errors

SLOTS = 8

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'account', ARGV[1], 'state', 'open', 'n', 0,
           'slot:0', ARGV[2] .. ' 0', 'last_iseq', ARGV[3], 'last_n', 0)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# ARGV: digest, flagged (0|1), invocationSequenceNumber, kind (update|release), ttl, rgs...
# -> {account, n, replay, {rg, opened-at}...} or {} when the context is gone or released
_ADMIT = """
local ctx = KEYS[1]
if redis.call('EXISTS', ctx) == 0 then return {} end
local digest, flagged, iseq, kind = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local n = nil
for s = 0, __SLOTS__ - 1 do
  local v = redis.call('HGET', ctx, 'slot:' .. s)
  if v then
    local d, m = string.match(v, '^(%S+) (%d+)$')
    if d == digest then n = m end
  end
end
if not n and flagged == '1' and redis.call('HGET', ctx, 'last_iseq') == iseq then
  n = redis.call('HGET', ctx, 'last_n')
end
local replay = 1
if not n then
  if redis.call('HGET', ctx, 'state') ~= 'open' then return {} end
  replay = 0
  n = tostring(redis.call('HINCRBY', ctx, 'n', 1))
  redis.call('HSET', ctx, 'slot:' .. (tonumber(n) % __SLOTS__), digest .. ' ' .. n,
             'last_iseq', iseq, 'last_n', n)
  if kind == 'release' then redis.call('HSET', ctx, 'state', 'released') end
end
redis.call('EXPIRE', ctx, ARGV[5])
local out = {redis.call('HGET', ctx, 'account'), n, replay}
local rgs = {}
for i = 6, #ARGV do rgs[ARGV[i]] = true end
if kind == 'release' then
  local all = redis.call('HGETALL', ctx)
  for i = 1, #all, 2 do
    local rg = string.match(all[i], '^rg:(%d+)$')
    if rg then rgs[rg] = true end
  end
end
for rg in pairs(rgs) do
  local at = redis.call('HGET', ctx, 'rg:' .. rg)
  if not at and kind == 'update' then
    at = n
    redis.call('HSET', ctx, 'rg:' .. rg, n)
  end
  table.insert(out, rg)
  table.insert(out, at or '-1')
end
return out
""".replace("__SLOTS__", str(SLOTS))

# ARGV: n, rgs...: the rating groups whose initial of message n was refused are closed again
_UNOPEN = """
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], 'rg:' .. ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], 'rg:' .. ARGV[i])
  end
end
return 1
"""


@dataclass(frozen=True)
class Admitted:
    """A message of a context, numbered: ``opened[rg]`` is the number of the message that
    opened the rating group's session (== ``n``: this one opens it; -1: never opened)."""

    account: str
    n: int
    replay: bool
    opened: dict[int, int]


class Contexts:
    """The door's contexts in Redis (an asyncio client), keys under ``{prefix}:nchf:``."""

    def __init__(self, client, prefix: str = "cf", ttl_s: int = 86_400):
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self._create = client.register_script(_CREATE)
        self._admit = client.register_script(_ADMIT)
        self._unopen = client.register_script(_UNOPEN)

    def key(self, ref: str) -> str:
        return f"{self.prefix}:nchf:{{{ref}}}"

    def create_key(self, digest: str) -> str:
        return f"{self.prefix}:nchf:create:{digest}"

    async def claim_create(self, digest: str, ref: str) -> str:
        """The ref of a create body: ``ref`` if this body is new, else the ref it got."""
        with store_errors("cannot record an Nchf create in Redis"):
            if await self.client.set(self.create_key(digest), ref, nx=True, ex=self.ttl_s):
                return ref
            found = await self.client.get(self.create_key(digest))
        if found is None:  # expired between the two calls: a new create after all
            return await self.claim_create(digest, ref)
        return found.decode() if isinstance(found, bytes) else found

    async def create(self, ref: str, account: str, digest: str, iseq: int) -> bool:
        """Open the context (message 0); False if it exists already (a replayed create)."""
        with store_errors("cannot open an Nchf context in Redis"):
            return bool(await self._create(keys=[self.key(ref)],
                                           args=[account, digest, iseq, self.ttl_s]))

    async def admit(self, ref: str, digest: str, flagged: bool, iseq: int, kind: str,
                    rgs: list[int]) -> Admitted | None:
        """Number a message (``kind`` update or release, or create for message 0's units);
        None when the context is unknown, expired, or released (and this is not a
        retransmission of a message it had)."""
        with store_errors("cannot read an Nchf context in Redis"):
            out = await self._admit(keys=[self.key(ref)],
                                    args=[digest, int(flagged), iseq, kind, self.ttl_s,
                                          *map(str, rgs)])
        if not out:
            return None
        account, n, replay, *pairs = (x.decode() if isinstance(x, bytes) else x for x in out)
        opened = {int(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}
        return Admitted(account, int(n), bool(int(replay)), opened)

    async def unopen(self, ref: str, n: int, rgs: list[int]) -> None:
        """The initials of message ``n`` for ``rgs`` were refused: no session was left."""
        if rgs:
            with store_errors("cannot update an Nchf context in Redis"):
                await self._unopen(keys=[self.key(ref)], args=[n, *map(str, rgs)])
