"""Helpers for the ``charging.decide`` tests: the sample catalog, request and account
builders, and exact expected amounts from the reference rater (never from ``decide``).

Every amount the tests expect is either written out by hand (with the arithmetic in a
comment) or computed with ``charging.reference`` in Fractions and converted to micros.
"""

from __future__ import annotations

import copy
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import charging
from charging import reference
from charging.catalog import Catalog, Rate, Tariff, parse_catalog
from charging.compiler import CompiledCatalog, compile_catalog
from charging.decide import FixedCatalogs, Outcome, decide_batch
from charging.money import to_micros
from charging.requests import Request, parse, parse_rfc3339
from charging.state import Account, Bucket

SAMPLE_PATH = Path(charging.__file__).parent / "samples" / "catalog.yaml"
SAMPLE_TEXT = SAMPLE_PATH.read_text(encoding="utf-8")

PLAN = "PREPAID_S"
VERSION = "2026-11-a"
TUE_10 = "2026-11-24T10:00:00+01:00"  # Tuesday, inside the `peak` band (Europe/Berlin)
SAT_10 = "2026-11-28T10:00:00+01:00"  # Saturday: no peak
MOBILE = "4917612345"  # DE_MOBILE: mobile_peak on weekdays 08-20, else mobile
LANDLINE = "4930123"  # only the catch-all rate `other` matches
NOW = 1_795_000_000_000  # engine clock (epoch ms) for the tests' batches
MiB = 1_048_576
GiB = 1_073_741_824

# The sample catalog with one more plan that does not price sms.
NOSMS_TEXT = SAMPLE_TEXT + "  NOSMS:\n    tariffs: {voice: VOICE_STD, data: DATA_STD}\n"

_OTHER_RATE = ('      - id: other\n'
               '        steps: [{from: 0, price: "0.20", per: 60, increment: 60}]\n')
assert _OTHER_RATE in SAMPLE_TEXT, "the sample catalog changed; update decide_helpers"
# The sample catalog whose voice tariff has no catch-all rate: only DE_MOBILE numbers rate.
NO_CATCH_ALL_TEXT = SAMPLE_TEXT.replace(_OTHER_RATE, "")


def load(text: str) -> tuple[Catalog, CompiledCatalog, FixedCatalogs]:
    cat = parse_catalog(text)
    cc = compile_catalog(cat)
    return cat, cc, FixedCatalogs(cc)


SAMPLE, COMPILED, CATALOGS = load(SAMPLE_TEXT)


def ms(ts: str) -> int:
    out = parse_rfc3339(ts)
    assert out is not None, ts
    return out


def eur(text: str) -> int:
    """Micros of a decimal string: ``eur("0.1515") == 151500``."""
    return int(Decimal(text) * 1_000_000)


def amount(text: str) -> int:
    """Micros of a decision / charge amount string (``"0"`` allowed)."""
    d = Decimal(text)
    m = d * 1_000_000
    assert m == m.to_integral_value(), f"{text!r} is not a whole number of micros"
    return int(m)


def req(rid: str, kind: str, *, account: str = "a", service: str = "voice", ts: str = TUE_10,
        destination: str | None = MOBILE, session: str | None = None, seq: int | None = None,
        **extra) -> Request:
    """A validated request (through ``charging.requests.parse``, as the engine gets it)."""
    obj: dict = {"id": rid, "kind": kind, "account": account, "service": service, "ts": ts}
    if destination is not None:
        obj["destination"] = destination
    if kind != "event":
        obj["session"] = session if session is not None else "s"
        obj["seq"] = seq if seq is not None else (0 if kind == "initial" else 1)
    obj.update(extra)
    return parse(obj)


def account(balance: str = "10.00", *, aid: str = "a", plan: str = PLAN, **kw) -> Account:
    return Account(id=aid, plan=plan, balance=eur(balance), **kw)


def decide(requests: list[Request], accounts: dict, *, now: int = NOW,
           previous: dict | None = None, catalogs: FixedCatalogs = CATALOGS):
    return decide_batch(requests, accounts, catalogs, now, previous)


def one(request: Request, acct: Account | None, *, now: int = NOW, previous: dict | None = None,
        catalogs: FixedCatalogs = CATALOGS) -> Outcome:
    """Decide a single request against one account (``acct.id`` or the request's account)."""
    accounts = {request.account: acct}
    outcomes, _ = decide([request], accounts, now=now, previous=previous, catalogs=catalogs)
    assert len(outcomes) == 1
    return outcomes[0]


# -- reference amounts -----------------------------------------------------------------------

def tariff_rate(service: str, ts: str = TUE_10, destination: str | None = MOBILE,
                catalog: Catalog = SAMPLE, plan: str = PLAN) -> tuple[Tariff, Rate]:
    tariff = reference.tariff_for(catalog, plan, service)
    return tariff, reference.select_rate(catalog, tariff, ms(ts), destination)


def ref_cost(service: str, used: int, ts: str | int = TUE_10,
             destination: str | None = MOBILE, catalog: Catalog = SAMPLE,
             plan: str = PLAN) -> int:
    """Micros of the one-off rating of ``used`` units (CONTRACT §4.1), by the reference;
    ``ts`` is RFC 3339 text or epoch ms."""
    ts_ms = ts if isinstance(ts, int) else ms(ts)
    rated = reference.rate_usage(catalog, plan, service, ts_ms, destination, used)
    return to_micros(rated.cost)


def ref_units(tariff: Tariff, rate: Rate, used: int) -> tuple[int, int]:
    """(cost micros, rated units) of ``used`` units at a fixed rate, by the reference."""
    cost, rated = reference.rate_units(tariff, rate, used)
    return to_micros(cost), rated


def ref_step(tariff: Tariff, rate: Rate, before: int, after: int) -> int:
    """Micros of rating(after) − rating(before) by the reference."""
    return to_micros(reference.step_cost(tariff, rate, before, after))


def micros_fraction(m: int) -> Fraction:
    return Fraction(m, 1_000_000)


# -- state checks ----------------------------------------------------------------------------

def check_held(acct: Account) -> None:
    """Money held: reserved == Σ open sessions' money; no overdraft unless allowed; the
    allowance held per bucket equals what the sessions hold of it."""
    assert acct.reserved == sum(s.money_reserved for s in acct.sessions.values()), (
        acct.reserved, {k: s.money_reserved for k, s in acct.sessions.items()})
    if not acct.allow_negative:
        assert acct.balance >= 0, acct.balance
        assert acct.balance - acct.reserved >= 0, (acct.balance, acct.reserved)
    for service, buckets in acct.allowances.items():
        for k, bucket in enumerate(buckets):
            held = sum(s.allowance_reserved[k] for s in acct.sessions.values()
                       if s.service == service and k < len(s.allowance_reserved))
            assert bucket.reserved == held, (service, k, bucket.reserved, held)
            assert 0 <= bucket.reserved <= bucket.units, (service, k, bucket)


def snapshot(acct: Account | None) -> Account | None:
    return copy.deepcopy(acct)


def data_bucket(units: int, period: str = "2026-11", reserved: int = 0) -> dict:
    return {"data": [Bucket(units=units, reserved=reserved, period=period)]}
