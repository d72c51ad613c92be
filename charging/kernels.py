"""numba kernels: batch rating in exact 64-bit integer arithmetic.

Kernels take the catalog ``Tables`` (``charging.compiler``) and plain request arrays and
return arrays; they never touch I/O or Python objects. Money is integer micros throughout;
see ``charging.exact`` for why the integers below never overflow for a validated catalog.

Status codes (one int8 per request):
    OK                 rated
    NO_RATE            no rate matches (RATING_FAILED)
    OVER_LIMIT         the cost would exceed 9e12 currency units (RATING_FAILED)
    NOT_IN_PLAN        the plan has no tariff for the service (END_USER_SERVICE_DENIED)
"""

from __future__ import annotations

import numpy as np
from numba import njit

from charging.exact import BOUND, SATURATE_MICROS
from charging.money import MAX_COST_MICROS

OK, NO_RATE, OVER_LIMIT, NOT_IN_PLAN = 0, 1, 2, 3
_WEEK = 7 * 86400
_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday; Monday = 0
_NEVER = np.int64(2**62)


@njit(cache=True, nogil=True, inline="always")
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


@njit(cache=True, nogil=True)
def rate_units(T, r, u):
    """(status, cost micros, rated units) of ``u`` units at global rate ``r``."""
    if u <= 0:
        return OK, np.int64(0), np.int64(0)
    s0 = T.rate_step0[r]
    s1 = T.rate_step1[r]
    D = T.rate_D[r]
    unit = T.rate_unit[r]
    mode = T.rate_mode[r]
    rated = np.int64(0)
    if u <= T.rate_fast_max_u[r]:
        # Fast path: N = cost · D fits comfortably in int64.
        N = T.rate_cf_N[r]
        for i in range(s0, s1):
            lo = T.step_from[i]
            if u <= lo:
                break
            hi = T.step_from[i + 1] if i + 1 < s1 else _NEVER
            seg = (u if u < hi else hi) - lo
            inc = T.step_inc[i]
            charged = (seg + inc - 1) // inc * inc
            rated += charged
            N += charged * T.step_m[i]
        if T.rate_has_cap[r] and N > T.rate_cap_N[r]:
            N = T.rate_cap_N[r]
        den = unit * D
        q = _round_q(N // den, N % den, den, mode)
        cost = q * unit
    else:
        # Slow path: whole micros W plus F/D, saturating far above the largest cost.
        W = T.rate_cf_whole[r]
        F = T.rate_cf_frac[r]
        over = False
        for i in range(s0, s1):
            lo = T.step_from[i]
            if u <= lo:
                break
            hi = T.step_from[i + 1] if i + 1 < s1 else _NEVER
            seg = (u if u < hi else hi) - lo
            inc = T.step_inc[i]
            charged = (seg + inc - 1) // inc * inc
            rated += charged
            a = T.step_a[i]
            if over or a == 0:
                continue
            b = T.step_b[i]
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
            F += (t - whole * b) * T.step_d_over_b[i]
            if F >= D:
                F -= D
                W += 1
            if W > SATURATE_MICROS:
                over = True
        if over or (
            T.rate_has_cap[r]
            and (W > T.rate_cap_whole[r] or (W == T.rate_cap_whole[r] and F > T.rate_cap_frac[r]))
        ):
            if not T.rate_has_cap[r]:
                return OVER_LIMIT, np.int64(0), rated
            W = T.rate_cap_whole[r]
            F = T.rate_cap_frac[r]
        q = W // unit
        rem = (W - q * unit) * D + F
        q = _round_q(q, rem, unit * D, mode)
        cost = q * unit
    if cost > MAX_COST_MICROS:
        return OVER_LIMIT, np.int64(0), rated
    return OK, cost, rated


@njit(cache=True, nogil=True)
def _in_band(T, band, week_s):
    for k in range(T.band_start[band], T.band_end[band]):
        if T.iv_lo[k] <= week_s < T.iv_hi[k]:
            return True
    return False


@njit(cache=True, nogil=True)
def _pick_in_slot(T, slot, week_s):
    """The first rate of the slot whose band holds (banded rates come first), or -1."""
    for k in range(T.slot_start[slot], T.slot_end[slot]):
        r = T.slot_rates[k]
        band = T.rate_band[r]
        if band < 0 or _in_band(T, band, week_s):
            return r
    return -1


@njit(cache=True, nogil=True)
def week_second(T, ts_ms):
    """Seconds since Monday 00:00 local time of an epoch-ms instant in the catalog zone."""
    t = ts_ms // 1000
    lo = 0
    hi = T.tz_start.shape[0] - 1
    while lo < hi:  # last transition at or before t
        mid = (lo + hi + 1) // 2
        if T.tz_start[mid] <= t:
            lo = mid
        else:
            hi = mid - 1
    local = t + T.tz_offset[lo]
    day = local // 86400
    return ((day + _EPOCH_WEEKDAY) % 7) * 86400 + (local - day * 86400)


@njit(cache=True, nogil=True)
def select_rate(T, tariff, ts_ms, digits, ndigits, ends):
    """CONTRACT §4.1 step 2: the longest-prefix candidate rate, banded before band-less.

    ``ends`` is scratch space of at least ``ndigits`` slots, reused across calls.
    """
    week_s = week_second(T, ts_ms)
    node = T.tariff_root[tariff]
    # Walk the tariff's trie along the number, remembering prefix ends (deepest last).
    n_ends = 0
    for k in range(ndigits):
        node = T.trie_child[node, digits[k]]
        if node < 0:
            break
        if T.trie_slot[node] >= 0:
            ends[n_ends] = T.trie_slot[node]
            n_ends += 1
    for k in range(n_ends - 1, -1, -1):
        r = _pick_in_slot(T, ends[k], week_s)
        if r >= 0:
            return r
    if T.tariff_any[tariff] >= 0:
        return _pick_in_slot(T, T.tariff_any[tariff], week_s)
    return -1


@njit(cache=True, nogil=True)
def rate_batch(T, plan, service, ts_ms, digits, ndigits, used):
    """Rate a batch of one-off usages: (status, rate index, cost micros, rated units)."""
    n = plan.shape[0]
    status = np.zeros(n, dtype=np.int8)
    rate = np.full(n, -1, dtype=np.int64)
    cost = np.zeros(n, dtype=np.int64)
    rated = np.zeros(n, dtype=np.int64)
    ends = np.empty(digits.shape[1], dtype=np.int64)
    for i in range(n):
        t = T.plan_tariff[plan[i], service[i]] if service[i] >= 0 else -1
        if t < 0:
            status[i] = NOT_IN_PLAN
            continue
        r = select_rate(T, t, ts_ms[i], digits[i], ndigits[i], ends)
        if r < 0:
            status[i] = NO_RATE
            continue
        rate[i] = r
        status[i], cost[i], rated[i] = rate_units(T, r, used[i])
    return status, rate, cost, rated


@njit(cache=True, nogil=True)
def step_batch(T, rate, before, after):
    """Session steps: rating(after) − rating(before) per row, (status, cost micros, rated)."""
    n = rate.shape[0]
    status = np.zeros(n, dtype=np.int8)
    cost = np.zeros(n, dtype=np.int64)
    rated = np.zeros(n, dtype=np.int64)
    for i in range(n):
        s1, c1, q1 = rate_units(T, rate[i], before[i])
        s2, c2, q2 = rate_units(T, rate[i], after[i])
        if s1 != OK or s2 != OK:
            status[i] = OVER_LIMIT
            continue
        cost[i] = c2 - c1
        rated[i] = q2 - q1
    return status, cost, rated


@njit(cache=True, nogil=True)
def _grant_money(T, r, chargeable, allowance, g, base):
    """Money of a grant of g units above ``base`` = cost(chargeable), or -1 if unratable."""
    extra = g - allowance
    if extra <= 0:
        return np.int64(0)
    s, c, _ = rate_units(T, r, chargeable + extra)
    if s != OK:
        return np.int64(-1)
    return c - base


@njit(cache=True, nogil=True)
def max_grant(T, r, chargeable, allowance, requested, available):
    """Largest g ≤ requested whose money fits ``available`` micros (< 0: no limit).

    Returns (g, money micros). Rating is monotone in usage, so a binary search is exact.
    """
    s, base, _ = rate_units(T, r, chargeable)
    if s != OK:
        return np.int64(0), np.int64(0)
    m = _grant_money(T, r, chargeable, allowance, requested, base)
    if m >= 0 and (available < 0 or m <= available):
        return requested, m
    lo = np.int64(0)
    hi = requested - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        m = _grant_money(T, r, chargeable, allowance, mid, base)
        if m >= 0 and (available < 0 or m <= available):
            lo = mid
        else:
            hi = mid - 1
    return lo, _grant_money(T, r, chargeable, allowance, lo, base)


@njit(cache=True, nogil=True)
def grant_batch(T, rate, chargeable, allowance, requested, available):
    """``max_grant`` over a batch: (granted units, money micros)."""
    n = rate.shape[0]
    granted = np.zeros(n, dtype=np.int64)
    money = np.zeros(n, dtype=np.int64)
    for i in range(n):
        granted[i], money[i] = max_grant(
            T, rate[i], chargeable[i], allowance[i], requested[i], available[i]
        )
    return granted, money


assert BOUND < 2**63
