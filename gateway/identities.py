"""Which account a gateway's subscriber is (CONTRACT §6.2).

Gy ``Subscription-Id`` END_USER_E164 (0) is an account's ``msisdn``, END_USER_IMSI (1) its
``imsi``, END_USER_NAI (3) and END_USER_PRIVATE (4) its ``id``; Nchf ``imsi-<digits>`` an
``imsi``, ``msisdn-<digits>`` an ``msisdn``. The msisdn and imsi indexes are Redis strings
written by ``chargeflow accounts load`` (and the account API) in the same script as the
account: ``{prefix}:id:msisdn:<digits>`` and ``{prefix}:id:imsi:<digits>`` hold the account id.
"""

from __future__ import annotations

from balances.codec import Keys
from balances.redis_errors import store_errors

MSISDN, IMSI, ACCOUNT = "msisdn", "imsi", "id"
#: Gy Subscription-Id-Type -> the kind of identity it names
GY_TYPES = {0: MSISDN, 1: IMSI, 3: ACCOUNT, 4: ACCOUNT}


class Identities:
    """Look-ups of accounts by identity (an async Redis client: the doors run on asyncio)."""

    def __init__(self, client, prefix: str = "cf"):
        self.client = client  # redis.asyncio.Redis (or RedisCluster)
        self.keys = Keys(prefix)

    async def account(self, kind: str, value: str) -> str | None:
        """The account an identity names, None if none (USER_UNKNOWN)."""
        if kind == ACCOUNT:
            return value or None
        if kind not in (MSISDN, IMSI) or not value.isdigit():
            return None
        with store_errors("cannot look up a subscriber in Redis"):
            found = await self.client.get(self.keys.identity(kind, value))
        return found.decode() if isinstance(found, bytes) else found

    async def nchf_account(self, subscriber: str | None, gpsi: str | None) -> str | None:
        """Nchf ``subscriberIdentifier`` (``imsi-…``) first, then ``gpsi`` (``msisdn-…``)."""
        for text, kind, head in ((subscriber, IMSI, "imsi-"), (gpsi, MSISDN, "msisdn-")):
            if text and text.startswith(head):
                found = await self.account(kind, text[len(head):])
                if found is not None:
                    return found
        return None
