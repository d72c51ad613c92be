"""Offline rating of JSONL requests (``chargeflow rate``, CONTRACT §5): bytes in, lines out.

Two paths give the same bytes. ``rate_lines`` is the reference, one request at a time:
``requests.decode`` and ``requests.parse`` per line, ``rating.rate_requests`` per batch,
``orjson`` per output line. ``OfflineRater.rate_block`` is the columnar path for a block of
lines: msgspec checks in one call that each line is a flat JSON object of the request's
fields with values of the right JSON types; a numba scanner reads the fields from the
bytes into arrays and checks them as ``parse`` would (``offline_kernels.scan_lines``); the
rating kernel rates the block in one call; a numba writer builds the output lines
(``offline_kernels.format_lines``). A line the fast path does not clear — malformed,
invalid, with an escape, a key given twice, a field the fast path does not read (kind,
account, session, ...), a rating that is an error (service not in plan, no rate, over the
limit) — goes through ``rate_lines`` on its own, in its place, so every error and edge case
is the reference's, byte for byte (tests/charging/test_offline.py compares the two on
random input). Where msgspec refuses a block, the line it names goes line by line and the
lines around it are tried again.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import msgspec
import numpy as np
import orjson

from charging import kernels, offline_kernels
from charging.compiler import MAX_DIGITS, CompiledCatalog
from charging.errors import RequestError
from charging.rating import rate_requests
from charging.requests import MAX_PAYLOAD, decode, parse
from charging.timezones import MAX_TS_MS, MIN_TS_MS

UNSET = msgspec.UNSET
# A block msgspec refuses is tried again in pieces of _PIECE lines, each allowed
# _MAX_FAILURES lines that fail the decode (each costs a decode of the rest of the piece)
# before the whole piece goes line by line.
_PIECE = 512
_MAX_FAILURES = 8


class _Line(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """Every field ``parse`` reads, typed as the fast path takes them: any other field, a
    nested value or another type fails the decode (the failing line is then rated by
    ``rate_lines``). Only the decode's verdict is used; the scanner reads the bytes."""

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


# the order of offline_kernels.K_*: the first six are read by the fast path, a line with any
# of the others goes line by line
KEYS = ("id", "service", "ts", "used", "destination", "plan", "kind", "account", "session",
        "seq", "requested", "reply_to")
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


def _names(names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 names concatenated, and their bounds (``offline_kernels._lookup``'s table)."""
    raw = [name.encode() for name in names]
    table = np.frombuffer(b"".join(raw) or b" ", dtype=np.uint8)
    return table, np.cumsum([0] + [len(r) for r in raw], dtype=np.int64)


class OfflineRater:
    """The columnar path for one catalog and default plan: lookup tables and the output
    lines' tails made once, ``rate_block`` per block of lines."""

    def __init__(self, compiled: CompiledCatalog, plan: str | None) -> None:
        self.compiled = compiled
        self.plan = plan
        self.fast_lines = 0  # requests the columnar path rated and wrote, so far
        self.slow_lines = 0  # and those that went through ``rate_lines``
        self.default_plan = compiled.plan_index[plan or compiled.catalog.first_plan()]
        self.keys = _names(KEYS)
        # names the fast path takes as given: what parse accepts and the catalog knows
        services = [(s, i) for s, i in compiled.service_index.items() if 1 <= len(s) <= 64]
        plans = [(p, i) for p, i in compiled.plan_index.items() if 1 <= len(p) <= 64]
        self.services = (*_names([s for s, _ in services]),
                         np.array([i for _, i in services] or [0], dtype=np.int64))
        self.plans = (*_names([p for p, _ in plans]),
                      np.array([i for _, i in plans] or [0], dtype=np.int64))
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

    def rate_block(self, block: bytes, first_lineno: int) -> bytes:
        """The output for the lines of ``block`` (split at b"\\n", numbered from
        ``first_lineno``; blank ones skipped as ``rate_lines`` skips them), each output line
        ending in a newline: what ``rate_lines`` gives, UTF-8 encoded."""
        try:
            rows = len(_DECODER.decode_lines(block))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self.rate_split(block.split(b"\n"), first_lineno)
        return self._columns(block, first_lineno, rows, None)

    def rate_split(self, lines: Sequence[bytes], first_lineno: int) -> bytes:
        """``rate_block`` for lines msgspec refused together, in pieces of _PIECE lines."""
        return b"".join(self._rate_piece(lines[at:at + _PIECE], first_lineno + at)
                        for at in range(0, len(lines), _PIECE))

    def _rate_piece(self, lines: Sequence[bytes], first_lineno: int) -> bytes:
        """Each line a decode error names is set aside for ``rate_lines`` (replaced by
        ``{}``, which decodes and which the scanner does not clear) and the decode goes on
        after it; once the piece decodes whole, it is rated as a block. A piece with more
        than _MAX_FAILURES such lines, or an error that names no line, goes line by line."""
        work = list(lines)
        at = 0
        for _ in range(_MAX_FAILURES + 1):
            try:
                _DECODER.decode_lines(b"\n".join(work[at:]))
                break
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                bad = _culprit(str(exc), work[at:])
                if bad is None:
                    return self._slow(lines, first_lineno)
                bad += at
                work[bad] = b"{}"
                # the decoder reads past a newline: a value left open on the lines before
                # (which do not end in '}') is what it was still reading
                first = bad
                while first > at and not work[first - 1].rstrip(b" \t\r").endswith(b"}"):
                    first -= 1
                    work[first] = b"{}"
                at = bad + 1
        else:
            return self._slow(lines, first_lineno)
        text = b"\n".join(work)
        try:  # the whole piece once more: a guess by item index may have been wrong
            rows = len(_DECODER.decode_lines(text))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._slow(lines, first_lineno)
        return self._columns(text, first_lineno, rows, lines)

    def _slow(self, lines: Sequence[bytes], first_lineno: int) -> bytes:
        rated = rate_lines(self.compiled, list(enumerate(lines, first_lineno)), self.plan)
        self.slow_lines += len(rated)
        return "".join(line + "\n" for line in rated).encode()

    def _columns(self, text: bytes, first_lineno: int, rows: int,
                 lines: Sequence[bytes] | None) -> bytes:
        """Rate the lines of ``text`` (``lines``, when already split), which msgspec
        decoded into ``rows`` requests: the lines the scanner clears are rated in one
        kernel call and written by another, the others go through ``rate_lines`` one by
        one, in their places."""
        raw = np.frombuffer(text, dtype=np.uint8)
        blank, ok, id_a, id_b, service, plan, ts, used, digits, ndigits = \
            offline_kernels.scan_lines(raw, text.count(b"\n") + 1, *self.keys, *self.services,
                                       *self.plans, self.default_plan, MAX_DIGITS, MIN_TS_MS,
                                       MAX_TS_MS, MAX_PAYLOAD)
        if rows != len(blank) - int(blank.sum()):  # a line held two values
            return self._slow(text.split(b"\n") if lines is None else lines, first_lineno)
        status, rate, cost, rated = kernels.rate_batch(
            self.compiled.tables, plan, np.where(ok, service, -1), ts, digits, ndigits, used)
        ok &= status == kernels.OK
        decimals = self.decimals[np.where(ok, rate, 0)]
        ok &= (cost >= 0) & (cost % (10 ** (6 - decimals)) == 0)
        buf, ends = offline_kernels.format_lines(
            raw, id_a, id_b, ok, rate, cost, rated, self.decimals, self.tails,
            self.tail_start, len(text) + len(ok) * (offline_kernels.OUT_SLACK + self.tail_max))
        slow = np.flatnonzero(~ok & ~blank).tolist()
        self.fast_lines += int(ok.sum())
        if not slow:
            return buf.tobytes()
        if lines is None:
            lines = text.split(b"\n")
        slow = [i for i in slow if lines[i].strip()]  # a line set aside may be blank
        self.slow_lines += len(slow)
        rated_slow = rate_lines(self.compiled, [(first_lineno + i, lines[i]) for i in slow],
                                self.plan)
        pieces, prev = [], 0
        for i, line in zip(slow, rated_slow, strict=True):
            pieces += [buf[prev:ends[i]].tobytes(), line.encode(), b"\n"]
            prev = int(ends[i])
        pieces.append(buf[prev:].tobytes())
        return b"".join(pieces)


def _culprit(message: str, part: Sequence[bytes]) -> int | None:
    """The index in ``part`` of the line a decode error names: by byte offset in the joined
    lines; by item (the item-th line holding something); the last such line when the input
    ended too soon. None when there is no such line. A wrong guess costs a decode."""
    m = _AT_BYTE.search(message)
    if m:
        pos = int(m.group(1))
        for i, line in enumerate(part):
            pos -= len(line) + 1
            if pos < 0:
                return i
        return len(part) - 1 if part else None
    full = [i for i, line in enumerate(part) if line.strip(b" \t\r")]
    m = _AT_ITEM.search(message)
    if m:
        item = int(m.group(1))
        return full[item] if item < len(full) else (full[-1] if full else None)
    if "truncated" in message and full and part[full[-1]] != b"{}":
        return full[-1]
    return None
