"""Integer parameters that let the kernels rate a rate exactly in 64-bit integers.

All amounts of one rate are put over one common denominator ``D``, in micros:

    price of step i per unit  = a_i / b_i micros           (reduced fraction)
    connect fee               = cf_num / cf_den micros
    max_cost                  = cap_num / cap_den micros
    D                         = lcm(b_i, cf_den, cap_den)

A rating is then ``N / D`` micros with ``N = cf·D + Σ charged_i · (a_i·D/b_i)``. When the
usage is small enough that N cannot pass 2**62 (``fast_max_u``) the kernel sums N directly;
above that it keeps whole micros and a remainder over D separately, saturating once the sum
passes ``SATURATE_MICROS`` (past it the cost is either the cap or RATING_FAILED, whatever
the exact value). ``tariff_problems`` lists the reasons a tariff's integers would
not fit; the validator rejects them, so every accepted catalog is rated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import lcm

from charging.errors import Problem
from charging.model import Rate, Tariff
from charging.money import MAX_COST_MICROS, MICROS

BOUND = 2**62
#: Whole micros above which a sum is known to round above MAX_COST_MICROS in every mode.
SATURATE_MICROS = MAX_COST_MICROS + 2 * MICROS
MAX_USAGE = 2**40


@dataclass(frozen=True)
class RateInts:
    """Everything the kernels need to rate one rate exactly (see module docstring)."""

    D: int
    unit: int  # micros per rounding unit: 10 ** (6 - decimals)
    cf_N: int  # connect fee · D (clamped to BOUND + 1; only used on the fast path)
    cf_whole: int  # connect fee, whole micros
    cf_frac: int  # connect fee, remainder over D
    has_cap: bool
    cap_N: int  # cap · D, or BOUND + 1 when that exceeds BOUND (the fast path then never caps)
    cap_whole: int
    cap_frac: int
    fast_max_u: int  # largest usage for which N stays ≤ BOUND
    a: tuple[int, ...]
    b: tuple[int, ...]
    m: tuple[int, ...]  # a_i · D / b_i (clamped to BOUND + 1; only used on the fast path)
    d_over_b: tuple[int, ...]


def rate_ints(tariff: Tariff, rate: Rate) -> RateInts:
    """The integer parameters of one rate; assumes ``rate_problems`` found nothing."""
    prices = [s.price * MICROS / s.per for s in rate.steps]
    cf = rate.connect_fee * MICROS
    cap = tariff.max_cost * MICROS if tariff.max_cost is not None else Fraction(0)
    D = lcm(*(p.denominator for p in prices), cf.denominator, cap.denominator)
    m = tuple(p.numerator * (D // p.denominator) for p in prices)
    cf_N = cf.numerator * (D // cf.denominator)
    cap_N = cap.numerator * (D // cap.denominator)
    max_m = max(m)
    max_inc = max(s.increment for s in rate.steps)
    if cf_N > BOUND:
        fast = 0
    elif max_m == 0:
        fast = BOUND
    else:
        fast = max(0, (BOUND - cf_N) // max_m - max_inc)
    return RateInts(
        D=D,
        unit=10 ** (6 - tariff.decimals),
        cf_N=min(cf_N, BOUND + 1),
        cf_whole=cf_N // D,
        cf_frac=cf_N % D,
        has_cap=tariff.max_cost is not None,
        cap_N=cap_N if cap_N <= BOUND else BOUND + 1,
        cap_whole=cap_N // D,
        cap_frac=cap_N % D,
        fast_max_u=min(fast, MAX_USAGE + max_inc),
        a=tuple(p.numerator for p in prices),
        b=tuple(p.denominator for p in prices),
        m=tuple(min(x, BOUND + 1) for x in m),
        d_over_b=tuple(D // p.denominator for p in prices),
    )


def rate_problems(tariff: Tariff, rate: Rate, path: str) -> list[Problem]:
    """Why this rate cannot be rated exactly in int64, one problem per reason."""
    out: list[Problem] = []
    prices = [s.price * MICROS / s.per for s in rate.steps]
    for i, (step, p) in enumerate(zip(rate.steps, prices)):
        if p.numerator * p.denominator > BOUND:
            out.append(Problem(
                f"{path}.steps[{i}]",
                f"price {step.price} per {step.per} is {p} micros per unit, too fine-grained or "
                "too large to rate exactly in 64-bit integers: use fewer price decimals or a "
                "per that divides the price",
            ))
    cf = rate.connect_fee * MICROS
    if rate.connect_fee > MAX_COST_MICROS // MICROS:
        out.append(Problem(f"{path}.connect_fee", "exceeds 9,000,000,000,000, the largest "
                           "cost the engine represents"))
    cap = tariff.max_cost * MICROS if tariff.max_cost is not None else Fraction(0)
    if out:
        return out
    D = lcm(*(p.denominator for p in prices), cf.denominator, cap.denominator)
    unit = 10 ** (6 - tariff.decimals)
    if 2 * unit * D > BOUND:
        out.append(Problem(
            path,
            f"the prices, connect fee and max_cost of this rate share no denominator below "
            f"{BOUND // (2 * unit)} micro-fractions (it is {D}): exact rounding would overflow "
            "64-bit integers; use fewer decimals or per values with common factors",
        ))
    return out


def tariff_problems(tariff: Tariff, path: str, indices: list[int] | None = None
                    ) -> list[Problem]:
    """Every reason this tariff's exact rating would not fit int64 (run by the validator);
    ``indices``: each rate's index in the catalog's list, where some were left out."""
    out: list[Problem] = []
    if tariff.max_cost is not None and tariff.max_cost * MICROS > MAX_COST_MICROS:
        out.append(Problem(f"{path}.max_cost", "exceeds 9,000,000,000,000, the largest cost "
                           "the engine represents"))
    for i, rate in zip(indices if indices is not None else range(len(tariff.rates)),
                       tariff.rates):
        out.extend(rate_problems(tariff, rate, f"{path}.rates[{i}]"))
    return out
