"""Hypothesis strategies for hostile request payloads (the fuzz tests' inputs).

``payloads()`` draws ``(payload, fmt)``: arbitrary bytes; JSON text built piece by piece, so
it can hold what no encoder writes (a key twice, lone-surrogate escapes, 5,000-digit
numbers, ``NaN``, arrays nested past 1,024 levels, invalid UTF-8 spliced in); MessagePack
bytes with the same and more (maps nested in every field, length headers that lie); and
``str`` payloads holding lone surrogates. Most are request-shaped, a valid request with one
field or a few replaced, so that they reach the field checks and not only the decoder.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import msgpack
import orjson
from hypothesis import strategies as st

FIELDS = ("id", "kind", "account", "service", "ts", "used", "requested", "session", "seq",
          "destination", "plan", "reply_to", "x-extra")
DEPTHS = (1, 2, 31, 32, 33, 100, 1000, 1022, 1023, 1024, 1025, 3000)


#: CPython's default recursion limit, which the engine runs under.
DEFAULT_RECURSION_LIMIT = 1000


@contextmanager
def engine_recursion_limit() -> Iterator[None]:
    """Run under the interpreter's default recursion limit. Hypothesis raises the limit
    while a test runs, and under it ``repr`` of a 1,000-deep array, which stops a real
    engine, would pass: a fuzz test that cannot fail."""
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(DEFAULT_RECURSION_LIMIT)
    try:
        yield
    finally:
        sys.setrecursionlimit(saved)


def valid_request(n: int, account: str = "acct0", kind: str = "event") -> dict:
    """A request the sample catalog decides (an SMS event; ``n`` makes its id unique)."""
    return {"id": f"ok-{n}", "kind": kind, "account": account, "service": "sms",
            "ts": 1_795_510_800_000, "used": 1}


# -- JSON text ----------------------------------------------------------------------------

_JSON_SCALARS = st.one_of(
    st.sampled_from([b"null", b"true", b"false", b"0", b"-0", b"1.5e3", b"NaN", b"Infinity",
                     b"-Infinity", b"1e999", b"01", b"0x1F", b"18446744073709551616",
                     b'"\\ud800"', b'"\\udfff\\ud800"', b'"\\u0000"', b'"a\\"b"', b'"\\\\"',
                     b'"\xff"', b'"\xed\xa0\x80"', b'"\xc3"', b'""', b'"event"', b'"sms"']),
    st.integers(-(2**70), 2**70).map(lambda i: str(i).encode()),
    st.integers(300, 5000).map(lambda n: b"9" * n),  # past float range, past 4,300 digits
    st.text(max_size=8).map(orjson.dumps),
)


def _json_nested(levels: int, kind: str) -> bytes:
    if kind == "array":
        return b"[" * levels + b"]" * levels
    if kind == "object":
        return b'{"k":' * levels + b"null" + b"}" * levels
    return b'[{"k":' * (levels // 2) + b"1" + b"}]" * (levels // 2)


_JSON_DEEP = st.builds(_json_nested, st.sampled_from(DEPTHS),
                       st.sampled_from(["array", "object", "mixed"]))
_JSON_VALUES = st.recursive(
    st.one_of(_JSON_SCALARS, _JSON_DEEP),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda xs: b"[" + b",".join(xs) + b"]"),
        st.lists(st.tuples(st.sampled_from([b'"k"', b'"k"', b'"id"', b'"\\u006b"']), inner),
                 max_size=3).map(lambda kv: b"{" + b",".join(k + b":" + v for k, v in kv)
                                 + b"}")),
    max_leaves=6)


@st.composite
def json_requests(draw) -> bytes:
    """A valid request's JSON text with fields replaced, repeated or added."""
    fields = {k: orjson.dumps(v) for k, v in valid_request(0).items()}
    pairs = list(fields.items())
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(FIELDS))
        value = draw(_JSON_VALUES)
        if draw(st.booleans()):  # replace it (or add it)
            pairs = [(k, v) for k, v in pairs if k != field] + [(field, value)]
        else:  # give it (again)
            pairs.insert(draw(st.integers(0, len(pairs))), (field, value))
    space = draw(st.sampled_from([b"", b" ", b"\n\t "]))
    text = b"{" + b",".join(space + b'"' + k.encode() + b'"' + space + b":" + space + v
                            for k, v in pairs) + space + b"}"
    if draw(st.integers(0, 9)) == 0:  # damage it: a byte changed, or cut short
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.binary(min_size=0, max_size=2)) + text[at + 1:]
    return text


# -- MessagePack --------------------------------------------------------------------------

def _mp_nested(levels: int, kind: str) -> bytes:
    if kind == "map":
        return b"\x81\xa1k" * levels + b"\xc0"
    if kind == "array":
        return b"\x91" * levels + b"\xc0"
    return b"\x91\x81\xa1k" * (levels // 2) + b"\x01"


_MP_SCALARS = st.one_of(
    st.sampled_from([b"\xc0", b"\xc2", b"\xc3", b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",  # NaN
                     b"\xcb\x7f\xf0\x00\x00\x00\x00\x00\x00", b"\xcf" + b"\xff" * 8,
                     b"\xd3\x80" + b"\x00" * 7, b"\xa3\xed\xa0\x80", b"\xa2\xff\xfe",
                     b"\xc4\x03abc", b"\xd4\x01\x00", b"\xd6\xff\x00\x00\x00\x01",
                     b"\xc7\x05\xff" + b"\x00" * 5, b"\xdd\xff\xff\xff\xff",
                     b"\xdf\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xc1",
                     b"\x81\xc0\xc0", b"\x81\x91\x01\x01", b"\x81\x81\xc0\xc0\xc0",
                     b"\x82\xa1k\x01\xa1k\x02"]),
    st.integers(-(2**63), 2**64 - 1).map(msgpack.packb),
    st.text(max_size=8).map(msgpack.packb),
    st.builds(_mp_nested, st.sampled_from(DEPTHS), st.sampled_from(["map", "array", "mixed"])),
)


@st.composite
def msgpack_requests(draw) -> bytes:
    """A valid request's map with fields replaced or repeated, the header counting them."""
    pairs = [(msgpack.packb(k), msgpack.packb(v)) for k, v in valid_request(0).items()]
    for _ in range(draw(st.integers(1, 3))):
        field = msgpack.packb(draw(st.sampled_from(FIELDS)))
        value = draw(_MP_SCALARS)
        if draw(st.booleans()):
            pairs = [(k, v) for k, v in pairs if k != field] + [(field, value)]
        else:
            pairs.insert(draw(st.integers(0, len(pairs))), (field, value))
    count = len(pairs) + draw(st.sampled_from([0, 0, 0, -1, 1]))  # a header may lie
    header = bytes([0x80 | count]) if 0 <= count < 16 else b"\xde" + max(count, 0).to_bytes(2,
                                                                                          "big")
    return header + b"".join(k + v for k, v in pairs)


# -- everything --------------------------------------------------------------------------

_SURROGATE_TEXT = st.text(st.characters(codec=None, categories=["Cs", "Ll", "Nd", "Po"]),
                          max_size=20)


def payloads() -> st.SearchStrategy[tuple[bytes | str, str]]:
    """(payload, fmt) of every kind above."""
    return st.one_of(
        st.tuples(st.binary(max_size=200), st.sampled_from(["json", "msgpack"])),
        st.tuples(json_requests(), st.just("json")),
        st.tuples(_JSON_VALUES, st.just("json")),
        st.tuples(msgpack_requests(), st.just("msgpack")),
        st.tuples(_MP_SCALARS, st.just("msgpack")),
        st.tuples(_SURROGATE_TEXT.map(lambda t: '{"id": "' + t + '", "kind": "event"}'),
                  st.just("json")),
        st.tuples(_SURROGATE_TEXT, st.just("json")),
    )
