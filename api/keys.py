"""API keys (CONTRACT §7): who may call the account API, in which role.

A key is ``cfk_<id>_<secret>``: ``id`` (12 hex digits) names it in ``apikey list``, in
ledger entries (the actor) and in logs; ``secret`` is 32 random bytes (256 bits, URL-safe
base64). Redis keeps, per key, the hash ``{prefix}:apikey:<id>`` with the SHA-256 of the
whole key, its role, account, name and times, and the set ``{prefix}:apikeys`` of ids; the
key itself is shown once, by ``apikey create``, and stored nowhere.

Why a plain SHA-256 and not a slow password hash (bcrypt, scrypt, argon2): those exist to
make guessing a *low-entropy* secret from its hash expensive. A 256-bit random secret cannot
be guessed whatever the hash costs, so a fast hash loses nothing and keeps every request's
check to microseconds. The comparison is ``hmac.compare_digest`` (constant time), after the
id read from the key picked the record: no timing tells how much of a hash matched.

Roles: ``admin`` (everything), ``agent`` (read any account, top up, adjust up to the agent
limit), ``selfcare`` (read its own account and its ledger; another account is not found).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

import redis

from balances.redis_errors import store_errors

ADMIN, AGENT, SELFCARE = "admin", "agent", "selfcare"
ROLES = (ADMIN, AGENT, SELFCARE)
_KEY = re.compile(r"cfk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


@dataclass(frozen=True)
class ApiKey:
    """One key's record (never the key itself)."""

    id: str
    role: str
    account: str | None = None  # selfcare: the one account it may see
    name: str = ""
    created_ms: int = 0
    revoked_ms: int | None = None

    def as_json(self) -> dict:
        return {"id": self.id, "role": self.role, "account": self.account, "name": self.name,
                "created_ms": self.created_ms, "revoked_ms": self.revoked_ms}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyStore:
    """API keys in Redis (a synchronous client: the CLI, and the API's worker threads)."""

    def __init__(self, client: redis.Redis, prefix: str = "cf"):
        self.r = client
        self.prefix = prefix

    def _hash(self, key_id: str) -> str:
        return key_hash(self.prefix, key_id)

    def create(self, role: str, account: str | None = None, name: str = "",
               now_ms: int | None = None) -> tuple[ApiKey, str]:
        """A new key: (its record, the key), the key to be shown once. ValueError for a role
        not in ROLES, or an account with a role other than selfcare (or none with it)."""
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if (role == SELFCARE) != (account is not None):
            raise ValueError("a selfcare key needs --account ID (the account it may see); "
                             "admin and agent keys are bound to none")
        key_id = secrets.token_hex(6)
        key = f"cfk_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, role, account, name,
                        now_ms if now_ms is not None else int(time.time() * 1000))
        fields = {"hash": digest(key), "role": role, "account": account or "", "name": name,
                  "created_ms": record.created_ms}
        with store_errors("cannot store an API key in Redis"):
            pipe = self.r.pipeline(transaction=False)
            pipe.hset(self._hash(key_id), mapping=fields)
            pipe.sadd(f"{self.prefix}:apikeys", key_id)
            pipe.execute()
        return record, key

    def get(self, key_id: str) -> ApiKey | None:
        with store_errors("cannot read an API key from Redis"):
            raw = self.r.hgetall(self._hash(key_id))
        return _record(key_id, raw)[0] if raw else None

    def list(self) -> list[ApiKey]:
        with store_errors("cannot read API keys from Redis"):
            ids = sorted(x.decode() for x in self.r.smembers(f"{self.prefix}:apikeys"))
        found = (self.get(i) for i in ids)
        return sorted((k for k in found if k is not None), key=lambda k: (k.created_ms, k.id))

    def revoke(self, key_id: str, now_ms: int | None = None) -> ApiKey | None:
        """Revoke a key (kept, marked, so ``list`` shows it); None when there is none. A
        key revoked before keeps its first revocation time."""
        when = now_ms if now_ms is not None else int(time.time() * 1000)
        with store_errors("cannot revoke an API key in Redis"):
            if not self.r.exists(self._hash(key_id)):
                return None
            self.r.hsetnx(self._hash(key_id), "revoked_ms", when)
        return self.get(key_id)

    def verify(self, key: str) -> ApiKey | None:
        """The record of a valid, unrevoked ``key``; None for anything else."""
        key_id = parse_key(key)
        if key_id is None:
            return None
        with store_errors("cannot read an API key from Redis"):
            raw = self.r.hgetall(self._hash(key_id))
        return verified(key_id, raw, key)


def parse_key(key: str) -> str | None:
    """The id a key names, None when ``key`` is not shaped as a key."""
    m = _KEY.fullmatch(key)
    return m.group(1) if m is not None else None


def key_hash(prefix: str, key_id: str) -> str:
    """The Redis hash of key ``key_id``."""
    return f"{prefix}:apikey:{key_id}"


def verified(key_id: str, raw: dict, key: str) -> ApiKey | None:
    """The record of ``key`` from its hash's HGETALL ``raw`` when the key is valid and not
    revoked; None otherwise."""
    if not raw:
        return None
    record, stored = _record(key_id, raw)
    if not hmac.compare_digest(stored.encode(), digest(key).encode()):
        return None
    return record if record.revoked_ms is None else None


def _record(key_id: str, raw: dict) -> tuple[ApiKey, str]:
    f = {k.decode(): v.decode() for k, v in raw.items()}
    revoked = f.get("revoked_ms")
    return ApiKey(key_id, f.get("role", ""), f.get("account") or None, f.get("name", ""),
                  int(f.get("created_ms", "0")), int(revoked) if revoked else None), \
        f.get("hash", "")
