"""The account API's bodies (CONTRACT §7) as pydantic models: what FastAPI validates requests
against and writes the OpenAPI document from. Amounts are decimal strings, checked here to
whole micros within the range balances keep (a malformed one is a 422 naming its field)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from charging.decide import BALANCE_LIMIT
from charging.money import MICROS, parse_decimal
from charging.records import format_balance

AMOUNT_PATTERN = r"^[+-]?[0-9]{1,16}(\.[0-9]{1,6})?$"
_AMOUNT = re.compile(AMOUNT_PATTERN)
ACCOUNT_ID_PATTERN = r"^[^\s{}/]{1,128}$"
DIGITS_PATTERN = r"^[0-9]{1,15}$"


def micros_of(text: str) -> int:
    """Whole micros of a decimal string (ValueError with the reason otherwise)."""
    value = parse_decimal(text) * MICROS
    if value.denominator != 1:
        raise ValueError(f"{text!r} has more than 6 decimals")
    if abs(value.numerator) > BALANCE_LIMIT:
        raise ValueError(f"{text!r} is beyond ±{format_balance(BALANCE_LIMIT)}, the range "
                         "balances keep to")
    return value.numerator


def adjust_limit_micros(text: str) -> int:
    """Micros of ``--agent-adjust-limit`` (ValueError unless an amount of at least 0)."""
    if not _AMOUNT.fullmatch(text) or text.startswith("-"):
        raise ValueError(f"{text!r} is not an amount of at least 0, such as \"50.00\"")
    return micros_of(text)


def _amount(text: str) -> str:
    if not _AMOUNT.fullmatch(text):
        raise ValueError(f"{text!r} is not a decimal amount: write it like \"10.00\" or "
                         "\"-1.50\" (at most 6 decimals, no spaces or exponents)")
    micros_of(text)
    return text


Amount = Annotated[str, Field(min_length=1, max_length=40, examples=["10.00"],
                              json_schema_extra={"pattern": AMOUNT_PATTERN},
                              description="A decimal string, at most 6 decimals."),
                   AfterValidator(_amount)]
Reason = Annotated[str, Field(min_length=1, max_length=256,
                              description="Why: kept as the ledger entry's note.")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TopupBody(_Body):
    amount: Amount = Field(description="The credit, a positive decimal string (\"10.00\").")
    reason: Reason


class AdjustmentBody(_Body):
    amount: Amount = Field(description="Signed: \"-1.50\" debits, \"2.00\" credits.")
    reason: Reason


Status = Literal["active", "blocked"]
Digits = Annotated[str, Field(pattern=DIGITS_PATTERN)]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
Customer = Literal["consumer", "business"]


PlanName = Annotated[str, Field(min_length=1, max_length=128)]
Name = Annotated[str, Field(min_length=1, max_length=256)]
VatId = Annotated[str, Field(min_length=1, max_length=64)]


class AccountCreate(_Body):
    id: Annotated[str, Field(pattern=ACCOUNT_ID_PATTERN)]
    plan: PlanName
    balance: Amount = "0.00"
    status: Status = "active"
    allow_negative: bool = False
    msisdn: Digits | None = None
    imsi: Digits | None = None
    name: Name | None = None
    country: Country | None = None
    vat_id: VatId | None = None
    customer: Customer | None = None


class AccountPatch(_Body):
    """What changes; a field left out (or null) keeps its value. The balance moves only by
    top-ups and adjustments."""

    plan: PlanName | None = None
    status: Status | None = None
    allow_negative: bool | None = None
    msisdn: Digits | None = None
    imsi: Digits | None = None
    name: Name | None = None
    country: Country | None = None
    vat_id: VatId | None = None
    customer: Customer | None = None


class SessionView(BaseModel):
    session: str
    service: str
    tariff: str
    rate: str
    used: int
    granted: int
    reserved: str
    allowance_reserved: int
    last_seen_ms: int


class AccountView(BaseModel):
    """``chargeflow balance --json`` (CONTRACT §5)."""

    id: str
    plan: str
    status: str
    allow_negative: bool
    balance: str
    reserved: str
    available: str
    allowances: dict[str, int]
    allowances_reserved: dict[str, int]
    sessions: list[SessionView]


class MoneyChange(BaseModel):
    id: str = Field(description="The account.")
    amount: str
    balance: str = Field(description="The balance the change left.")
    ledger_id: str = Field(description="The ledger entry's id (its `id` in the ledger).")
    reason: str
    actor: str = Field(description="The API key that made the change.")


class LedgerEntry(BaseModel):
    cursor: str = Field(description="Pass as `after` to read the entries after this one.")
    id: str
    time_ms: int
    delta: str
    balance: str
    reason: str = Field(description="What moved the balance: open, topup, adjustment, "
                        "charge, ...")
    actor: str = Field(description="An API key id, cli, or engine.")
    note: str | None = None
    catalog_version: str | None = None


class LedgerPage(BaseModel):
    account: str
    entries: list[LedgerEntry]
    next: str | None = Field(description="The cursor of the next page, null at the end.")


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict] | None = Field(default=None, description="Validation errors: each "
                                      "names its field (`in`, `field`) and `reason`.")
