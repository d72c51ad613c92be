"""The numba kernels of ``chargeflow rate``'s columnar path (its Python side is
``charging.offline``): ``scan_lines`` reads a block's requests from the bytes into the
rating kernel's arrays, ``format_lines`` writes the output lines.

Both take strings as they stand in the input: a line the fast path takes holds no
backslash, so each JSON string in it is its UTF-8 text between two quotes (msgspec has
checked the text is valid JSON and UTF-8), which is also how ``orjson`` writes that string
(it escapes only '"', '\\' and control characters, none of which such a string holds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True)
_inline = njit(cache=True, nogil=True, inline="always")

_HEAD = np.frombuffer(b'{"id":"', dtype=np.uint8)
_COST = np.frombuffer(b'","cost":"', dtype=np.uint8)
_UNITS = np.frombuffer(b'","rated_units":', dtype=np.uint8)
OUT_SLACK = 96  # bytes per line besides the id, the rate's tail and the numbers' digits


@_inline
def _put(out, at, src):
    for k in range(src.shape[0]):
        out[at + k] = src[k]
    return at + src.shape[0]


@_inline
def _put_int(out, at, value, width):
    """value >= 0 in decimal, zero-padded to at least ``width`` digits."""
    digits = 1
    v = value // 10
    while v > 0:
        digits += 1
        v //= 10
    if digits < width:
        digits = width
    v = value
    for k in range(digits - 1, -1, -1):
        out[at + k] = 48 + v % 10
        v //= 10
    return at + digits


@_jit
def format_lines(text, id_a, id_b, fast, rate, cost, rated, decimals, tails, tail_start,
                 capacity):
    """Output bytes for the rows with ``fast`` set, in order, and ``ends[i]``: where row
    i's line ends in them (a row not fast adds nothing).

    A line: ``{"id":"<id>","cost":"<whole>.<fraction>","rated_units":<n>`` and the rate's
    tail, ``,"tariff":"T","rate":"R"}`` and a newline; the id is text[id_a:id_b];
    ``decimals`` and ``tail_start`` are per rate."""
    n = fast.shape[0]
    out = np.empty(capacity, dtype=np.uint8)
    ends = np.zeros(n, dtype=np.int64)
    at = 0
    for i in range(n):
        if fast[i]:
            r = rate[i]
            at = _put(out, at, _HEAD)
            for k in range(id_a[i], id_b[i]):
                out[at] = text[k]
                at += 1
            at = _put(out, at, _COST)
            d = decimals[r]
            micros = cost[i]
            at = _put_int(out, at, micros // 1_000_000, 1)
            if d > 0:
                out[at] = 46  # '.'
                at = _put_int(out, at + 1, (micros % 1_000_000) // 10 ** (6 - d), d)
            at = _put(out, at, _UNITS)
            at = _put_int(out, at, rated[i], 1)
            at = _put(out, at, tails[tail_start[r]:tail_start[r + 1]])
        ends[i] = at
    return out[:at], ends


# ---------------------------------------------------------------- reading the fields

# What a key is to the scanner (``KEYS`` in charging.offline gives the names in this order).
K_ID, K_SERVICE, K_TS, K_USED, K_DESTINATION, K_PLAN = 0, 1, 2, 3, 4, 5  # 6.. : line by line
_STR, _INT, _NULL = 1, 2, 3
_NO, _OK, _BLANK = 0, 1, 2  # what _scan makes of a line
_MAX_UNITS = 2**40


@_inline
def _ws(c):
    return c == 32 or c == 9 or c == 13 or c == 10


@_inline
def _lookup(text, a, b, names, name_start):
    """The index of text[a:b] among the names (concatenated, ``name_start`` bounds), or -1."""
    for k in range(name_start.shape[0] - 1):
        s = name_start[k]
        if name_start[k + 1] - s != b - a:
            continue
        same = True
        for j in range(b - a):
            if names[s + j] != text[a + j]:
                same = False
                break
        if same:
            return k
    return -1


@_inline
def _digits(text, a, b):
    """A non-negative integer of 1-13 plain digits, else -1."""
    if b - a < 1 or b - a > 13:
        return -1
    v = 0
    for k in range(a, b):
        c = text[k]
        if c < 48 or c > 57:
            return -1
        v = v * 10 + (c - 48)
    return v


@_inline
def _two(text, k):
    c, d = text[k], text[k + 1]
    if c < 48 or c > 57 or d < 48 or d > 57:
        return -1
    return (c - 48) * 10 + (d - 48)


@_jit
def rfc3339_ms(text, a, b, min_ms, max_ms):
    """Epoch ms of the RFC 3339 time text[a:b], or -1 where it is another shape, outside
    [min_ms, max_ms), or a date or time ``datetime`` might treat otherwise than plainly
    (hour 24, second 60, an offset of 24 hours or more): those go line by line."""
    n = b - a
    if n < 20 or n > 35:
        return -1
    last = text[b - 1]
    zulu = last == 90 or last == 122  # Z z
    zone = 1 if zulu else 6
    frac = n - 19 - zone  # the '.' and its digits
    if frac != 0 and (frac < 2 or frac > 10):
        return -1
    if text[a + 4] != 45 or text[a + 7] != 45 or text[a + 13] != 58 or text[a + 16] != 58:
        return -1
    sep = text[a + 10]
    if sep != 84 and sep != 116 and sep != 32:  # T t space
        return -1
    y1, y2 = _two(text, a), _two(text, a + 2)
    month, day = _two(text, a + 5), _two(text, a + 8)
    hour, minute, second = _two(text, a + 11), _two(text, a + 14), _two(text, a + 17)
    if y1 < 0 or y2 < 0 or month < 0 or day < 0 or hour < 0 or minute < 0 or second < 0:
        return -1
    year = y1 * 100 + y2
    if year < 1 or month < 1 or month > 12 or day < 1 or hour > 23 or minute > 59 \
            or second > 59:
        return -1
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    dim = 31
    if month == 2:
        dim = 29 if leap else 28
    elif month == 4 or month == 6 or month == 9 or month == 11:
        dim = 30
    if day > dim:
        return -1
    ms = 0
    if frac:
        if text[a + 19] != 46:
            return -1
        for k in range(a + 20, a + 19 + frac):
            c = text[k]
            if c < 48 or c > 57:
                return -1
        scale = 100
        for k in range(a + 20, min(a + 23, a + 19 + frac)):
            ms += (text[k] - 48) * scale
            scale //= 10
    offset = 0
    if not zulu:
        z = b - 6
        sign = text[z]
        if (sign != 43 and sign != 45) or text[z + 3] != 58:
            return -1
        oh, om = _two(text, z + 1), _two(text, z + 4)
        if oh < 0 or om < 0 or oh > 23 or om > 59:
            return -1
        offset = oh * 3600 + om * 60
        if sign == 45:
            offset = -offset
    # days since 1970-01-01 (H. Hinnant's days_from_civil)
    yy = year - 1 if month <= 2 else year
    era = yy // 400
    yoe = yy - era * 400
    doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
    days = era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468
    t = (days * 86400 + hour * 3600 + minute * 60 + second - offset) * 1000 + ms
    if t < min_ms or t >= max_ms:
        return -1
    return t


@_jit
def scan_lines(text, n, keys, key_start, services, service_start, service_ids, plans,
               plan_start, plan_ids, default_plan, max_digits, min_ms, max_ms, max_payload):
    """Read the requests of a block of ``n`` JSONL lines (``text``, split at b"\\n") that
    msgspec decoded: each line is blank or one JSON value.

    Per line: ``blank`` (JSON whitespace only), ``ok`` (the fast path can rate and write
    it: at most ``max_payload`` bytes, a flat object, no backslash, every field as
    ``requests.parse`` accepts it, no key given twice, none of the fields it does not
    read), the id's byte span, and the kernel's inputs."""
    blank = np.zeros(n, dtype=np.bool_)
    ok = np.zeros(n, dtype=np.bool_)
    id_a = np.zeros(n, dtype=np.int64)
    id_b = np.zeros(n, dtype=np.int64)
    service = np.full(n, -1, dtype=np.int64)
    plan = np.full(n, default_plan, dtype=np.int64)
    ts = np.zeros(n, dtype=np.int64)
    used = np.zeros(n, dtype=np.int64)
    digits = np.zeros((n, max_digits), dtype=np.uint8)
    ndigits = np.zeros(n, dtype=np.int64)
    end = text.shape[0]
    a = 0
    for i in range(n):
        b = a
        while b < end and text[b] != 10:
            b += 1
        got = _scan(text, a, b, i, keys, key_start, services, service_start, service_ids,
                    plans, plan_start, plan_ids, max_digits, min_ms, max_ms, id_a, id_b,
                    service, plan, ts, used, digits, ndigits)
        blank[i] = got == _BLANK
        ok[i] = got == _OK and b - a <= max_payload
        a = b + 1
    return blank, ok, id_a, id_b, service, plan, ts, used, digits, ndigits


@_jit
def _scan(text, a, b, i, keys, key_start, services, service_start, service_ids, plans,
          plan_start, plan_ids, max_digits, min_ms, max_ms, id_a, id_b, service, plan, ts,
          used, digits, ndigits):
    """One line's fields into row i of the arrays: _OK, _BLANK, or _NO where the line goes
    line by line."""
    p = a
    while p < b and _ws(text[p]):
        p += 1
    if p >= b:
        return _BLANK
    if text[p] != 123:  # '{'
        return _NO
    p += 1
    seen = 0
    while True:
        while p < b and _ws(text[p]):
            p += 1
        if p >= b:
            return _NO
        if text[p] == 125:  # '}'
            break
        if text[p] == 44:  # ','
            p += 1
            continue
        if text[p] != 34:
            return _NO
        ka = p + 1
        p = ka
        while p < b and text[p] != 34:
            if text[p] == 92:  # an escape: the string is not as it stands
                return _NO
            p += 1
        kb = p
        p += 1
        while p < b and _ws(text[p]):
            p += 1
        if p >= b or text[p] != 58:  # ':'
            return _NO
        p += 1
        while p < b and _ws(text[p]):
            p += 1
        if p >= b:
            return _NO
        c = text[p]
        if c == 34:
            kind = _STR
            va = p + 1
            p = va
            while p < b and text[p] != 34:
                if text[p] == 92:
                    return _NO
                p += 1
            vb = p
            p += 1
        elif c == 110:  # null
            kind = _NULL
            va = vb = p
            p += 4
        else:
            kind = _INT
            va = p
            while p < b and (text[p] == 45 or 48 <= text[p] <= 57):
                p += 1
            vb = p
        key = _lookup(text, ka, kb, keys, key_start)
        if key < 0 or key > K_PLAN or (seen >> key) & 1:  # not read here, or given twice
            return _NO
        seen |= 1 << key
        if key == K_ID:
            if kind != _STR:
                return _NO
            chars = 0
            for k in range(va, vb):
                if text[k] & 0xC0 != 0x80:
                    chars += 1
            if chars < 1 or chars > 128:
                return _NO
            id_a[i], id_b[i] = va, vb
        elif key == K_SERVICE:
            if kind != _STR:
                return _NO
            k = _lookup(text, va, vb, services, service_start)
            if k < 0:
                return _NO
            service[i] = service_ids[k]
        elif key == K_TS:
            if kind == _STR:
                ts[i] = rfc3339_ms(text, va, vb, min_ms, max_ms)
            elif kind == _INT:
                ts[i] = _digits(text, va, vb)
                if ts[i] < min_ms or ts[i] >= max_ms:
                    return _NO
            else:
                return _NO
            if ts[i] < 0:
                return _NO
        elif key == K_USED:
            if kind == _INT:
                used[i] = _digits(text, va, vb)
                if used[i] < 0 or used[i] > _MAX_UNITS:
                    return _NO
            elif kind != _NULL:
                return _NO
        elif key == K_DESTINATION:
            if kind == _STR:
                s = va + 1 if vb > va and text[va] == 43 else va  # one leading '+'
                if vb - s < 1 or vb - s > 32:
                    return _NO
                for k in range(s, vb):
                    if text[k] < 48 or text[k] > 57:
                        return _NO
                m = min(vb - s, max_digits)
                for k in range(m):
                    digits[i, k] = text[s + k] - 48
                ndigits[i] = m
            elif kind != _NULL:
                return _NO
        elif key == K_PLAN:
            if kind == _STR:
                k = _lookup(text, va, vb, plans, plan_start)
                if k < 0:
                    return _NO
                plan[i] = plan_ids[k]
            elif kind != _NULL:
                return _NO
    need = (1 << K_ID) | (1 << K_SERVICE) | (1 << K_TS)
    return _OK if seen & need == need else _NO
