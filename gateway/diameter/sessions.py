"""What the gateways keep of a Diameter session, in Redis, so that any gateway instance may
serve any CCR of it (CONTRACT §6.1): the account the CCR-I named (a CCR-U or CCR-T need not
carry Subscription-Id), the rating groups the engine holds a session of (a CCR-T ends them
all, also those it does not list), and the CC-Request-Number of the CCR-T that ended it (a
CCR-U after it is an unknown session; that CCR-T sent again is answered again).

    {prefix}:gy:<Session-Id or its digest>   hash  a -> account, rg:<n> -> service, end -> n

Each write replaces the hash in one script with its time to live: a day, or three times
the longest validity of the catalog when that is longer (the engine releases a silent session
after twice its validity, so the record outlives it); after a CCR-T an hour, long enough for
the client's retransmissions (RFC 4006 Tx is 10 s).
"""

from __future__ import annotations

from balances.redis_errors import store_errors
from gateway.diameter.gy import Record, session_key

DAY_S = 86_400
ENDED_S = 3_600


_REPLACE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""


class GySessions:
    def __init__(self, client, prefix: str = "cf"):
        self.client = client  # redis.asyncio.Redis (or RedisCluster)
        self.prefix = prefix
        self._replace = client.register_script(_REPLACE)

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:gy:{session_key(session_id)}"

    async def get(self, session_id: str) -> Record | None:
        with store_errors("cannot read a Diameter session from Redis"):
            raw = await self.client.hgetall(self.key(session_id))
        if not raw:
            return None
        fields = {_text(k): _text(v) for k, v in raw.items()}
        if "a" not in fields:
            return None
        open_ = {int(k[3:]): v for k, v in fields.items()
                 if k.startswith("rg:") and k[3:].isdigit()}
        end = fields.get("end")
        return Record(fields["a"], open_, int(end) if end and end.isdigit() else None)

    async def put(self, session_id: str, record: Record, max_validity_s: int = 0) -> None:
        mapping = {"a": record.account, **{f"rg:{rg}": svc for rg, svc in record.open.items()}}
        if record.ended is not None:
            mapping["end"] = str(record.ended)
        ttl = ENDED_S if record.ended is not None else max(DAY_S, 3 * max_validity_s)
        key = self.key(session_id)
        args = [ttl] + [x for pair in mapping.items() for x in pair]
        with store_errors("cannot write a Diameter session to Redis"):
            await self._replace(keys=[key], args=args)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
