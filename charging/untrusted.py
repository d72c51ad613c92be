"""Checks and descriptions of decoded request values that anyone may have sent; pure, no I/O.

Everything here is total on whatever a JSON or MessagePack decoder can return: nothing
recurses into a value (a 1,000-deep array made ``repr`` raise ``RecursionError``), nothing
prints a huge integer in full (``str`` of one past 4,300 digits raises ``ValueError``), and
the work is bounded by the payload's size (at most 64 KiB). ``charging.requests`` calls it
on its rare paths only: a request with nested values, escapes, or a key given twice, and
the detail of a reject.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import msgpack

#: A field's value nests arrays and objects at most this deep (``[[1]]`` is 2). The
#: contract's fields are flat; this bounds unknown ones, and keeps every check of a request
#: far below Python's recursion limit.
MAX_DEPTH = 32

_CONTAINERS = (dict, list, tuple)


def describe(val: object) -> str:
    """A short text for a reject's detail saying what ``val`` is, never raising."""
    try:
        return _describe(val)
    except Exception:  # noqa: BLE001 - a description must not fail; fall back to the type
        return f"a value of type {type(val).__name__}"


def _describe(val: object) -> str:
    if val is None or isinstance(val, (bool, float)):
        return repr(val)
    if isinstance(val, int):
        if -10**18 < val < 10**18:
            return repr(val)
        return f"an integer of {val.bit_length()} bits"
    if isinstance(val, str):
        if len(val) <= 60:
            return repr(val)
        return f"{repr(val[:40])[:-1]}...' ({len(val)} characters)"
    if isinstance(val, (bytes, bytearray)):
        return f"binary data of {len(val)} bytes"
    if isinstance(val, dict):
        return f"an object of {len(val)} key(s){_nesting_text(val)}"
    if isinstance(val, (list, tuple)):
        return f"an array of {len(val)} item(s){_nesting_text(val)}"
    return f"a value of type {type(val).__name__}"


def _nesting_text(val: object) -> str:
    levels = depth(val, MAX_DEPTH)
    if levels <= 1:
        return ""
    if levels > MAX_DEPTH:
        return f", nested more than {MAX_DEPTH} levels deep"
    return f", nested {levels} levels deep"


def depth(val: object, limit: int) -> int:
    """How many arrays/objects deep ``val`` nests (a scalar 0, ``[]`` 1, ``[[1]]`` 2),
    counted without recursion; the count stops at ``limit + 1``."""
    if not isinstance(val, _CONTAINERS):
        return 0
    deepest = 0
    stack: list[tuple[object, int]] = [(val, 1)]
    while stack:
        node, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        children = node.values() if isinstance(node, dict) else node
        for child in children:  # type: ignore[attr-defined]
            if isinstance(child, _CONTAINERS):
                stack.append((child, level + 1))
    return deepest


def nesting_problem(obj: dict) -> str | None:
    """The reject detail of a request nested past ``MAX_DEPTH``, naming the field; else
    None."""
    for key, val in obj.items():
        if isinstance(val, _CONTAINERS) and depth(val, MAX_DEPTH) > MAX_DEPTH:
            return (f"field {describe(key)} nests arrays or objects more than {MAX_DEPTH} "
                    "levels deep; send the contract's fields as plain strings and numbers")
    return None


def duplicate_problem(payload: bytes | str, fmt: str) -> tuple[str, object] | None:
    """(detail, key) when an object of the payload gives a key twice, else None.

    JSON's and MessagePack's decoders keep the last value of a repeated key silently, where
    a gateway or a proxy reading the first would see another request (``"account": "alice",
    "account": "bob"`` charged bob), so the payload is decoded again here with a hook that
    sees every key of every object. Call it only on a payload the engine's decoder took and
    whose nesting ``nesting_problem`` accepted (the stdlib decoder recurses)."""
    found: list[tuple[bool, object]] = []  # per object, innermost first: (repeated?, key)

    def pairs(items: list[tuple[object, object]]) -> dict:
        seen: dict = {}
        twice: tuple[bool, object] = (False, None)
        for key, value in items:
            if key in seen and not twice[0]:
                twice = (True, key)
            seen[key] = value
        found.append(twice)
        return seen

    try:
        _decoder(fmt)(payload, pairs)
    except (ValueError, TypeError, RecursionError, msgpack.UnpackException) as exc:
        return (f"cannot be checked for keys given twice ({type(exc).__name__}); send a "
                "flat object of the contract's fields"), None
    if not found:
        return None
    top, key = found[-1]  # the outermost object is completed last
    if top:
        return f"field {describe(key)} is given twice; send each field once", key
    for repeated, key in found:
        if repeated:
            return (f"key {describe(key)} is given twice in an object nested in the request; "
                    "send each key once"), key
    return None


def _decoder(fmt: str) -> Callable[[bytes | str, Callable], object]:
    if fmt == "msgpack":
        return lambda payload, hook: msgpack.unpackb(
            payload, raw=False, strict_map_key=False, object_pairs_hook=hook)
    return lambda payload, hook: json.loads(payload, object_pairs_hook=hook)


def safe_text(text: str, limit: int = 2000) -> str:
    """``text`` cut to ``limit`` characters and encodable as UTF-8 (lone surrogates
    escaped), so a reject carrying it always serialises."""
    if len(text) > limit:
        text = text[:limit] + "..."
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
