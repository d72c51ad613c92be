"""Fuzz: no payload makes decoding, validating or rejecting raise anything but RequestError.

The short run of ``make test``; ``python -m bench.fuzz --minutes N`` runs the same checks,
coverage-guided, for as long as asked (bench/README.md).
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings

from charging.errors import RequestError
from charging.requests import Request, decode, parse, reject_record
from tests.charging.poison_payloads import engine_recursion_limit, payloads

CODES = {"TOO_LARGE", "MALFORMED", "MISSING_FIELD", "INVALID_FIELD"}


def check_total(payload: bytes | str, fmt: str) -> Request | dict:
    """A ``Request``, or the reject document (already checked to serialise)."""
    try:
        return parse(decode(payload, fmt))
    except RequestError as exc:
        assert exc.code in CODES, exc
        doc = orjson.loads(orjson.dumps(reject_record(exc, payload)))
        assert doc["error"] == exc.code and doc["detail"]
        assert doc["id"] is None or isinstance(doc["id"], str) and len(doc["id"]) <= 128
        return doc


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.data_too_large])
@given(payloads())
def test_decode_parse_and_reject_are_total(case):
    payload, fmt = case
    with engine_recursion_limit():
        got = check_total(payload, fmt)
    if isinstance(got, Request):
        # what passes is what the contract allows (the field checks are tested elsewhere)
        assert isinstance(got.id, str) and 0 < len(got.id) <= 128
        assert isinstance(got.ts_ms, int)
