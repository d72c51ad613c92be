"""The numba kernel that writes ``chargeflow rate``'s output lines for a block of requests.

Its Python side is ``charging.offline``. It copies each request's id from its input line as
it stands: the lines it is given hold no backslash, so every JSON string in them is its
UTF-8 text between two quotes, which is also how ``orjson`` writes it (orjson escapes only
'"', '\\' and control characters, none of which such a string holds).
"""

from __future__ import annotations

import numpy as np
from numba import njit

_jit = njit(cache=True, nogil=True)

_HEAD = np.frombuffer(b'{"id":"', dtype=np.uint8)
_COST = np.frombuffer(b'","cost":"', dtype=np.uint8)
_UNITS = np.frombuffer(b'","rated_units":', dtype=np.uint8)
OUT_SLACK = 96  # bytes per line besides the id, the rate's tail and the numbers' digits


@_jit
def _id_span(text, start, end):
    """(first byte, end byte) of the string value of key "id" in the flat JSON object
    text[start:end] (no backslashes in it), or (-1, -1)."""
    i = start
    while i < end:
        if text[i] != 34:  # '"': only strings start with one outside a string
            i += 1
            continue
        j = i + 1
        while j < end and text[j] != 34:
            j += 1
        k = j + 1
        while k < end and (text[k] == 32 or text[k] == 9 or text[k] == 13 or text[k] == 10):
            k += 1
        if k < end and text[k] == 58:  # ':': the string was a key
            if j - i == 3 and text[i + 1] == 105 and text[i + 2] == 100:  # "id"
                k += 1
                while k < end and (text[k] == 32 or text[k] == 9 or text[k] == 13
                                   or text[k] == 10):
                    k += 1
                if k < end and text[k] == 34:
                    v = k + 1
                    w = v
                    while w < end and text[w] != 34:
                        w += 1
                    return v, w
                return -1, -1
        i = j + 1
    return -1, -1


@_jit
def _put(out, at, src):
    for k in range(src.shape[0]):
        out[at + k] = src[k]
    return at + src.shape[0]


@_jit
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
def format_lines(text, line_start, line_end, fast, rate, cost, rated, decimals, tails,
                 tail_start, capacity):
    """Output bytes for the rows with ``fast`` set, in order, and ``ends[i]``: where row
    i's line ends in them (a row not fast adds nothing); ``found[i]`` False where a fast
    row's id was not found (the caller takes that row another way).

    A line: ``{"id":"<id>","cost":"<whole>.<fraction>","rated_units":<n>`` and the rate's
    tail, ``,"tariff":"T","rate":"R"}``; ``decimals`` and ``tail_start`` per rate."""
    n = fast.shape[0]
    out = np.empty(capacity, dtype=np.uint8)
    ends = np.zeros(n, dtype=np.int64)
    found = np.ones(n, dtype=np.bool_)
    at = 0
    for i in range(n):
        if fast[i]:
            a, b = _id_span(text, line_start[i], line_end[i])
            if a < 0:
                found[i] = False
            else:
                r = rate[i]
                at = _put(out, at, _HEAD)
                for k in range(a, b):
                    out[at] = text[k]
                    at += 1
                at = _put(out, at, _COST)
                d = decimals[r]
                scale = 10 ** d
                micros = cost[i]
                at = _put_int(out, at, micros // 1_000_000, 1)
                if d > 0:
                    out[at] = 46  # '.'
                    at = _put_int(out, at + 1, (micros % 1_000_000) // (1_000_000 // scale),
                                  d)
                at = _put(out, at, _UNITS)
                at = _put_int(out, at, rated[i], 1)
                at = _put(out, at, tails[tail_start[r]:tail_start[r + 1]])
        ends[i] = at
    return out[:at], ends, found
