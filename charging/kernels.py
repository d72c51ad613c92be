"""numba kernels: batch rating in exact 64-bit integer arithmetic.

Kernels take the catalog ``Tables`` (``charging.compiler``) and plain request arrays and
return arrays; they never touch I/O or Python objects. Money is integer micros throughout;
see ``charging.exact`` for why the integers below never overflow for a validated catalog.

The public kernels take the whole ``Tables`` tuple; the inner ones take only the arrays they
read, because handing a 13-array tuple from call to call costs reference counting on every
member, which was most of the time per request.

Status codes (one int8 per request):
    OK                 rated
    NO_RATE            no rate matches (RATING_FAILED)
    OVER_LIMIT         the cost would exceed 9e12 currency units (RATING_FAILED)
    NOT_IN_PLAN        the plan has no tariff for the service (END_USER_SERVICE_DENIED)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from charging.compiler import (
    R_BAND,
    R_CAP_FRAC,
    R_CAP_N,
    R_CAP_WHOLE,
    R_CF_FRAC,
    R_CF_N,
    R_CF_WHOLE,
    R_D,
    R_FAST_MAX_U,
    R_HAS_CAP,
    R_MODE,
    R_STEP0,
    R_STEP1,
    R_UNIT,
    S_A,
    S_B,
    S_D_OVER_B,
    S_FROM,
    S_INC,
    S_M,
    S_NEXT,
)
from charging.exact import SATURATE_MICROS
from charging.money import MAX_COST_MICROS

OK, NO_RATE, OVER_LIMIT, NOT_IN_PLAN = 0, 1, 2, 3
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0

_jit = njit(cache=True, nogil=True)
_inline = njit(cache=True, nogil=True, inline="always")


@_inline
def _round_q(q, rem, den, mode):
    """q + rem/den rounded to a whole number with mode 0 up, 1 down, 2 half_up, 3 half_even."""
    if rem == 0 or mode == 1:
        return q
    if mode == 0:
        return q + 1
    twice = 2 * rem
    if twice > den or (twice == den and (mode == 2 or q % 2 == 1)):
        return q + 1
    return q


@_inline
def _units(rt, st, r, u):
    """(status, cost micros, rated units) of ``u`` units at rate ``r`` (rate/step tables)."""
    if u <= 0:
        return OK, np.int64(0), np.int64(0)
    row = rt[r]
    s0 = row[R_STEP0]
    s1 = row[R_STEP1]
    D = row[R_D]
    unit = row[R_UNIT]
    rated = np.int64(0)
    if u <= row[R_FAST_MAX_U]:
        # Fast path: N = cost · D stays below 2**62.
        N = row[R_CF_N]
        for i in range(s0, s1):
            step = st[i]
            lo = step[S_FROM]
            if u <= lo:
                break
            hi = step[S_NEXT]
            inc = step[S_INC]
            charged = ((u if u < hi else hi) - lo + inc - 1) // inc * inc
            rated += charged
            N += charged * step[S_M]
        if row[R_HAS_CAP] and N > row[R_CAP_N]:
            N = row[R_CAP_N]
        den = unit * D
        q = N // den
        cost = _round_q(q, N - q * den, den, row[R_MODE]) * unit
    else:
        # Slow path: whole micros W plus F/D, saturating far above the largest cost.
        W = row[R_CF_WHOLE]
        F = row[R_CF_FRAC]
        over = False
        for i in range(s0, s1):
            step = st[i]
            lo = step[S_FROM]
            if u <= lo:
                break
            hi = step[S_NEXT]
            inc = step[S_INC]
            charged = ((u if u < hi else hi) - lo + inc - 1) // inc * inc
            rated += charged
            a = step[S_A]
            if over or a == 0:
                continue
            b = step[S_B]
            h = charged // b
            low = charged - h * b  # charged · a/b = h·a + low·a/b, and low·a < a·b ≤ 2**62
            t = low * a
            whole = t // b
            if h > (SATURATE_MICROS - W) // a:
                over = True
                continue
            W += h * a
            if whole > SATURATE_MICROS - W:
                over = True
                continue
            W += whole
            F += (t - whole * b) * step[S_D_OVER_B]
            if F >= D:
                F -= D
                W += 1
            if W > SATURATE_MICROS:
                over = True
        capped = row[R_HAS_CAP] and (
            over or W > row[R_CAP_WHOLE] or (W == row[R_CAP_WHOLE] and F > row[R_CAP_FRAC])
        )
        if over and not capped:
            return OVER_LIMIT, np.int64(0), rated
        if capped:
            W = row[R_CAP_WHOLE]
            F = row[R_CAP_FRAC]
        q = W // unit
        cost = _round_q(q, (W - q * unit) * D + F, unit * D, row[R_MODE]) * unit
    if cost > MAX_COST_MICROS:
        return OVER_LIMIT, np.int64(0), rated
    return OK, cost, rated


@_inline
def _week_second(tz_start, tz_offset, ts_ms):
    """Seconds since Monday 00:00 local time of an epoch-ms instant."""
    t = ts_ms // 1000
    lo = 0
    hi = tz_start.shape[0] - 1
    while lo < hi:  # last transition at or before t
        mid = (lo + hi + 1) // 2
        if tz_start[mid] <= t:
            lo = mid
        else:
            hi = mid - 1
    local = t + tz_offset[lo]
    day = local // 86400
    return ((day + _EPOCH_WEEKDAY) % 7) * 86400 + (local - day * 86400)


@_inline
def _pick_in_slot(T_slot, slot_rates, rt, band, iv, slot, week_s):
    """The first rate of the slot whose band holds (banded rates come first), or -1."""
    for k in range(T_slot[slot, 0], T_slot[slot, 1]):
        r = slot_rates[k]
        b = rt[r, R_BAND]
        if b < 0:
            return r
        for j in range(band[b, 0], band[b, 1]):
            if iv[j, 0] <= week_s < iv[j, 1]:
                return r
    return -1


@_inline
def _select(T_slot, slot_rates, rt, band, iv, root, any_slot, trie_child, trie_slot, week_s,
            digits, ndigits, ends):
    """CONTRACT §4.1 step 2: the longest-prefix candidate rate, banded before band-less."""
    node = root
    n_ends = 0  # walk the trie along the number, remembering prefix ends (deepest last)
    for k in range(ndigits):
        node = trie_child[node, digits[k]]
        if node < 0:
            break
        if trie_slot[node] >= 0:
            ends[n_ends] = trie_slot[node]
            n_ends += 1
    for k in range(n_ends - 1, -1, -1):
        r = _pick_in_slot(T_slot, slot_rates, rt, band, iv, ends[k], week_s)
        if r >= 0:
            return r
    if any_slot >= 0:
        return _pick_in_slot(T_slot, slot_rates, rt, band, iv, any_slot, week_s)
    return -1


@_jit
def rate_batch(T, plan, service, ts_ms, digits, ndigits, used):
    """Rate a batch of one-off usages: (status, rate index, cost micros, rated units)."""
    plan_tariff = T.plan_tariff
    tariff_root = T.tariff_root
    tariff_any = T.tariff_any
    trie_child = T.trie_child
    trie_slot = T.trie_slot
    T_slot = T.slot
    slot_rates = T.slot_rates
    rt = T.rate
    st = T.step
    band = T.band
    iv = T.iv
    tz_start = T.tz_start
    tz_offset = T.tz_offset
    n = plan.shape[0]
    status = np.zeros(n, dtype=np.int8)
    rate = np.full(n, -1, dtype=np.int64)
    cost = np.zeros(n, dtype=np.int64)
    rated = np.zeros(n, dtype=np.int64)
    ends = np.empty(digits.shape[1], dtype=np.int64)
    for i in range(n):
        t = plan_tariff[plan[i], service[i]] if service[i] >= 0 else -1
        if t < 0:
            status[i] = NOT_IN_PLAN
            continue
        week_s = _week_second(tz_start, tz_offset, ts_ms[i])
        r = _select(T_slot, slot_rates, rt, band, iv, tariff_root[t], tariff_any[t], trie_child,
                    trie_slot, week_s, digits[i], ndigits[i], ends)
        if r < 0:
            status[i] = NO_RATE
            continue
        rate[i] = r
        status[i], cost[i], rated[i] = _units(rt, st, r, used[i])
    return status, rate, cost, rated


@_jit
def rate_units(T, r, u):
    """(status, cost micros, rated units) of ``u`` units at global rate ``r``."""
    return _units(T.rate, T.step, r, u)


@_jit
def week_second(T, ts_ms):
    """Seconds since Monday 00:00 in the catalog's zone of an epoch-ms instant."""
    return _week_second(T.tz_start, T.tz_offset, ts_ms)


@_jit
def step_batch(T, rate, before, after):
    """Session steps: rating(after) − rating(before) per row, (status, cost micros, rated)."""
    rt = T.rate
    st = T.step
    n = rate.shape[0]
    status = np.zeros(n, dtype=np.int8)
    cost = np.zeros(n, dtype=np.int64)
    rated = np.zeros(n, dtype=np.int64)
    for i in range(n):
        status[i], cost[i], rated[i] = _span(rt, st, rate[i], before[i], after[i])
    return status, cost, rated


@_inline
def _span(rt, st, r, before, after):
    s1, c1, q1 = _units(rt, st, r, before)
    s2, c2, q2 = _units(rt, st, r, after)
    if s1 != OK or s2 != OK:
        return OVER_LIMIT, 0, 0
    return OK, c2 - c1, q2 - q1


@_inline
def _grant_money(rt, st, r, chargeable, allowance, g, base):
    """Money of a grant of g units above ``base`` = cost(chargeable), or -1 if unratable."""
    extra = g - allowance
    if extra <= 0:
        return np.int64(0)
    s, c, _ = _units(rt, st, r, chargeable + extra)
    if s != OK:
        return np.int64(-1)
    return c - base


@_inline
def _max_grant(rt, st, r, chargeable, allowance, requested, available):
    s, base, _ = _units(rt, st, r, chargeable)
    if s != OK:
        return np.int64(0), np.int64(0)
    m = _grant_money(rt, st, r, chargeable, allowance, requested, base)
    if m >= 0 and (available < 0 or m <= available):
        return requested, m
    lo = np.int64(0)
    hi = requested - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        m = _grant_money(rt, st, r, chargeable, allowance, mid, base)
        if m >= 0 and (available < 0 or m <= available):
            lo = mid
        else:
            hi = mid - 1
    return lo, _grant_money(rt, st, r, chargeable, allowance, lo, base)


@_jit
def max_grant(T, r, chargeable, allowance, requested, available):
    """Largest g ≤ requested whose money fits ``available`` micros (< 0: no limit).

    Money of g is rating(C + max(0, g − A)) − rating(C) (CONTRACT §4.2). Returns
    (g, money micros). Rating is monotone in usage, so a binary search is exact.
    """
    return _max_grant(T.rate, T.step, r, chargeable, allowance, requested, available)


@_jit
def grant_batch(T, rate, chargeable, allowance, requested, available):
    """``max_grant`` over a batch: (granted units, money micros)."""
    rt = T.rate
    st = T.step
    n = rate.shape[0]
    granted = np.zeros(n, dtype=np.int64)
    money = np.zeros(n, dtype=np.int64)
    for i in range(n):
        granted[i], money[i] = _max_grant(
            rt, st, rate[i], chargeable[i], allowance[i], requested[i], available[i]
        )
    return granted, money


@_jit
def units_at(rt, st, r, u):
    """``rate_units`` on the rate and step tables directly: the cheap call for one request."""
    return _units(rt, st, r, u)


@_jit
def span_at(rt, st, r, before, after):
    """rating(after) − rating(before) on one rate, as (status, cost micros, rated units):
    a session step's charge in one call (``step_batch``'s arithmetic, for one request)."""
    return _span(rt, st, r, before, after)


@_jit
def grant_at(rt, st, r, chargeable, allowance, requested, available):
    """``max_grant`` on the rate and step tables directly: the cheap call for one request."""
    return _max_grant(rt, st, r, chargeable, allowance, requested, available)
