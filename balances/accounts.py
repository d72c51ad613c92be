"""Account files (CONTRACT §4): a YAML list or JSONL of ``{id, plan, balance, status,
allow_negative}``, optionally ``msisdn`` and ``imsi`` (§6.2) and ``name``, ``country``,
``vat_id``, ``customer`` (§8.2), validated as a whole, every problem listed with where it is;
a key not among these is one, with the key likely meant.

Loading is all-or-nothing: nothing is written unless every record is valid. A new account is
created with its balance and an ``open`` ledger entry for it; an account that exists keeps its
balance, reservations and sessions (balances move only through ledgered operations such as
``topup``) and takes the file's plan, status and allow_negative.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import orjson
import yaml

from charging.catalog import Catalog
from charging.decide import BALANCE_LIMIT
from charging.errors import Problem
from charging.money import MICROS, parse_decimal
from charging.state import ACTIVE, BLOCKED
from charging.untrusted import describe
from charging.yamlio import load_yaml, unknown_key

_KNOWN = ("id", "plan", "balance", "status", "allow_negative", "msisdn", "imsi", "name",
          "country", "vat_id", "customer")
_ID = re.compile(r"[^\s{}]{1,128}")  # fullmatch: "$" would let a trailing newline through
_DIGITS = re.compile(r"[0-9]{1,15}")  # an E.164 number or an IMSI: at most 15 digits
_COUNTRY = re.compile(r"[A-Z]{2}")  # ISO 3166-1 alpha-2 (its format; the list is billing's)
CUSTOMERS = ("consumer", "business")


@dataclass(frozen=True)
class AccountSpec:
    id: str
    plan: str
    balance: int  # micros
    status: str = ACTIVE
    allow_negative: bool = False
    # identities (CONTRACT §6.2) and billing fields (§8.2); None where the file gives none
    msisdn: str | None = None  # digits
    imsi: str | None = None  # digits
    name: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    vat_id: str | None = None
    customer: str | None = None  # consumer | business


ATTRIBUTES = ("name", "country", "vat_id", "customer", "msisdn", "imsi")


def account_attributes(spec: AccountSpec) -> dict[str, str]:
    """The attributes an account file gives (identities and billing fields), by name."""
    return {k: v for k in ATTRIBUTES if (v := getattr(spec, k)) is not None}


class AccountsFileError(Exception):
    def __init__(self, problems: list[Problem], source: str):
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def read_accounts(path: str | Path, catalog: Catalog | None) -> list[AccountSpec]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")  # a byte-order mark is not content
    except (OSError, UnicodeDecodeError) as exc:
        raise AccountsFileError([Problem("", f"cannot read {p}: {exc}")], str(p)) from exc
    return parse_accounts(text, catalog, source=str(p))


def parse_accounts(text: str, catalog: Catalog | None, source: str = "accounts"
                   ) -> list[AccountSpec]:
    """Every record of the file, or ``AccountsFileError`` listing every problem."""
    records, problems = _records(text)
    if catalog is None:
        problems.append(Problem("", "no catalog is loaded: run `chargeflow catalog load FILE` "
                                "first, so plans can be checked"))
    specs: list[AccountSpec] = []
    seen: dict[str, str] = {}
    identities: dict[tuple[str, str], tuple[str, str]] = {}  # (kind, digits) -> (id, where)
    for where, rec in records:
        spec = _spec(where, rec, catalog, problems)
        if spec is None:
            continue
        if spec.id in seen:
            problems.append(Problem(where, f"account {spec.id!r} is listed twice (also at "
                                    f"{seen[spec.id]})"))
            continue
        seen[spec.id] = where
        clash = False
        for kind, digits in (("msisdn", spec.msisdn), ("imsi", spec.imsi)):
            if digits is None:
                continue
            owner = identities.setdefault((kind, digits), (spec.id, where))
            if owner[0] != spec.id:
                problems.append(Problem(f"{where}.{kind}", f"{kind} {digits!r} is also account "
                                        f"{owner[0]!r}'s (at {owner[1]}); it names one account"))
                clash = True
        if not clash:
            specs.append(spec)
    if not records and not problems:
        problems.append(Problem("", "the file lists no accounts"))
    if problems:
        raise AccountsFileError(problems, source)
    return specs


def _records(text: str) -> tuple[list[tuple[str, object]], list[Problem]]:
    stripped = text.lstrip()
    if stripped.startswith("{"):  # JSONL
        out, problems = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = orjson.loads(line)
                if isinstance(rec, dict):
                    _no_key_twice(line)
                out.append((f"line {n}", rec))
            except orjson.JSONDecodeError as exc:
                problems.append(Problem(f"line {n}", f"not valid JSON: {exc}"))
            except _KeyTwice as exc:
                problems.append(Problem(f"line {n}", f"key {exc.args[0]!r} is given twice; "
                                        "give each field once"))
            except RecursionError:  # the stdlib parser nests less deeply than orjson
                problems.append(Problem(f"line {n}", "nested too deeply; an account is a "
                                        "flat record"))
        return out, problems
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        return [], [Problem("", f"neither JSONL nor valid YAML: {exc}")]
    if isinstance(doc, dict) and isinstance(doc.get("accounts"), list):
        doc = doc["accounts"]
    if not isinstance(doc, list):
        return [], [Problem("", "expected a YAML list of accounts (or JSONL, one per line)")]
    return [(f"[{i}]", rec) for i, rec in enumerate(doc)], []


class _KeyTwice(Exception):
    pass


def _no_key_twice(line: str) -> None:
    """Raise ``_KeyTwice`` if a JSON object of ``line`` names a key twice (orjson keeps the
    last silently; a YAML file's duplicate keys are an error, so these are too)."""

    def pairs(items: list[tuple[str, object]]) -> dict:
        seen: dict = {}
        for key, value in items:
            if key in seen:
                raise _KeyTwice(key)
            seen[key] = value
        return seen

    json.loads(line, object_pairs_hook=pairs)


def _spec(where: str, rec: object, catalog: Catalog | None, problems: list[Problem]
          ) -> AccountSpec | None:
    if not isinstance(rec, dict):
        problems.append(Problem(where, f"expected a mapping with {', '.join(_KNOWN)}"))
        return None
    start = len(problems)
    aid = rec.get("id")
    if not isinstance(aid, str) or not _ID.fullmatch(aid):
        problems.append(Problem(f"{where}.id", f"{describe(aid)} must be 1-128 characters without "
                                "spaces or braces"))
    plan = rec.get("plan")
    if not isinstance(plan, str):
        problems.append(Problem(f"{where}.plan", f"is required, got {describe(plan)}"))
    elif catalog is not None and plan not in catalog.plans:
        problems.append(Problem(f"{where}.plan", f"plan {plan!r} is not in catalog "
                                f"{catalog.version!r} (plans: {', '.join(catalog.plans)})"))
    balance = _balance(rec.get("balance", "0"), f"{where}.balance", problems)
    status = rec.get("status", ACTIVE)
    if status not in (ACTIVE, BLOCKED):
        problems.append(Problem(f"{where}.status", f"{describe(status)} is not active or blocked"))
    neg = rec.get("allow_negative", False)
    if not isinstance(neg, bool):
        problems.append(Problem(f"{where}.allow_negative",
                                f"must be true or false, got {describe(neg)}"))
    msisdn = _digits(rec, "msisdn", where, problems)
    imsi = _digits(rec, "imsi", where, problems)
    name = _text(rec, "name", where, 256, problems)
    vat_id = _text(rec, "vat_id", where, 64, problems)
    country = rec.get("country")
    if country is not None and not (isinstance(country, str) and _COUNTRY.fullmatch(country)):
        problems.append(Problem(f"{where}.country", f"{describe(country)} is not an ISO 3166 "
                                "alpha-2 country code such as DE (two capital letters)"))
    customer = rec.get("customer")
    if customer is not None and customer not in CUSTOMERS:
        problems.append(Problem(f"{where}.customer",
                                f"{describe(customer)} is not consumer or business"))
    for key in rec:
        if key not in _KNOWN:
            problems.append(Problem(where, unknown_key(key, _KNOWN)))
    if len(problems) > start or balance is None:
        return None
    return AccountSpec(aid, plan, balance, status, neg, msisdn, imsi, name, country, vat_id,
                       customer)


def _digits(rec: dict, key: str, where: str, problems: list[Problem]) -> str | None:
    """An identity of 1-15 digits; an unquoted YAML or JSON number is read as its digits
    (the YAML loader keeps leading zeros as text, so none are lost)."""
    val = rec.get(key)
    if val is None:
        return None
    text = str(val) if isinstance(val, int) and not isinstance(val, bool) and val >= 0 else val
    if not isinstance(text, str) or not _DIGITS.fullmatch(text):
        problems.append(Problem(f"{where}.{key}", f"{describe(val)} must be 1-15 digits (no '+', "
                                "spaces or dashes)"))
        return None
    return text


def _text(rec: dict, key: str, where: str, limit: int, problems: list[Problem]) -> str | None:
    val = rec.get(key)
    if val is None:
        return None
    if not isinstance(val, str) or not val.strip() or len(val) > limit:
        problems.append(Problem(f"{where}.{key}", f"must be a text of 1-{limit} characters, "
                                f"got {describe(val)}"))
        return None
    return val


def _balance(value: object, where: str, problems: list[Problem]) -> int | None:
    try:
        amount = parse_decimal(value)
    except ValueError as exc:
        problems.append(Problem(where, str(exc)))
        return None
    micros = amount * MICROS
    if micros.denominator != 1:
        problems.append(Problem(where, f"{describe(value)} has more than 6 decimals"))
        return None
    if abs(micros.numerator) > BALANCE_LIMIT:
        problems.append(Problem(where,
                                f"{describe(value)} is outside ±{BALANCE_LIMIT / MICROS:,.0f}"))
        return None
    return micros.numerator
