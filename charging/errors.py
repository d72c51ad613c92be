"""One error hierarchy for chargeflow, with stable codes that match CONTRACT.md.

    ChargeflowError                      code
    ├── CatalogError                     CATALOG_INVALID   (carries every problem found)
    ├── RequestError                     a reject code: INVALID_JSON, MISSING_FIELD, ...
    ├── RatingError                      a §3.1 result code: RATING_FAILED, END_USER_SERVICE_DENIED
    ├── StoreError                       STORE_UNAVAILABLE (balances layer)
    ├── CorruptAccountError              ACCOUNT_CORRUPT (an account's state unreadable)
    └── BrokerError                      BROKER_UNAVAILABLE (streaming layer)

Lower-level exceptions (yaml, orjson, redis, confluent_kafka) are translated into these in
one place each, with ``raise ... from exc`` so the cause stays visible.
"""

from __future__ import annotations

from dataclasses import dataclass


class ChargeflowError(Exception):
    """Base of every error chargeflow raises on purpose."""

    code = "CHARGEFLOW_ERROR"


@dataclass(frozen=True)
class Problem:
    """One catalog problem: where it is (a YAML path such as ``tariffs.V.rates[0]``) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class CatalogError(ChargeflowError):
    """The catalog is invalid; ``problems`` lists every problem, not just the first."""

    code = "CATALOG_INVALID"

    def __init__(self, problems: list[Problem], source: str = "catalog"):
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class RequestError(ChargeflowError):
    """A request that cannot be processed as sent; ``code`` is the reject code."""

    def __init__(self, code: str, detail: str, request_id: str | None = None):
        self.code = code
        self.detail = detail
        self.request_id = request_id
        super().__init__(f"{code}: {detail}")


class RatingError(ChargeflowError):
    """A well-formed request the catalog cannot rate; ``code`` is a CONTRACT §3.1 result."""

    def __init__(self, code: str, detail: str):
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


class StoreError(ChargeflowError):
    code = "STORE_UNAVAILABLE"


class DataDirError(ChargeflowError, ValueError):
    """A data directory the embedded services cannot use (wrong input: exit 1)."""

    code = "BAD_DATA_DIR"


class CorruptAccountError(ChargeflowError):
    """An account's state in Redis cannot be read (a field missing or malformed). Not an
    outage: waiting would not mend it, so it is not a ``StoreError``; the engine rejects
    that account's requests and goes on."""

    code = "ACCOUNT_CORRUPT"

    def __init__(self, account: str, detail: str):
        self.account = account
        super().__init__(f"account {account!r} in Redis cannot be read: {detail}")


class BrokerError(ChargeflowError):
    code = "BROKER_UNAVAILABLE"
