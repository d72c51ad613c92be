"""Money: exact decimal parsing, micros, the four rounding modes, decimal formatting.

The engine keeps every amount as integer *micros* (millionths of the currency unit); the
reference keeps exact ``Fraction``s of the currency unit. Floats never carry money: a YAML
number is read by its shortest decimal representation (``0.1`` means one tenth), and the
catalog documentation asks for quoted strings anyway.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

MICROS = 1_000_000
ROUNDING_MODES = ("up", "down", "half_up", "half_even")

#: Largest cost the engine represents: 9e12 currency units (CONTRACT §4.1 step 5).
MAX_COST_UNITS = 9_000_000_000_000
MAX_COST_MICROS = MAX_COST_UNITS * MICROS

_DECIMAL = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?|([+-]?)\.([0-9]+)")  # ASCII digits


def parse_decimal(value: object) -> Fraction:
    """An exact ``Fraction`` from a decimal string (``"0.05"``), an int, or a YAML float.

    Raises ``ValueError`` with a plain reason for anything else (exponents, NaN, words).
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a decimal amount such as \"0.05\", got {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{value!r} is not an amount")
        # shortest round-trip text is what the author typed; Decimal spells out 1e-05
        value = format(Decimal(repr(value)), "f")
    if not isinstance(value, str):
        raise ValueError(f"expected a decimal amount such as \"0.05\", got {value!r}")
    m = _DECIMAL.fullmatch(value.strip())
    if not m:
        raise ValueError(f"{value!r} is not a decimal amount (write it like \"0.05\")")
    if m.group(2) is not None:
        sign, whole, frac = m.group(1), m.group(2), m.group(3) or ""
    else:
        sign, whole, frac = m.group(4), "0", m.group(5)
    amount = Fraction(int(whole + frac), 10 ** len(frac))
    return -amount if sign == "-" else amount


def round_fraction(x: Fraction, decimals: int, mode: str) -> Fraction:
    """Round a non-negative exact amount to ``decimals`` places with ``mode``."""
    if x < 0:
        raise ValueError("amounts to round are never negative")
    scale = 10**decimals
    q, r = divmod(x.numerator * scale, x.denominator)
    if r:
        d = x.denominator
        if mode == "up":
            q += 1
        elif mode == "half_up":
            q += 2 * r >= d
        elif mode == "half_even":
            q += 2 * r > d or (2 * r == d and q % 2 == 1)
        elif mode != "down":
            raise ValueError(f"unknown rounding mode {mode!r}")
    return Fraction(q, scale)


def to_micros(x: Fraction) -> int:
    """Exact micros of an amount that is a whole number of micros (else ``ValueError``)."""
    m = x * MICROS
    if m.denominator != 1:
        raise ValueError(f"{x} is not a whole number of micros")
    return m.numerator


def format_micros(micros: int, decimals: int = 6) -> str:
    """``150000, 4`` → ``"0.1500"``. ``micros`` must be a multiple of 10**(6 - decimals)."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    cut = 10 ** (6 - decimals)
    if frac % cut:
        raise ValueError(f"{micros} micros has more than {decimals} decimals")
    if decimals == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{frac // cut:0{decimals}d}"


def format_fraction(x: Fraction, decimals: int) -> str:
    """An exact amount already rounded to ``decimals`` places, as a decimal string."""
    return format_micros(to_micros(x), decimals)


def format_amount(micros: int, decimals: int) -> str:
    """At least ``decimals`` places, more when the amount has them (a partial take of an
    unrounded balance): ``(1500, 4)`` → ``"0.0015"``, ``(123456, 4)`` → ``"0.123456"``."""
    if not micros:
        return _ZEROS[decimals]
    cut = _CUTS[decimals]
    if micros % cut:
        places = decimals
        while places < 6 and micros % 10 ** (6 - places):
            places += 1
        return format_micros(micros, places)
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS)
    return f"{sign}{whole}.{frac // cut:0{decimals}d}" if decimals else f"{sign}{whole}"


_CUTS = tuple(10 ** (6 - d) for d in range(7))
_ZEROS = tuple(f"0.{'0' * d}" if d else "0" for d in range(7))
