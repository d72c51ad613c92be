"""Properties of the tax and credit arithmetic against exact Fractions (hypothesis)."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from billing.credit import RateLeft, credit
from billing.tax import round_half_up, tax_totals

RATES = st.sampled_from([Fraction(0), Fraction(19), Fraction(7), Fraction(21),
                         Fraction(55, 10), Fraction(2333, 100)])
LINES = st.lists(st.tuples(RATES, st.integers(-10**9, 10**10)), min_size=1, max_size=12)


@given(LINES, st.booleans())
def test_one_rounding_per_rate_of_the_exact_sum(lines, gross):
    for t in tax_totals(lines, gross=gross, decimals=2):
        exact = Fraction(sum(a for r, a in lines if r == t.rate), 10**6)
        if gross:
            assert Fraction(t.net + t.tax, 10**6) == round_half_up(exact, 2)
            assert Fraction(t.tax, 10**6) == round_half_up(exact * t.rate / (100 + t.rate), 2)
        else:
            assert Fraction(t.net, 10**6) == round_half_up(exact, 2)
            assert Fraction(t.tax, 10**6) == round_half_up(exact * t.rate / 100, 2)


@given(st.lists(st.tuples(RATES, st.integers(1, 10**5)), min_size=1, max_size=4,
                unique_by=lambda x: x[0]),
       st.lists(st.integers(1, 5000), min_size=1, max_size=6), st.booleans())
def test_credits_in_parts_never_pass_the_invoice_and_end_at_it(rates, parts, gross):
    """Partial credit notes, then one for the rest, add up to the invoice to the cent."""
    left = []
    for rate, cents in rates:
        [t] = tax_totals([(rate, cents * 10_000)], gross=False, decimals=2)
        left.append(RateLeft(rate, t.net, t.tax))
    total = {r.rate: (r.net, r.tax) for r in left}
    done = {r.rate: [0, 0] for r in left}
    for cents in parts:
        remaining = sum(r.left(gross) for r in left)
        if remaining <= 0 or cents * 10_000 > remaining:
            break
        for c in credit(left, cents * 10_000, gross=gross, decimals=2):
            done[c.rate][0] += c.net
            done[c.rate][1] += c.tax
        left = [RateLeft(r.rate, total[r.rate][0] - done[r.rate][0],
                         total[r.rate][1] - done[r.rate][1]) for r in left]
        assert all(r.net >= 0 and r.tax >= 0 for r in left)
    if sum(r.left(gross) for r in left) > 0:
        for c in credit(left, None, gross=gross, decimals=2):
            done[c.rate][0] += c.net
            done[c.rate][1] += c.tax
    assert {k: tuple(v) for k, v in done.items()} == total
