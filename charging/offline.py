"""Offline rating of JSONL requests (``chargeflow rate``, CONTRACT §5): bytes in, lines out.

Two paths give the same bytes. ``rate_lines`` is the reference, one request at a time:
``requests.decode`` and ``requests.parse`` per line, ``rating.rate_requests`` per batch,
``orjson`` per output line. ``rate_block`` is the columnar path: it decodes a whole block of
lines in one msgspec call into structs of the request's known fields, checks the fields
column by column with numpy (what ``parse`` would accept), rates the block with the numba
kernel in one call, and formats each output line with one ``%`` operation from a template
per rate. A line the columnar checks cannot clear — invalid, malformed, with an escape,
a duplicate key, a field the fast path does not read (kind, account, session, ...), a
rating that is an error (service not in plan, no rate, over the limit) — goes through
``rate_lines`` on its own, so every error and edge case is the reference's, byte for byte
(tests/charging/test_offline.py compares the two on random input).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from operator import attrgetter

import msgspec
import numpy as np
import orjson

from charging import kernels, offline_kernels
from charging.compiler import MAX_DIGITS, CompiledCatalog
from charging.errors import RequestError
from charging.rating import rate_requests
from charging.requests import MAX_PAYLOAD, MAX_UNITS, decode, parse
from charging.timezones import MAX_TS_MS, MIN_TS_MS

UNSET = msgspec.UNSET
_MAX_FAILURES = 16  # decode failures in one block before its remaining lines go line by line


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    """Every field ``parse`` reads, typed as the fast path takes them; any other field or
    type fails the decode (then the failing line is found and rated by ``rate_lines``).
    UNSET (absent) and None (null) are told apart only to count the keys a line held."""

    id: str | None | msgspec.UnsetType = UNSET
    service: str | None | msgspec.UnsetType = UNSET
    ts: int | str | None | msgspec.UnsetType = UNSET
    used: int | None | msgspec.UnsetType = UNSET
    destination: str | None | msgspec.UnsetType = UNSET
    plan: str | None | msgspec.UnsetType = UNSET
    kind: str | None | msgspec.UnsetType = UNSET
    account: str | None | msgspec.UnsetType = UNSET
    session: str | None | msgspec.UnsetType = UNSET
    seq: int | None | msgspec.UnsetType = UNSET
    requested: int | None | msgspec.UnsetType = UNSET
    reply_to: str | None | msgspec.UnsetType = UNSET


_FAST = ("id", "service", "ts", "used", "destination", "plan")
_OTHER = ("kind", "account", "session", "seq", "requested", "reply_to")  # present: line by line
_DECODER = msgspec.json.Decoder(_Line)  # decode_lines: one _Line per line
_AT_ITEM = re.compile(r"at `\$\[(\d+)\]")
_AT_BYTE = re.compile(r"\(byte (\d+)\)")


# ---------------------------------------------------------------- the reference path


def rate_lines(compiled: CompiledCatalog, chunk: Sequence[tuple[int, bytes]],
               plan: str | None) -> list[str]:
    """One output line per non-blank input line, one request at a time: ``chunk`` is
    (line number, line) pairs, the number naming the line in a reject's detail."""
    rows: list[dict | None] = []
    valid = []
    for lineno, line in chunk:
        if not line.strip():
            continue
        try:
            valid.append(parse(decode(line.rstrip(b"\r\n")), rating_only=True))
            rows.append(None)
        except RequestError as exc:
            rows.append({"id": exc.request_id, "error": exc.code,
                         "detail": f"line {lineno}: {exc.detail}"})
    rated = iter(rate_requests(compiled, valid, plan))
    return [orjson.dumps(row if row is not None else next(rated).as_json()).decode()
            for row in rows]


# ---------------------------------------------------------------- the columnar path


class _Index(dict):
    """Name -> index; -1 for anything else (another name, None, UNSET)."""

    def __missing__(self, key: object) -> int:
        return -1


class OfflineRater:
    """The columnar path for one catalog and default plan: lookup tables and output
    templates made once, ``rate_block`` per block of lines."""

    def __init__(self, compiled: CompiledCatalog, plan: str | None) -> None:
        self.compiled = compiled
        self.plan = plan
        default = plan or compiled.catalog.first_plan()
        self.default_plan = compiled.plan_index[default]
        # names the fast path can take as given: what parse accepts and the catalog knows
        self.services = _Index((s, i) for s, i in compiled.service_index.items()
                               if 1 <= len(s) <= 64)
        self.plans = _Index((p, i) for p, i in compiled.plan_index.items() if 1 <= len(p) <= 64)
        rates = range(len(compiled.rate_ids))
        tails = [self._tail(r) for r in rates]
        self.tails = np.frombuffer(b"".join(tails) or b" ", dtype=np.uint8)
        self.tail_start = np.cumsum([0] + [len(t) for t in tails], dtype=np.int64)
        self.tail_max = max(map(len, tails), default=0)
        self.decimals = np.array([compiled.catalog.tariffs[self._tariff(r)].decimals
                                  for r in rates] or [0], dtype=np.int64)

    def _tariff(self, r: int) -> str:
        return self.compiled.tariff_names[self.compiled.rate_tariff[r]]

    def _tail(self, r: int) -> bytes:
        """What follows rated_units in rate r's output lines (``Rated.as_json`` as orjson
        writes it), with the line's end."""
        whole = orjson.dumps({"rated_units": 0, "tariff": self._tariff(r),
                              "rate": self.compiled.rate_ids[r]})
        return whole[len(b'{"rated_units":0'):] + b"\n"

    def rate_block(self, lines: Sequence[bytes], first_lineno: int) -> str:
        """The output for ``lines`` (numbered from ``first_lineno``, blank ones included
        and skipped as ``rate_lines`` skips them), each line ending in a newline: what
        ``rate_lines`` gives."""
        out: list[str] = []
        failures = 0
        pending = [(0, len(lines), False)]  # a stack: (start, end, line by line)
        while pending:
            start, end, slow = pending.pop()
            if start >= end:
                continue
            if slow or failures >= _MAX_FAILURES or end - start <= 2:
                out.append(self._slow(lines, first_lineno, start, end))
                continue
            part = lines[start:end]
            try:
                text = b"\n".join(part)
                rows = _DECODER.decode_lines(text)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                failures += 1
                bad = _culprit(str(exc), part)
                if bad is None:  # no position given: halve
                    mid = (start + end) // 2
                    pending += [(mid, end, False), (start, mid, False)]
                else:  # before the culprit, the culprit line by line, after it
                    at = start + bad
                    pending += [(at + 1, end, False), (at, at + 1, True), (start, at, False)]
                continue
            out.append(self._columns(lines, first_lineno, start, end, text, rows))
        return "".join(out)

    def _slow(self, lines: Sequence[bytes], first_lineno: int, start: int, end: int) -> str:
        rated = rate_lines(self.compiled, [(first_lineno + i, lines[i])
                                           for i in range(start, end)], self.plan)
        return "".join(line + "\n" for line in rated)

    def _columns(self, lines: Sequence[bytes], first_lineno: int, start: int, end: int,
                 text: bytes, rows: list[_Line]) -> str:
        """Rate decoded ``rows`` of ``lines[start:end]``; lines that need the reference go
        to it one by one, the rest are formatted from the kernel's arrays."""
        part = lines[start:end]
        nonblank = list(filter(bytes.strip, part))
        if len(nonblank) != len(part):
            index = [start + i for i, line in enumerate(part) if line.strip()]
        else:
            index = list(range(start, end))
        if len(rows) != len(index):  # a line held two values: find it line by line
            return self._slow(lines, first_lineno, start, end)
        n = len(rows)
        ok = np.ones(n, dtype=bool)
        cols = {f: list(map(attrgetter(f), rows)) for f in _FAST}
        keys = 0
        strings = 0
        for f in _OTHER:  # present (even null): the line goes line by line
            col = list(map(attrgetter(f), rows))
            absent = col.count(UNSET)
            if absent != n:
                ok &= np.fromiter((v is UNSET for v in col), dtype=bool, count=n)
                keys += n - absent
                strings += sum(type(v) is str for v in col)
        for f, col in cols.items():
            keys += n - col.count(UNSET)
        ids = cols["id"]
        id_ok, id_len = _texts(ids, n)
        ok &= id_ok & (id_len >= 1) & (id_len <= 128)
        strings += int(id_ok.sum())
        service = np.fromiter(map(self.services.__getitem__, cols["service"]), dtype=np.int64,
                              count=n)
        ok &= service >= 0
        strings += n - cols["service"].count(None) - cols["service"].count(UNSET)
        plan = self._plans(cols["plan"], n, ok)
        strings += n - cols["plan"].count(None) - cols["plan"].count(UNSET)
        used = _units(cols["used"], n, ok)
        ts, ts_strings = _timestamps(cols["ts"], n, ok)
        strings += ts_strings
        digits, ndigits, dest_strings = _destinations(cols["destination"], n, ok)
        strings += dest_strings
        if text.count(b'"') != 2 * (keys + strings):
            # some line gave a key twice or holds an escaped '"': find them one by one
            ok &= _plain_lines(rows, [lines[i] for i in index])
        if b"\\" in text:  # an escape: the fast path copies strings as they stand
            ok &= np.fromiter((b"\\" not in lines[i] for i in index), dtype=bool, count=n)
        lengths = np.fromiter(map(len, part), dtype=np.int64, count=len(part))
        local = np.array(index, dtype=np.int64) - start
        ok &= lengths[local] <= MAX_PAYLOAD
        status, rate, cost, rated = kernels.rate_batch(
            self.compiled.tables, plan, np.where(ok, service, -1), ts, digits, ndigits, used)
        ok &= status == kernels.OK
        decimals = self.decimals[np.where(ok, rate, 0)]
        ok &= (cost >= 0) & (cost % (10 ** (6 - decimals)) == 0)
        starts = np.cumsum(lengths + 1) - lengths - 1
        buf, ends, found = offline_kernels.format_lines(
            np.frombuffer(text, dtype=np.uint8), starts[local], starts[local] + lengths[local],
            ok, rate, cost, rated, self.decimals, self.tails, self.tail_start,
            len(text) + n * (offline_kernels.OUT_SLACK + self.tail_max))
        ok &= found
        slow = np.flatnonzero(~ok).tolist()
        if not slow:
            return buf.tobytes().decode()
        rated_slow = rate_lines(self.compiled, [(first_lineno + index[i], lines[index[i]])
                                                for i in slow], self.plan)
        pieces, prev = [], 0
        for i, line in zip(slow, rated_slow, strict=True):
            pieces += [buf[prev:ends[i]].tobytes().decode(), line, "\n"]
            prev = int(ends[i])
        pieces.append(buf[prev:].tobytes().decode())
        return "".join(pieces)

    def _plans(self, col: list, n: int, ok: np.ndarray) -> np.ndarray:
        if col.count(UNSET) + col.count(None) == n:
            return np.full(n, self.default_plan, dtype=np.int64)
        default = self.default_plan
        plans = self.plans
        plan = np.fromiter((default if v is None or v is UNSET else plans[v] for v in col),
                           dtype=np.int64, count=n)
        ok &= plan >= 0
        return np.maximum(plan, 0)


def _culprit(message: str, part: Sequence[bytes]) -> int | None:
    """The index in ``part`` of the line a decode error names, if it names one: by byte
    offset in the joined lines, or by item (the line of that index, when no line before it
    was blank; a wrong guess only costs another decode)."""
    m = _AT_BYTE.search(message)
    if m:
        pos = int(m.group(1))
        for i, line in enumerate(part):
            pos -= len(line) + 1
            if pos < 0:
                return i
        return len(part) - 1
    m = _AT_ITEM.search(message)
    if m:
        return min(int(m.group(1)), len(part) - 1)
    return None


def _texts(col: list, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(is a string, its length in characters) per value."""
    if col.count(None) + col.count(UNSET) == 0:
        return np.ones(n, dtype=bool), np.fromiter(map(len, col), dtype=np.int64, count=n)
    is_str = np.fromiter((type(v) is str for v in col), dtype=bool, count=n)
    lengths = np.fromiter((len(v) if type(v) is str else 0 for v in col), dtype=np.int64,
                          count=n)
    return is_str, lengths


def _units(col: list, n: int, ok: np.ndarray) -> np.ndarray:
    """``used`` as int64 (absent or null: 0); outside 0..MAX_UNITS clears ``ok``."""
    if col.count(None) + col.count(UNSET):
        col = [0 if v is None or v is UNSET else v for v in col]
    try:
        used = np.fromiter(col, dtype=np.int64, count=n)
    except OverflowError:
        col = [v if -1 < v <= MAX_UNITS else -1 for v in col]
        used = np.fromiter(col, dtype=np.int64, count=n)
    ok &= (used >= 0) & (used <= MAX_UNITS)
    return np.where(ok, used, 0)


def _timestamps(col: list, n: int, ok: np.ndarray) -> tuple[np.ndarray, int]:
    """(epoch ms, how many were strings): epoch-ms integers and RFC 3339 strings of the
    common shapes; anything else (absent, out of range, another shape) clears ``ok``."""
    ts = np.zeros(n, dtype=np.int64)
    is_str = [type(v) is str for v in col]
    strings = sum(is_str)
    if strings != n:
        ints = [v if type(v) is int and MIN_TS_MS <= v < MAX_TS_MS else -1 if not s else 0
                for v, s in zip(col, is_str)]
        ts = np.fromiter(ints, dtype=np.int64, count=n)
        ok &= ts >= 0
    if strings:
        where = np.flatnonzero(is_str) if strings != n else None
        texts = col if where is None else [col[i] for i in where.tolist()]
        ms, good = rfc3339_ms(texts)
        if where is None:
            ts, ok_s = ms, good
            ok &= ok_s
        else:
            ts[where] = ms
            ok[where] &= good
    return np.where(ok, ts, 0), strings


def rfc3339_ms(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(epoch ms, parsed) of RFC 3339 strings, column-wise: the values and the acceptance
    of ``requests.parse_rfc3339`` for the strings it marks parsed, also in range
    (``MIN_TS_MS`` to ``MAX_TS_MS``). Not parsed: other shapes, and dates, times and
    offsets ``datetime`` might treat otherwise than plainly (hour 24, second 60, an offset
    of 24 hours or more): the caller takes those line by line."""
    n = len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    good = (lengths >= 20) & (lengths <= 35)
    if not good.any():
        return np.zeros(n, dtype=np.int64), good
    width = int(lengths[good].max())
    chars = np.array([t if 20 <= len(t) <= 35 else "" for t in texts], dtype=f"<U{width}")
    c = chars.view(np.uint32).reshape(n, width).astype(np.int64)
    rows = np.arange(n)
    last = c[rows, np.maximum(lengths - 1, 0)]
    zulu = (last == ord("Z")) | (last == ord("z"))
    zone_len = np.where(zulu, 1, 6)
    frac_len = lengths - 19 - zone_len  # '.' and its digits
    digit = (c >= 48) & (c <= 57)
    d = c - 48

    def num(a: int, b: int) -> np.ndarray:
        v = np.zeros(n, dtype=np.int64)
        for k in range(a, b):
            v = v * 10 + d[:, k]
        return v

    for k in (0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18):
        good &= digit[:, k]
    good &= (c[:, 4] == 45) & (c[:, 7] == 45) & (c[:, 13] == 58) & (c[:, 16] == 58)
    sep = c[:, 10]
    good &= (sep == ord("T")) | (sep == ord("t")) | (sep == 32)
    good &= (frac_len == 0) | ((frac_len >= 2) & (frac_len <= 10))
    has_frac = frac_len > 0
    good &= ~has_frac | (c[:, 19] == ord("."))
    cols = np.arange(width)
    in_frac = (cols[None, :] >= 20) & (cols[None, :] < (19 + frac_len)[:, None])
    good &= ~(in_frac & ~digit).any(axis=1)
    z0 = np.maximum(lengths - 6, 0)
    sign = c[rows, z0]
    offset_ok = (((sign == 43) | (sign == 45)) & digit[rows, z0 + 1] & digit[rows, z0 + 2]
                 & (c[rows, z0 + 3] == 58) & digit[rows, z0 + 4] & digit[rows, np.minimum(z0 + 5, width - 1)])
    good &= zulu | offset_ok
    year, month, day = num(0, 4), num(5, 7), num(8, 10)
    hour, minute, second = num(11, 13), num(14, 16), num(17, 19)
    good &= (year >= 1) & (month >= 1) & (month <= 12) & (day >= 1)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    dim = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])[np.clip(month, 0, 12)]
    dim = dim + ((month == 2) & leap)
    good &= (day <= dim) & (hour <= 23) & (minute <= 59) & (second <= 59)
    oh = d[rows, z0 + 1] * 10 + d[rows, z0 + 2]
    om = d[rows, z0 + 4] * 10 + d[rows, np.minimum(z0 + 5, width - 1)]
    good &= zulu | ((oh <= 23) & (om <= 59))
    offset = np.where(zulu, 0, np.where(sign == 45, -1, 1) * (oh * 3600 + om * 60))
    # milliseconds: the first three fraction digits, padded with zeros
    ms_part = np.zeros(n, dtype=np.int64)
    for k, scale in ((20, 100), (21, 10), (22, 1)):
        if k < width:
            ms_part += np.where(cols[k] < 19 + frac_len, d[:, min(k, width - 1)], 0) * scale
    seconds = (_days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60
               + second - offset)
    ms = seconds * 1000 + ms_part
    good &= (ms >= MIN_TS_MS) & (ms < MAX_TS_MS)
    return np.where(good, ms, 0), good


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m + 9) % 12
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _destinations(col: list, n: int, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(digits, digit counts, how many were strings) of E.164 destinations as
    ``rating.destination_digits`` makes them; one ``parse`` would refuse clears ``ok``."""
    digits = np.zeros((n, MAX_DIGITS), dtype=np.uint8)
    ndigits = np.zeros(n, dtype=np.int64)
    absent = col.count(None) + col.count(UNSET)
    if absent == n:
        return digits, ndigits, 0
    where = np.flatnonzero([type(v) is str for v in col])
    texts = [col[i] for i in where.tolist()]
    m = len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=m)
    fits = (lengths >= 1) & (lengths <= 33)
    width = int(lengths[fits].max()) if fits.any() else 1
    chars = np.array([t if 1 <= len(t) <= 33 else "" for t in texts], dtype=f"<U{width}")
    c = chars.view(np.uint32).reshape(m, width).astype(np.int64)
    plus = c[:, 0] == 43
    count = lengths - plus
    good = fits & (count >= 1) & (count <= 32)
    cols = np.arange(width)
    inside = (cols[None, :] >= plus[:, None]) & (cols[None, :] < lengths[:, None])
    good &= ~(inside & ((c < 48) | (c > 57))).any(axis=1)
    take = np.minimum(plus[:, None] + np.arange(MAX_DIGITS)[None, :], width - 1)
    got = np.take_along_axis(c, take, axis=1) - 48
    keep = np.arange(MAX_DIGITS)[None, :] < np.minimum(count, MAX_DIGITS)[:, None]
    digits[where] = np.where(keep & good[:, None], got, 0).astype(np.uint8)
    ndigits[where] = np.where(good, np.minimum(count, MAX_DIGITS), 0)
    ok[where] &= good  # null or absent: no destination, fine
    return digits, ndigits, m


def _plain_lines(rows: list[_Line], lines: list[bytes]) -> np.ndarray:
    """Per line: its '"' count is twice its keys and string values (no key given twice,
    no escaped '"')."""
    out = np.empty(len(rows), dtype=bool)
    for i, (row, line) in enumerate(zip(rows, lines)):
        keys = strings = 0
        for f in _Line.__struct_fields__:
            v = getattr(row, f)
            if v is not UNSET:
                keys += 1
                strings += type(v) is str
        out[i] = line.count(b'"') == 2 * (keys + strings)
    return out
