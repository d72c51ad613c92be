"""The notification rules file (docs/notifications.md), read into frozen objects.

Strict like the catalog: an unknown key, a wrong type or a malformed amount is an error
naming its YAML path (``rules[2].allowance.percent[1]``); every problem is listed at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from charging.money import MICROS, parse_decimal
from charging.yamlio import load_yaml, unknown_key

RULE_KEYS = ("id", "plan", "account", "below", "allowance", "final")
ALLOWANCE_KEYS = ("service", "percent")
WEBHOOK_KEYS = ("name", "url", "secret", "secret_file", "types")
DELIVERY_KEYS = ("tries", "backoff_s", "max_backoff_s", "timeout_s", "queue", "workers",
                 "tolerance_s")
TOP_KEYS = ("rules", "webhooks", "delivery")
TYPES = ("low_balance", "allowance_used", "final_grant")


class RulesError(ValueError):
    """The rules file is wrong; ``problems`` lists (path, reason) pairs."""

    def __init__(self, problems: Sequence[tuple[str, str]], source: str = "rules"):
        self.problems = list(problems)
        lines = "\n".join(f"  {p}: {r}" for p, r in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


@dataclass(frozen=True)
class Rule:
    """One rule. Exactly one of ``below`` (micros thresholds, descending), ``percent``
    (allowance use of ``service``, ascending) or ``final`` is set. ``plan``/``account``
    narrow it; with neither it applies to every account."""

    id: str
    plan: str | None = None
    account: str | None = None
    below: tuple[int, ...] = ()  # micros
    service: str | None = None
    percent: tuple[int, ...] = ()
    final: bool = False

    def applies(self, account: str, plan: str | None) -> bool:
        if self.account is not None and self.account != account:
            return False
        return self.plan is None or self.plan == plan


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    secret: bytes = field(repr=False)  # never shown: repr leaves it out
    types: frozenset[str] = frozenset(TYPES)


@dataclass(frozen=True)
class Delivery:
    tries: int = 5
    backoff_s: float = 0.5  # first wait; doubled after each failure
    max_backoff_s: float = 30.0
    timeout_s: float = 5.0  # per HTTP attempt
    queue: int = 1000  # events waiting for delivery before consumption pauses
    workers: int = 4
    tolerance_s: int = 300  # documented receiver tolerance (not used by the sender)


@dataclass(frozen=True)
class NotifyConfig:
    rules: tuple[Rule, ...]
    webhooks: tuple[Webhook, ...] = ()
    delivery: Delivery = Delivery()


class _Reader:
    def __init__(self, base_dir: Path):
        self.problems: list[tuple[str, str]] = []
        self.base_dir = base_dir

    def bad(self, path: str, reason: str) -> None:
        self.problems.append((path, reason))

    def mapping(self, value: object, path: str, known: Sequence[str]) -> dict | None:
        if not isinstance(value, dict):
            self.bad(path, f"expected a mapping, got {type(value).__name__}")
            return None
        for key in value:
            if key not in known:
                self.bad(f"{path}.{key}" if isinstance(key, str) else path,
                         unknown_key(key, known))
        return value

    def text(self, value: object, path: str) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.bad(path, "expected a non-empty string")
            return None
        return value

    def number(self, value: object, path: str, low: float, high: float,
               integer: bool = False) -> float | int | None:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not low <= value <= high:
            kind = "an integer" if integer else "a number"
            self.bad(path, f"expected {kind} from {low} to {high}, got {value!r}")
            return None
        return value

    def amount(self, value: object, path: str) -> int | None:
        if not isinstance(value, str):
            self.bad(path, f'expected an amount as a quoted decimal string ("5.00"), '
                           f"got {value!r}")
            return None
        try:
            micros = parse_decimal(value) * MICROS
        except ValueError as exc:
            self.bad(path, str(exc))
            return None
        if micros.denominator != 1:
            self.bad(path, f"{value!r} has more than 6 decimals")
            return None
        return int(micros)

    # -- sections
    def rule(self, raw: object, path: str) -> Rule | None:
        m = self.mapping(raw, path, RULE_KEYS)
        if m is None:
            return None
        rid = self.text(m.get("id"), f"{path}.id")
        plan = self.text(m["plan"], f"{path}.plan") if "plan" in m else None
        account = self.text(m["account"], f"{path}.account") if "account" in m else None
        kinds = [k for k in ("below", "allowance", "final") if k in m]
        if len(kinds) != 1:
            self.bad(path, "a rule needs exactly one of below, allowance, final; has "
                           f"{', '.join(kinds) or 'none'}")
            return None
        if "below" in m:
            raw_below = m["below"] if isinstance(m["below"], list) else [m["below"]]
            here = f"{path}.below"
            below = [self.amount(v, f"{here}[{i}]" if isinstance(m["below"], list) else here)
                     for i, v in enumerate(raw_below)]
            if not raw_below:
                self.bad(here, "expected at least one amount")
            if rid is None or None in below:
                return None
            return Rule(rid, plan, account, below=tuple(sorted(set(below), reverse=True)))
        if "allowance" in m:
            here = f"{path}.allowance"
            a = self.mapping(m["allowance"], here, ALLOWANCE_KEYS)
            if a is None:
                return None
            service = self.text(a.get("service"), f"{here}.service")
            pcts = a.get("percent")
            if not isinstance(pcts, list) or not pcts:
                self.bad(f"{here}.percent", "expected a list of percentages, e.g. [80, 100]")
                return None
            percent = [self.number(p, f"{here}.percent[{i}]", 1, 100, integer=True)
                       for i, p in enumerate(pcts)]
            if rid is None or service is None or None in percent:
                return None
            return Rule(rid, plan, account, service=service, percent=tuple(sorted(set(percent))))
        if m["final"] is not True:
            self.bad(f"{path}.final", f"expected true, got {m['final']!r}")
            return None
        return None if rid is None else Rule(rid, plan, account, final=True)

    def webhook(self, raw: object, path: str) -> Webhook | None:
        m = self.mapping(raw, path, WEBHOOK_KEYS)
        if m is None:
            return None
        url = self.text(m.get("url"), f"{path}.url")
        if url is not None:
            try:
                parts = urlsplit(url)
                ok = parts.scheme in ("http", "https") and bool(parts.hostname)
                parts.port  # noqa: B018 - raises ValueError on a port that is not one
            except ValueError:
                ok = False
            if not ok:
                self.bad(f"{path}.url", "expected an http:// or https:// URL with a host")
                url = None
        # the default name is the URL without credentials or query (names reach the logs)
        name = self.text(m["name"], f"{path}.name") if "name" in m else \
            (_shown(url) if url else None)
        secret: bytes | None = None
        if ("secret" in m) == ("secret_file" in m):
            self.bad(path, "a webhook needs exactly one of secret, secret_file")
        elif "secret" in m:
            text = self.text(m["secret"], f"{path}.secret")  # never echo the value
            secret = text.encode() if text else None
        else:
            file = self.text(m["secret_file"], f"{path}.secret_file")
            if file is not None:
                p = Path(file) if Path(file).is_absolute() else self.base_dir / file
                try:
                    secret = p.read_text("utf-8").splitlines()[0].strip().encode()
                except (OSError, UnicodeDecodeError, IndexError) as exc:
                    self.bad(f"{path}.secret_file", f"cannot read {file}: "
                                                    f"{type(exc).__name__}")
                    secret = None
                if secret == b"":
                    self.bad(f"{path}.secret_file", f"{file} is empty")
                    secret = None
        types = frozenset(TYPES)
        if "types" in m:
            raw_types = m["types"]
            if not isinstance(raw_types, list) or not raw_types or \
                    any(t not in TYPES for t in raw_types):
                self.bad(f"{path}.types", f"expected a list of {', '.join(TYPES)}")
            else:
                types = frozenset(raw_types)
        if url is None or secret is None or name is None:
            return None
        return Webhook(name, url, secret, types)

    def delivery(self, raw: object, path: str) -> Delivery:
        m = self.mapping(raw, path, DELIVERY_KEYS)
        if m is None:
            return Delivery()
        bounds = {"tries": (1, 100, True), "backoff_s": (0, 3600, False),
                  "max_backoff_s": (0, 86400, False), "timeout_s": (0.01, 600, False),
                  "queue": (1, 1_000_000, True), "workers": (1, 64, True),
                  "tolerance_s": (1, 86400, True)}
        values = {}
        for key, (low, high, integer) in bounds.items():
            if key in m:
                v = self.number(m[key], f"{path}.{key}", low, high, integer)
                if v is not None:
                    values[key] = v
        return Delivery(**values)


def _shown(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}" \
        f"{parts.path}"


def parse_rules(text: str, source: str = "rules", base_dir: Path | None = None
                ) -> NotifyConfig:
    """The rules file's text as a ``NotifyConfig``; ``RulesError`` lists every problem."""
    r = _Reader(base_dir or Path.cwd())
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as exc:
        raise RulesError([("(file)", f"not valid YAML: {exc}")], source) from exc
    top = r.mapping(doc, "(top)", TOP_KEYS)
    if top is None:
        raise RulesError(r.problems, source)
    rules: list[Rule] = []
    raw_rules = top.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        r.bad("rules", "expected a list of at least one rule")
        raw_rules = []
    seen: set[str] = set()
    for i, raw in enumerate(raw_rules):
        rule = r.rule(raw, f"rules[{i}]")
        if rule is None:
            continue
        if rule.id in seen:
            r.bad(f"rules[{i}].id", f"{rule.id!r} is used by an earlier rule")
        seen.add(rule.id)
        rules.append(rule)
    hooks: list[Webhook] = []
    raw_hooks = top.get("webhooks", [])
    if not isinstance(raw_hooks, list):
        r.bad("webhooks", "expected a list")
        raw_hooks = []
    names: set[str] = set()
    for i, raw in enumerate(raw_hooks):
        hook = r.webhook(raw, f"webhooks[{i}]")
        if hook is None:
            continue
        # pending deliveries are kept in Redis under the webhook's name (notifications.state)
        if hook.name in names:
            r.bad(f"webhooks[{i}].name", f"{hook.name!r} names an earlier webhook; give each "
                                         "its own name")
        names.add(hook.name)
        hooks.append(hook)
    delivery = r.delivery(top["delivery"], "delivery") if "delivery" in top else Delivery()
    if r.problems:
        raise RulesError(r.problems, source)
    return NotifyConfig(tuple(rules), tuple(hooks), delivery)


def load_rules(path: str) -> NotifyConfig:
    try:
        text = Path(path).read_text("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError([("(file)", f"cannot read {path}: {exc}")], path) from exc
    return parse_rules(text, path, Path(path).resolve().parent)
