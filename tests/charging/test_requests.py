"""Request decoding and validation (CONTRACT §2): every reject code with realistic bad input."""

from __future__ import annotations

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charging.errors import RequestError
from charging.requests import MAX_PAYLOAD, MAX_UNITS, Request, decode, parse

EVENT = {"id": "gw1-000123", "kind": "event", "account": "acc-42", "service": "voice",
         "ts": "2026-11-24T10:00:00+01:00", "destination": "+4917612345", "used": 61}
INITIAL = {"id": "sess-9:0", "kind": "initial", "account": "acc-42", "service": "data",
           "session": "sess-9", "seq": 0, "ts": 1_795_510_800_000, "requested": 10_485_760}


def with_(base: dict, **changes) -> dict:
    """A copy of ``base`` with fields changed; a value of ``...`` removes the field."""
    out = {**base, **changes}
    return {k: v for k, v in out.items() if v is not ...}


def reject(obj: dict, **kw) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(obj, **kw)
    return info.value


def reject_bytes(payload: bytes | str, fmt: str = "json") -> RequestError:
    with pytest.raises(RequestError) as info:
        decode(payload, fmt)
    return info.value


# --- the happy path -------------------------------------------------------------------------


def test_valid_event_json_roundtrip():
    req = parse(decode(orjson.dumps(EVENT)))
    assert req == Request(id="gw1-000123", kind="event", account="acc-42", service="voice",
                          ts_ms=1_795_510_800_000, used=61, requested=0, session=None,
                          seq=None, destination="4917612345", plan=None)


def test_valid_session_step():
    req = parse(INITIAL)
    assert (req.kind, req.session, req.seq, req.requested, req.used) == (
        "initial", "sess-9", 0, 10_485_760, 0)
    upd = parse(with_(INITIAL, id="sess-9:1", kind="update", seq=1, used=5000))
    assert (upd.kind, upd.seq, upd.used) == ("update", 1, 5000)


def test_msgpack_decodes_to_the_same_request_as_json():
    packed = msgpack.packb(EVENT, use_bin_type=True)
    assert decode(packed, "msgpack") == EVENT
    assert parse(decode(packed, "msgpack")) == parse(decode(orjson.dumps(EVENT)))


def test_msgpack_session_step_with_integer_ts():
    req = parse(decode(msgpack.packb(INITIAL), "msgpack"))
    assert (req.ts_ms, req.seq, req.session) == (1_795_510_800_000, 0, "sess-9")


def test_unknown_fields_are_kept_by_decode_and_ignored_by_parse():
    obj = with_(EVENT, trace_id="abc", **{"x-gateway": {"node": 7}}, charging_id=99)
    decoded = decode(orjson.dumps(obj))
    assert decoded["trace_id"] == "abc" and decoded["x-gateway"] == {"node": 7}
    assert parse(decoded) == parse(EVENT)


def test_str_payload_is_accepted():
    assert parse(decode(orjson.dumps(EVENT).decode())).id == "gw1-000123"


def test_defaults():
    req = parse(with_(EVENT, used=..., destination=...))
    assert (req.used, req.requested, req.destination, req.plan) == (0, 0, None, None)


def test_destination_plus_is_stripped_and_plan_is_read():
    req = parse(with_(EVENT, destination="4930123", plan="PREPAID_S"))
    assert (req.destination, req.plan) == ("4930123", "PREPAID_S")


@pytest.mark.parametrize("units", [0, 1, MAX_UNITS])
def test_unit_bounds_accepted(units):
    req = parse(with_(INITIAL, used=units, requested=units))
    assert (req.used, req.requested) == (units, units)


# --- TOO_LARGE -------------------------------------------------------------------------------


def padded(size: int) -> bytes:
    """A valid JSON request of exactly ``size`` bytes (padding in an unknown field)."""
    base = orjson.dumps(with_(EVENT, pad=""))
    out = orjson.dumps(with_(EVENT, pad="x" * (size - len(base))))
    assert len(out) == size
    return out


def test_one_mib_payload_is_too_large():
    err = reject_bytes(padded(1024 * 1024))
    assert err.code == "TOO_LARGE" and "1048576" in err.detail


def test_payload_limit_is_64_kib_inclusive():
    assert parse(decode(padded(MAX_PAYLOAD))).id == EVENT["id"]
    assert reject_bytes(padded(MAX_PAYLOAD + 1)).code == "TOO_LARGE"


def test_size_is_counted_in_utf8_bytes_for_str_payloads():
    text = orjson.dumps(with_(EVENT, pad="€" * 22_000)).decode()  # 22k chars, 66k bytes
    assert len(text) < MAX_PAYLOAD < len(text.encode())
    assert reject_bytes(text).code == "TOO_LARGE"


def test_oversized_garbage_is_too_large_not_malformed():
    assert reject_bytes(b"\xff" * (MAX_PAYLOAD + 1)).code == "TOO_LARGE"
    assert reject_bytes(b"\xc1" * (MAX_PAYLOAD + 1), "msgpack").code == "TOO_LARGE"


# --- MALFORMED -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b'{"id": "r1", "kind": "event"',  # truncated
    b"{'id': 'r1'}",  # Python, not JSON
    b'{"id": "r1",}',  # trailing comma
    b'{"id": "r1", "used": NaN}',
    b"",
    b"   ",
    b"\x00\x01\x02",
    b'{"id": "caf\xe9"}',  # latin-1 byte: invalid UTF-8
    b'{"id": "\xff\xfe"}',
    b'\xef\xbb\xbf{"id": "r1"}',  # UTF-8 BOM
])
def test_invalid_json_or_utf8_is_malformed(payload):
    assert reject_bytes(payload).code == "MALFORMED"


@pytest.mark.parametrize("payload", [b"[]", b'[{"id": "r1"}]', b'"r1"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object_is_malformed(payload):
    err = reject_bytes(payload)
    assert err.code == "MALFORMED" and "object" in err.detail


@pytest.mark.parametrize("payload", [
    b"\xc1",  # never-used msgpack byte
    b"\x93\x01",  # array of 3 with 1 element
    b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion elements
    msgpack.packb(EVENT) + b"\x00",  # trailing data
    msgpack.packb(EVENT)[:-3],  # truncated
    b"\x81\xa2id\xa2\xff\xfe",  # {"id": <invalid UTF-8 str>}
    msgpack.packb([EVENT]),
    msgpack.packb("r1"),
])
def test_invalid_msgpack_is_malformed(payload):
    assert reject_bytes(payload, "msgpack").code == "MALFORMED"


def test_json_bytes_on_a_msgpack_input_are_malformed():
    # b'{' reads as the msgpack int 123, and the rest is trailing garbage
    assert reject_bytes(orjson.dumps(EVENT), "msgpack").code == "MALFORMED"


# --- MISSING_FIELD ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "kind", "account", "service", "ts"])
def test_missing_required_field(field):
    err = reject(with_(EVENT, **{field: ...}))
    assert err.code == "MISSING_FIELD" and repr(field) in err.detail


@pytest.mark.parametrize("field", ["id", "kind", "ts"])
def test_null_required_field_counts_as_missing(field):
    assert reject(with_(EVENT, **{field: None})).code == "MISSING_FIELD"


@pytest.mark.parametrize("kind", ["initial", "update", "terminate"])
@pytest.mark.parametrize("field", ["session", "seq"])
def test_session_kinds_need_session_and_seq(kind, field):
    err = reject(with_(INITIAL, kind=kind, **{field: ...}))
    assert err.code == "MISSING_FIELD" and repr(field) in err.detail


def test_event_needs_no_session():
    assert parse(EVENT).session is None


def test_reject_carries_the_request_id_when_known():
    assert reject(with_(EVENT, ts=...)).request_id == "gw1-000123"
    assert reject(with_(EVENT, id=...)).request_id is None


def test_empty_object_is_missing_id():
    err = reject(decode(b"{}"))
    assert err.code == "MISSING_FIELD" and "'id'" in err.detail


# --- INVALID_FIELD ---------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("id", 123),
    ("id", ""),
    ("id", "x" * 129),
    ("id", ["r1"]),
    ("kind", "charge"),
    ("kind", "EVENT"),
    ("kind", 1),
    ("account", 42),
    ("account", ""),
    ("service", {"name": "voice"}),
    ("service", "v" * 65),
    ("session", 9),
    ("plan", 3),
])
def test_wrong_type_or_length_of_text_fields(field, value):
    obj = with_(INITIAL if field == "session" else EVENT, **{field: value})
    err = reject(obj)
    assert err.code == "INVALID_FIELD" and repr(field) in err.detail


def test_id_of_128_chars_is_accepted():
    assert parse(with_(EVENT, id="x" * 128)).id == "x" * 128


@pytest.mark.parametrize("field", ["used", "requested"])
@pytest.mark.parametrize("value", [
    True, False,  # bool is an int in Python, never a unit count
    1.0, 61.5, 1e3,
    -1,
    MAX_UNITS + 1,
    2**63,
    "61",
    [61],
])
def test_bad_unit_counts(field, value):
    err = reject(with_(EVENT, **{field: value}))
    assert err.code == "INVALID_FIELD" and repr(field) in err.detail


def test_float_units_from_json_text_are_rejected():
    # what a gateway would actually send
    for text in (b'"used": 61.0', b'"used": 6.1e1', b'"used": 18446744073709551616'):
        payload = orjson.dumps(with_(EVENT, used=...))[:-1] + b"," + text + b"}"
        err = reject(decode(payload))
        assert err.code == "INVALID_FIELD" and "'used'" in err.detail, text


@pytest.mark.parametrize("seq", [-1, True, 1.0, "0", 2**53 + 1])
def test_bad_seq(seq):
    err = reject(with_(INITIAL, seq=seq))
    assert err.code == "INVALID_FIELD" and "'seq'" in err.detail


@pytest.mark.parametrize("destination", [
    "", "+", "++4917", "49 176 12345", "49-176", "+49(0)176", "4917abc", "1" * 33,
    4917612345, ["4917"],
])
def test_bad_destination(destination):
    err = reject(with_(EVENT, destination=destination))
    assert err.code == "INVALID_FIELD" and "'destination'" in err.detail


def test_longest_destination_accepted():
    assert parse(with_(EVENT, destination="+" + "1" * 32)).destination == "1" * 32


def test_msgpack_binary_id_is_invalid():
    payload = msgpack.packb(with_(EVENT, id=b"gw1-000123"), use_bin_type=True)
    err = reject(decode(payload, "msgpack"))
    assert err.code == "INVALID_FIELD" and "'id'" in err.detail


# --- rating_only (the offline `rate` command) ----------------------------------------------


def test_rating_only_relaxes_kind_and_account():
    obj = with_(EVENT, kind=..., account=...)
    assert reject(obj).code == "MISSING_FIELD"
    req = parse(obj, rating_only=True)
    assert (req.kind, req.account, req.used, req.destination) == ("event", "", 61, "4917612345")


def test_rating_only_still_checks_kind_and_account_when_present():
    assert reject(with_(EVENT, kind="charge"), rating_only=True).code == "INVALID_FIELD"
    assert reject(with_(EVENT, account=7), rating_only=True).code == "INVALID_FIELD"


@pytest.mark.parametrize("field", ["id", "service", "ts"])
def test_rating_only_still_requires_what_rating_reads(field):
    assert reject(with_(EVENT, **{field: ...}), rating_only=True).code == "MISSING_FIELD"


def test_rating_only_still_validates_units_and_destination():
    assert reject(with_(EVENT, used=-5), rating_only=True).code == "INVALID_FIELD"
    assert reject(with_(EVENT, destination="abc"), rating_only=True).code == "INVALID_FIELD"


# --- every reject code is one of the documented ones ---------------------------------------

SAMPLES = [
    (b"not json", "MALFORMED"),
    (b"[]", "MALFORMED"),
    (b'{"kind": "event"}', "MISSING_FIELD"),
    (b'{"id": "r", "kind": "event", "account": "a", "service": "v", "ts": 0, "used": -1}',
     "INVALID_FIELD"),
    (b" " * (MAX_PAYLOAD + 1), "TOO_LARGE"),
]


@pytest.mark.parametrize("payload, code", SAMPLES)
def test_decode_then_parse_gives_the_documented_code(payload, code):
    with pytest.raises(RequestError) as info:
        parse(decode(payload))
    assert info.value.code == code
    assert info.value.code in ("TOO_LARGE", "MALFORMED", "MISSING_FIELD", "INVALID_FIELD")
    assert info.value.detail and str(info.value).startswith(code + ": ")


# --- the common-shape fast path agrees with the field-by-field checks ----------------------

@pytest.mark.parametrize("obj", [
    with_(EVENT, destination="4917612345\n"),  # "$" matched before a trailing newline
    with_(EVENT, ts="2026-11-24T10:00:00+01:00\n"),
])
def test_trailing_newline_is_invalid(obj):
    assert reject(obj).code == "INVALID_FIELD"


_TEXTS = st.one_of(st.none(), st.text(max_size=130), st.sampled_from(
    ["", "a", "x" * 64, "x" * 65, "x" * 128, "x" * 129]), st.integers(), st.booleans(),
    st.binary(max_size=4), st.lists(st.integers(), max_size=2))
_NUMBERS = st.one_of(st.none(), st.integers(-2, 3), st.sampled_from(
    [MAX_UNITS, MAX_UNITS + 1, 2**53, 2**53 + 1, -1]), st.booleans(), st.floats(0, 10),
    st.text(max_size=3))
_FIELDS = {
    "id": _TEXTS, "account": _TEXTS, "service": _TEXTS, "session": _TEXTS, "plan": _TEXTS,
    "kind": st.one_of(st.sampled_from(["event", "initial", "update", "terminate", "Event",
                                       ""]), _TEXTS),
    "ts": st.one_of(st.sampled_from([0, -1, 1_795_510_800_000, 4_102_444_800_000,
                                     4_102_444_799_999, "2026-11-24T10:00:00Z", True]),
                    st.integers(), _TEXTS),
    "used": _NUMBERS, "requested": _NUMBERS, "seq": _NUMBERS,
    "destination": st.one_of(st.from_regex(r"\+?[0-9]{0,33}\n?", fullmatch=True), _TEXTS),
}


@settings(max_examples=3000, deadline=None)
@given(st.fixed_dictionaries({}, optional=_FIELDS), st.sampled_from(list(INITIAL.items())))
def test_fast_path_accepts_only_what_the_checks_accept_and_builds_the_same(obj, extra):
    from charging.requests import _parse_checked, _parse_common

    for candidate in (obj, {extra[0]: extra[1], **obj}, {**INITIAL, **obj}):
        fast = _parse_common(candidate)
        try:
            checked = _parse_checked(candidate, False)
        except RequestError:
            assert fast is None, candidate
            continue
        assert fast is None or fast == checked, candidate
        assert parse(candidate) == checked


def test_fast_path_takes_the_common_shapes():
    from charging.requests import _parse_common

    event = with_(EVENT, ts=1_795_510_800_000)
    for obj in (INITIAL, event, with_(INITIAL, kind="terminate", used=5, plan="P"),
                with_(event, session="s", seq=3)):
        assert _parse_common(obj) is not None and _parse_common(obj) == parse(obj)
    assert _parse_common(event).destination == "4917612345"
    assert _parse_common(EVENT) is None  # an RFC 3339 ts: the full checks parse it


@pytest.mark.parametrize("account", ["}x", "}", "a{b}", "{a}"])
def test_account_with_braces_is_invalid(account):
    # an account's Redis keys carry it as their hash tag: "cf:{}x}:acct" has an empty tag,
    # so on a cluster its keys would scatter over slots and its write would fail there
    err = reject(with_(INITIAL, account=account))
    assert err.code == "INVALID_FIELD" and "'account'" in err.detail
    assert reject(with_(EVENT, account=account)).code == "INVALID_FIELD"


def test_rfc3339_takes_ascii_digits_only():
    err = reject(with_(EVENT, ts="2026-11-24T10:00:00.\u0661\u0662\u0663Z"))
    assert err.code == "INVALID_FIELD" and "'ts'" in err.detail
