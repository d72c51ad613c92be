"""A top-up's rules and outcome, apart from the Redis call (``BalanceStore.topup``,
``lua/topup.lua``): the id's bounds, the script's reply as a ``Topup``, and the message a
user needs for each refusal, so every door (the CLI, an account API) says the same.

Statuses (only ``ok`` wrote anything):

    ok         applied; ``balance`` is the new one
    replay     the id was applied before with this amount; ``balance`` is what it left
    conflict   the id was applied before with another amount (``id_amount``)
    unknown    no such account
    limit      the balance would leave ±BALANCE_LIMIT micros, the range balances keep to
    negative   a debit below zero on an account that may not go negative
    reserved   a debit of money open sessions hold (``reserved``)
    corrupt    a field the account needs is missing or unreadable

An id is remembered with its amount. Records written before that hold the balance alone:
such an id replays whatever the amount (``id_amount`` None).
"""

from __future__ import annotations

from dataclasses import dataclass

from charging.decide import BALANCE_LIMIT
from charging.records import format_balance

#: The longest a top-up id can be remembered, short of for ever (0): ~31.7 years.
MAX_ID_RETENTION_S = 10**9
#: A top-up id is 1 to this many characters, as a request id.
MAX_TOPUP_ID = 128


@dataclass(frozen=True, slots=True)
class Topup:
    """A top-up's outcome; amounts in micros, None where the status says nothing of them."""

    status: str
    balance: int | None = None  # the balance now, or (replay, conflict) what the id left
    reserved: int | None = None  # negative, reserved: money open sessions hold
    id_amount: int | None = None  # replay, conflict: the amount the id was applied with


def check_topup_id(topup_id: str | None) -> None:
    """ValueError unless ``topup_id`` is None (no id) or 1 to MAX_TOPUP_ID characters."""
    if topup_id is not None and not 1 <= len(topup_id) <= MAX_TOPUP_ID:
        got = "an empty one" if not topup_id else f"{len(topup_id)}"
        raise ValueError(f"a top-up id must be 1 to {MAX_TOPUP_ID} characters, as a request "
                         f"id; got {got}")


def decode_reply(reply: list) -> Topup:
    """lua/topup.lua's reply: a status, then amounts as decimal strings of micros."""
    status = reply[0].decode()
    numbers = [int(x) for x in reply[1:]]
    if status in ("replay", "conflict"):
        return Topup(status, numbers[0], id_amount=numbers[1] if len(numbers) > 1 else None)
    return Topup(status, *numbers)


def refusal(outcome: Topup, account: str, micros: int, topup_id: str | None = None
            ) -> str | None:
    """What a user needs to know of a refused top-up of ``micros`` to ``account`` (None when
    it was applied or replayed): why, with the amounts, and that nothing was applied."""
    amount = format_balance(micros)
    bal = outcome.balance
    status = outcome.status
    if status == "unknown":
        return f"no account {account!r}"
    if status == "corrupt":
        return (f"account {account!r} in Redis cannot be read (a balance, version or plan "
                "missing or malformed); nothing was applied (its hash needs repair)")
    if status == "conflict":
        return (f"top-up id {topup_id!r} of {account!r} was applied before with amount "
                f"{format_balance(outcome.id_amount or 0)}, not {amount}; nothing was "
                "applied (a new top-up needs a new --id)")
    if status == "limit":
        after = "" if bal is None else \
            f" {format_balance(bal + micros)} (now {format_balance(bal)}),"
        return (f"top-up of {amount} to {account!r} refused: the balance would be{after} "
                f"beyond ±{format_balance(BALANCE_LIMIT)}, the range balances keep to; "
                "nothing was applied")
    if status == "negative" and bal is not None:
        return (f"debit of {format_balance(-micros)} from {account!r} refused: its balance "
                f"{format_balance(bal)} would become {format_balance(bal + micros)}, and the "
                "account may not go negative (allow_negative is false); nothing was applied")
    if status == "reserved" and bal is not None and outcome.reserved is not None:
        free = bal - outcome.reserved
        return (f"debit of {format_balance(-micros)} from {account!r} refused: it would take "
                f"money reserved by open sessions (balance {format_balance(bal)}, reserved "
                f"{format_balance(outcome.reserved)}, free {format_balance(free)}); at most "
                f"{format_balance(max(free, 0))} can be debited now; nothing was applied")
    if status in ("ok", "replay"):
        return None
    return f"top-up of {amount} to {account!r} refused ({status}); nothing was applied"
