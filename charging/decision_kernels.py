"""One numba kernel for the charging rules of CONTRACT §4.2 over a batch, in input order.

``decide_rows`` is ``charging.decide``'s rules (``_Decider``) on plain arrays: the state of
the batch's accounts, allowance buckets and touched sessions goes in as int64 matrices,
which the kernel changes in place, and one row of results per request comes out.
``charging.columnar`` picks the requests it may decide (the cases where these rules and
``decide_batch``'s agree exactly; all values far from int64's end), fills the arrays, and
turns the rows back into outcomes and state. Rating is ``charging.kernels``'s arithmetic
(``units_at``, ``span_at``, ``grant_at``), called from inside this kernel.

Money is integer micros, units integers; the kernel never sees a string or a float.

Matrices (one row each; columns named below):
    acc     per account: balance, reserved, allow_negative, changed (out)
    grp     per (account, service): its buckets' rows [B0, B1) in ``bk``, changed (out)
    bk      per bucket: units, reserved
    ses     per session slot (an (account, session id) the batch names): present, group,
            rate, tariff, chargeable, used, granted, money reserved, seq, and what the
            batch did to it (seen, popped, inserted at, written, removed, opened)
    held    per session slot: allowance units held per bucket of its group
    tar     per tariff: quota (units), validity (seconds)
    req     per request: account, kind, denied, rate status, rate, tariff, group, slot,
            used, requested, seq, has seq, plan and service (for rate selection only)
    out     per request (out): result, detail, detail value, granted, validity, final,
            balance after, taken, uncharged, rated, allowance, rate, tariff
"""

from __future__ import annotations

import numpy as np
from numba import njit

from charging import kernels
from charging.catalog import MAX_ALLOWANCE_UNITS

#: ``charging.decide.BALANCE_LIMIT`` (not imported: decide imports the kernels' module)
BALANCE_LIMIT = 2**53 - 1

# kinds
EVENT, INITIAL, UPDATE, TERMINATE = 0, 1, 2, 3
# results, in ``charging.columnar.RESULTS`` order
SUCCESS, CREDIT_LIMIT, USER_UNKNOWN, SERVICE_DENIED, RATING_FAILED, SESSION_UNKNOWN = range(6)
# why RATING_FAILED (the detail's text is made in Python)
NO_DETAIL, NO_RATE, OVER_LIMIT, SESSION_OVER_LIMIT = 0, 1, 2, 3

A_BAL, A_RES, A_NEG, A_CHANGED = range(4)
G_B0, G_B1, G_CHANGED = range(3)
B_UNITS, B_RES = range(2)
(S_PRESENT, S_GROUP, S_RATE, S_TARIFF, S_CHARGEABLE, S_USED, S_GRANTED, S_MONEY, S_SEQ,
 S_SEEN, S_POPPED, S_INSERTED, S_WRITTEN, S_REMOVED, S_OPENED) = range(15)
SES_COLS = 15
T_QUOTA, T_VALIDITY = range(2)
(R_ACCT, R_KIND, R_DENIED, R_STATUS, R_RATE, R_TARIFF, R_GROUP, R_SLOT, R_USED, R_REQUESTED,
 R_SEQ, R_HAS_SEQ, R_PLAN, R_SERVICE) = range(14)
REQ_COLS = 14
(O_RESULT, O_DETAIL, O_VALUE, O_GRANTED, O_VALIDITY, O_FINAL, O_BALANCE, O_TAKEN,
 O_UNCHARGED, O_RATED, O_ALLOWANCE, O_RATE, O_TARIFF) = range(13)
OUT_COLS = 13

_jit = njit(cache=True, nogil=True)


@_jit
def _free(grp, bk, g):
    """``allowances.free_units``: free units of a group's buckets, capped at int64's end."""
    total = np.int64(0)
    for b in range(grp[g, G_B0], grp[g, G_B1]):
        free = bk[b, B_UNITS] - bk[b, B_RES]
        if free > 0:
            total += free
    return min(total, MAX_ALLOWANCE_UNITS)


@_jit
def _consume(grp, bk, g, units):
    """``allowances.consume``: take free units, first bucket first."""
    if units == 0:
        return
    for b in range(grp[g, G_B0], grp[g, G_B1]):
        free = max(0, bk[b, B_UNITS] - bk[b, B_RES])
        part = min(units, free)
        bk[b, B_UNITS] -= part
        units -= part
    grp[g, G_CHANGED] = 1


@_jit
def _take(acc, a, cost):
    """``_Decider.take``: (taken, uncharged) micros, as far as the balance allows."""
    if cost == 0:
        return np.int64(0), np.int64(0)
    if acc[a, A_NEG]:
        taken = min(cost, acc[a, A_BAL] + BALANCE_LIMIT)
    else:
        taken = min(cost, max(0, acc[a, A_BAL] - acc[a, A_RES]))
    acc[a, A_BAL] -= taken
    return taken, cost - taken


@_jit
def _release(acc, grp, bk, ses, held, a, s):
    """``_Decider.release``: return a session's held money and allowance units."""
    acc[a, A_RES] -= ses[s, S_MONEY]
    ses[s, S_MONEY] = 0
    ses[s, S_GRANTED] = 0
    g = ses[s, S_GROUP]
    b0 = grp[g, G_B0]
    n = grp[g, G_B1] - b0
    some = False
    for k in range(n):
        if held[s, k] != 0:
            some = True
    if some:
        for k in range(n):
            bk[b0 + k, B_RES] -= held[s, k]
            held[s, k] = 0
        grp[g, G_CHANGED] = 1


@_jit
def _pop(ses, s):
    """The session leaves the account (terminated, restarted, or beyond range)."""
    ses[s, S_PRESENT] = 0
    ses[s, S_POPPED] = 1
    ses[s, S_REMOVED] = 1
    ses[s, S_WRITTEN] = 0


@_jit
def _commit(rt, st, acc, grp, bk, ses, a, s, used, o):
    """``_Decider.commit``: charge ``used`` units, allowance first; False if unratable.
    Writes taken, uncharged, rated and allowance into the result row ``o``."""
    g = ses[s, S_GROUP]
    allowance = min(used, _free(grp, bk, g)) if used else np.int64(0)
    extra = used - allowance
    c = ses[s, S_CHARGEABLE]
    status, cost, rated = kernels.span_at(rt, st, ses[s, S_RATE], c, c + extra)
    if status != kernels.OK:
        return False
    taken, uncharged = _take(acc, a, cost)
    _consume(grp, bk, g, allowance)
    ses[s, S_CHARGEABLE] = c + extra
    ses[s, S_USED] += used
    o[O_TAKEN] = taken
    o[O_UNCHARGED] = uncharged
    o[O_RATED] = rated
    o[O_ALLOWANCE] = allowance
    return True


@_jit
def _grant(rt, st, acc, grp, bk, ses, held, a, s, requested):
    """``_Decider.grant``: reserve the largest affordable grant; its units."""
    g = ses[s, S_GROUP]
    free = _free(grp, bk, g)
    if acc[a, A_NEG]:
        available = min(acc[a, A_BAL] - acc[a, A_RES] + BALANCE_LIMIT,
                        BALANCE_LIMIT - acc[a, A_RES])
    else:
        available = acc[a, A_BAL] - acc[a, A_RES]
    granted, money = kernels.grant_at(rt, st, ses[s, S_RATE], ses[s, S_CHARGEABLE], free,
                                      requested, max(0, available))
    ses[s, S_GRANTED] = granted
    if granted == 0:
        return np.int64(0)
    ses[s, S_MONEY] = money
    acc[a, A_RES] += money
    # allowances.hold: min(granted, free) units, first bucket first
    units = min(granted, free)
    b0 = grp[g, G_B0]
    left = units
    for k in range(grp[g, G_B1] - b0):
        part = min(left, max(0, bk[b0 + k, B_UNITS] - bk[b0 + k, B_RES]))
        bk[b0 + k, B_RES] += part
        held[s, k] = part
        left -= part
    if units > 0:
        grp[g, G_CHANGED] = 1
    return granted


@_jit
def _usage(rt, st, acc, grp, bk, q, o, result):
    """``_Decider.usage``: an event (SUCCESS, may be refused) or a step of a session the
    account does not hold (SESSION_UNKNOWN, charged as far as the balance allows)."""
    a = q[R_ACCT]
    o[O_TARIFF] = q[R_TARIFF]
    if q[R_STATUS] != kernels.OK:
        o[O_RESULT] = RATING_FAILED
        o[O_DETAIL] = NO_RATE
        return
    r = q[R_RATE]
    g = q[R_GROUP]
    used = q[R_USED]
    allowance = min(used, _free(grp, bk, g))
    status, cost, rated = kernels.units_at(rt, st, r, used - allowance)
    if status != kernels.OK:
        o[O_RESULT] = RATING_FAILED
        o[O_DETAIL] = OVER_LIMIT
        o[O_VALUE] = used - allowance
        return
    if result == SUCCESS and not acc[a, A_NEG] and cost > acc[a, A_BAL] - acc[a, A_RES]:
        o[O_RESULT] = CREDIT_LIMIT
        return
    taken, uncharged = _take(acc, a, cost)
    _consume(grp, bk, g, allowance)
    if taken or uncharged or allowance:
        acc[a, A_CHANGED] = 1
    o[O_RESULT] = result
    o[O_TAKEN] = taken
    o[O_UNCHARGED] = uncharged
    o[O_RATED] = rated
    o[O_ALLOWANCE] = allowance
    o[O_RATE] = r


@_jit
def _initial(rt, st, acc, grp, bk, ses, held, tar, q, o, i):
    """``_Decider.initial``: release a restarted id's session, open and grant a new one."""
    a = q[R_ACCT]
    s = q[R_SLOT]
    acc[a, A_CHANGED] = 1
    if ses[s, S_PRESENT]:
        _release(acc, grp, bk, ses, held, a, s)
        _pop(ses, s)
    t = q[R_TARIFF]
    o[O_TARIFF] = t
    if q[R_STATUS] != kernels.OK:
        o[O_RESULT] = RATING_FAILED
        o[O_DETAIL] = NO_RATE
        return
    r = q[R_RATE]
    ses[s, S_GROUP] = q[R_GROUP]
    ses[s, S_RATE] = r
    ses[s, S_TARIFF] = t
    ses[s, S_CHARGEABLE] = 0
    ses[s, S_USED] = 0
    ses[s, S_GRANTED] = 0
    ses[s, S_MONEY] = 0
    held[s, :] = 0
    if not _commit(rt, st, acc, grp, bk, ses, a, s, q[R_USED], o):
        o[O_RESULT] = RATING_FAILED
        o[O_DETAIL] = OVER_LIMIT
        o[O_VALUE] = q[R_USED]
        return
    o[O_RATE] = r
    requested = q[R_REQUESTED] if q[R_REQUESTED] else tar[t, T_QUOTA]
    granted = _grant(rt, st, acc, grp, bk, ses, held, a, s, requested)
    if granted == 0:
        o[O_RESULT] = CREDIT_LIMIT
        o[O_FINAL] = 1
        return
    ses[s, S_SEQ] = q[R_SEQ] if q[R_HAS_SEQ] else 0
    ses[s, S_SEEN] = 1
    ses[s, S_PRESENT] = 1
    ses[s, S_INSERTED] = i
    ses[s, S_WRITTEN] = 1
    ses[s, S_OPENED] = 1
    ses[s, S_REMOVED] = 0
    o[O_RESULT] = SUCCESS
    o[O_GRANTED] = granted
    o[O_VALIDITY] = tar[t, T_VALIDITY]
    o[O_FINAL] = granted < requested


@_jit
def _step(rt, st, acc, grp, bk, ses, held, tar, q, o):
    """``_Decider.step``: update / terminate of a held session, at the session's rate."""
    a = q[R_ACCT]
    s = q[R_SLOT]
    t = ses[s, S_TARIFF]
    o[O_TARIFF] = t
    acc[a, A_CHANGED] = 1
    _release(acc, grp, bk, ses, held, a, s)
    before = ses[s, S_CHARGEABLE]
    if not _commit(rt, st, acc, grp, bk, ses, a, s, q[R_USED], o):
        _pop(ses, s)
        o[O_RESULT] = RATING_FAILED
        o[O_DETAIL] = SESSION_OVER_LIMIT
        o[O_VALUE] = before
        return
    o[O_RATE] = ses[s, S_RATE]
    if q[R_HAS_SEQ]:
        ses[s, S_SEQ] = q[R_SEQ]
    ses[s, S_SEEN] = 1
    requested = q[R_REQUESTED] if q[R_REQUESTED] else tar[t, T_QUOTA]
    granted = np.int64(0)
    o[O_RESULT] = SUCCESS
    if q[R_KIND] == TERMINATE:
        _pop(ses, s)
    else:
        granted = _grant(rt, st, acc, grp, bk, ses, held, a, s, requested)
        if granted == 0:
            o[O_RESULT] = CREDIT_LIMIT
        ses[s, S_WRITTEN] = 1
    o[O_GRANTED] = granted
    o[O_VALIDITY] = tar[t, T_VALIDITY] if granted else 0
    o[O_FINAL] = q[R_KIND] == UPDATE and granted < requested


@_jit
def decide_rows(rt, st, acc, grp, bk, ses, held, tar, req):
    """Apply the rules to every request row in order; the result rows (``O_*`` columns).
    ``acc``, ``grp``, ``bk``, ``ses`` and ``held`` are the state, changed in place."""
    n = req.shape[0]
    out = np.zeros((n, OUT_COLS), dtype=np.int64)
    for i in range(n):
        q = req[i]
        o = out[i]
        if q[R_DENIED]:
            o[O_RESULT] = SERVICE_DENIED
        elif q[R_KIND] == EVENT:
            _usage(rt, st, acc, grp, bk, q, o, SUCCESS)
        elif q[R_KIND] == INITIAL:
            _initial(rt, st, acc, grp, bk, ses, held, tar, q, o, i)
        elif ses[q[R_SLOT], S_PRESENT]:
            _step(rt, st, acc, grp, bk, ses, held, tar, q, o)
        else:
            _usage(rt, st, acc, grp, bk, q, o, SESSION_UNKNOWN)
        o[O_BALANCE] = acc[q[R_ACCT], A_BAL]
    return out
