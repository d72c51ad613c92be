"""Requests built to hurt the decoder: deep nesting, huge numbers, keys given twice.

Each used to be a valid JSON or MessagePack document whose reject raised instead
(``RecursionError`` from ``repr`` of a 1,000-deep array, ``ValueError`` from ``str`` of a
4,301-digit integer), or was charged to the last of two ``account`` fields. Every one must
now be a ``RequestError`` whose reject serialises, and a request sent once must still pass.
"""

from __future__ import annotations

import msgpack
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charging.errors import RequestError
from charging.requests import Request, decode, parse, reject_record
from charging.untrusted import MAX_DEPTH, depth, describe

EVENT = {"id": "r1", "kind": "event", "account": "alice", "service": "sms",
         "ts": 1_795_510_800_000, "used": 1}
FIELDS = ("id", "kind", "account", "service", "ts", "used", "requested", "session", "seq",
          "destination", "plan", "reply_to", "x-trace")


def rejected(payload: bytes | str, fmt: str = "json") -> RequestError:
    """The reject of ``payload``, checked to serialise (what the engine writes)."""
    with pytest.raises(RequestError) as info:
        parse(decode(payload, fmt))
    orjson.dumps(reject_record(info.value, payload))
    return info.value


def json_with(field: str, value_text: bytes) -> bytes:
    """EVENT as JSON text with ``field`` set to the raw JSON ``value_text``."""
    head = orjson.dumps({k: v for k, v in EVENT.items() if k != field})[:-1]
    return head + b',"' + field.encode() + b'":' + value_text + b"}"


def nested_array(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def nested_object(levels: int) -> bytes:
    return b'{"a":' * (levels - 1) + b"{}" + b"}" * (levels - 1)


def packed_with(field: str, value: bytes) -> bytes:
    """EVENT as a msgpack map with ``field`` set to the raw msgpack ``value``."""
    rest = {k: v for k, v in EVENT.items() if k != field}
    body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in rest.items())
    return bytes([0x80 | (len(rest) + 1)]) + body + msgpack.packb(field) + value


# --- nesting --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 1000, 1022])
def test_a_deeply_nested_array_in_any_field_is_malformed_and_named(field, levels):
    err = rejected(json_with(field, nested_array(levels)))
    assert err.code == "MALFORMED" and f"field '{field}'" in err.detail
    assert "levels deep" in err.detail
    assert err.request_id == (None if field == "id" else "r1")


@pytest.mark.parametrize("field", ["id", "kind", "used", "ts", "x-trace"])
def test_deeply_nested_objects_are_malformed(field):
    err = rejected(json_with(field, nested_object(1000)))
    assert err.code == "MALFORMED" and f"field '{field}'" in err.detail


def test_nesting_up_to_the_limit_is_kept_in_an_unknown_field():
    payload = json_with("x-trace", nested_array(MAX_DEPTH))
    assert parse(decode(payload)).id == "r1"
    assert depth(decode(payload)["x-trace"], 100) == MAX_DEPTH
    assert rejected(json_with("x-trace", nested_array(MAX_DEPTH + 1))).code == "MALFORMED"


def test_json_nested_past_the_decoders_own_limit_is_malformed():
    err = rejected(json_with("id", nested_array(1025)))
    assert err.code == "MALFORMED" and "not valid json" in err.detail


@pytest.mark.parametrize("field", ["id", "kind", "used", "ts"])
@pytest.mark.parametrize("container", [b"\x81\xa1k", b"\x91"])  # map {k: ...}, array [...]
def test_msgpack_nested_1000_deep_in_a_field_is_malformed(field, container):
    err = rejected(packed_with(field, container * 1000 + b"\xc0"), "msgpack")
    assert err.code == "MALFORMED" and f"field '{field}'" in err.detail


def test_msgpack_nested_past_the_decoders_limit_is_malformed():
    err = rejected(packed_with("kind", b"\x81\xa1k" * 5000 + b"\xc0"), "msgpack")
    assert err.code == "MALFORMED" and "msgpack" in err.detail


def test_shallow_containers_in_known_fields_are_invalid_and_described():
    err = rejected(json_with("kind", nested_array(20)))
    assert err.code == "INVALID_FIELD" and "'kind'" in err.detail
    assert "an array of 1 item(s), nested 20 levels deep" in err.detail
    err = rejected(packed_with("kind", b"\x82\xa1a\x01\xa1b\x02"), "msgpack")
    assert err.code == "INVALID_FIELD" and "an object of 2 key(s)" in err.detail


# --- huge and odd numbers -------------------------------------------------------------------


@pytest.mark.parametrize("field", ["id", "kind", "used", "ts", "seq", "requested", "account"])
def test_a_huge_integer_is_described_not_printed(field):
    obj = dict(EVENT, kind="update", session="s", seq=1) if field == "seq" else dict(EVENT)
    obj[field] = 10**5000  # str() of it raises ValueError (Python's 4,300-digit limit)
    with pytest.raises(RequestError) as info:
        parse(obj)
    assert info.value.code == "INVALID_FIELD" and f"'{field}'" in info.value.detail
    assert "an integer of 16610 bits" in info.value.detail
    orjson.dumps(reject_record(info.value, b"{}"))


@pytest.mark.parametrize("text", [b"1" * 5000, b"-" + b"9" * 400, b"1e999", b"NaN",
                                  b"Infinity", b"-Infinity", b"0x10", b"01"])
def test_numbers_json_cannot_hold_are_malformed(text):
    assert rejected(json_with("used", text)).code == "MALFORMED"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.0, 2**64 - 1, -(2**63)])
def test_msgpack_odd_numbers_are_invalid_fields(value):
    err = rejected(msgpack.packb(dict(EVENT, used=value)), "msgpack")
    assert err.code == "INVALID_FIELD" and "'used'" in err.detail


# --- text that is not text ------------------------------------------------------------------


@pytest.mark.parametrize("payload", [
    b'{"id": "\\ud800", "kind": "event"}',  # an escaped lone surrogate
    '{"id": "\ud800", "kind": "event"}',  # a str payload holding one
    b'{"id": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes
    b'{"id": "r1", "kind": "ev\xffent"}',
])
def test_lone_surrogates_and_invalid_utf8_are_malformed(payload):
    err = rejected(payload)
    assert err.code == "MALFORMED"


def test_msgpack_string_of_invalid_utf8_is_malformed():
    assert rejected(packed_with("id", b"\xa3\xed\xa0\x80"), "msgpack").code == "MALFORMED"


def test_reject_record_of_a_surrogate_payload_and_detail_serialises():
    payload = '{"id": "\ud800"}'
    record = reject_record(RequestError("MALFORMED", "got '\ud800'", "r\udfff"), payload)
    doc = orjson.loads(orjson.dumps(record))
    assert doc["raw_encoding"] == "base64" and doc["id"] == "r\\udfff"
    assert doc["detail"] == "got '\\ud800'"


@pytest.mark.parametrize("payload", [None, 42, ["a"], bytearray(b"{}")])
def test_a_payload_that_is_no_message_is_malformed(payload):
    with pytest.raises(RequestError) as info:
        decode(payload)
    assert info.value.code == "MALFORMED"
    assert orjson.loads(orjson.dumps(reject_record(info.value, payload)))["raw"] == ""


def test_describe_is_total_and_short():
    class Hostile:
        def __repr__(self):
            raise RuntimeError("no")

    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for val in (deep, {"k": deep}, 10**5000, "x" * 100_000, b"\x00" * 10, Hostile(), None,
                float("nan"), (1, 2)):
        assert len(describe(val)) < 120
    assert describe(deep) == "an array of 1 item(s), nested more than 32 levels deep"
    assert describe("x" * 100) == "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' (100 characters)"


# --- keys given twice -----------------------------------------------------------------------


@pytest.mark.parametrize("field", FIELDS)
def test_a_field_given_twice_is_malformed_and_named(field):
    payload = orjson.dumps(EVENT)[:-1] + b',"' + field.encode() + b'":"x","' + \
        field.encode() + b'":"y"}'
    err = rejected(payload)
    assert err.code == "MALFORMED"
    assert err.detail == f"field '{field}' is given twice; send each field once"


@pytest.mark.parametrize("payload", [
    # the brief's case: a gateway reading the first value would charge alice, we bob
    b'{"id":"r1","kind":"event","account":"alice","service":"sms","ts":1,"account":"bob"}',
    b'{"id":"r1","kind":"event","account":"alice","service":"sms","ts":1,"account":7}',
    b'{"id":"r1","kind":"event","account":"alice","service":"sms","ts":1,"account":[1]}',
    b'{ "account" : "alice" , "id":"r1","kind":"event","service":"sms","ts":1,'
    b'\n"account"\t:\t"bob" }',
    b'{"id":"r1","kind":"event","account":"alice","service":"sms","ts":1,"\\u0061ccount":"b"}',
    b'{"id":"r1","kind":"event","account":"al\\"ice","service":"sms","ts":1,"account":"b"}',
    b'{"id":"r1","kind":"event","account":{"a":"x"},"service":"sms","ts":1,"account":"b"}',
])
def test_account_given_twice_in_any_spelling_is_malformed(payload):
    err = rejected(payload)
    assert err.code == "MALFORMED" and "field 'account' is given twice" in err.detail
    assert err.request_id == "r1"


def test_the_id_given_twice_is_not_echoed_as_the_requests_id():
    err = rejected(b'{"id":"r1","kind":"event","account":"a","service":"s","ts":1,"id":"r2"}')
    assert "field 'id' is given twice" in err.detail and err.request_id is None


def test_a_key_given_twice_in_a_nested_object_is_malformed():
    err = rejected(json_with("x-trace", b'{"node": 1, "hop": {"n": 1, "n": 2}}'))
    assert err.code == "MALFORMED"
    assert err.detail == ("key 'n' is given twice in an object nested in the request; send "
                          "each key once")


def pack_pairs(pairs: list[tuple[object, object]], header: bytes | None = None) -> bytes:
    head = header if header is not None else bytes([0x80 | len(pairs)])
    return head + b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in pairs)


@pytest.mark.parametrize("header", [None, b"\xde\x00\x07", b"\xdf\x00\x00\x00\x07"])
def test_msgpack_field_given_twice_is_malformed(header):
    pairs = list(EVENT.items()) + [("account", "bob")]
    err = rejected(pack_pairs(pairs, header), "msgpack")
    assert err.code == "MALFORMED" and "field 'account' is given twice" in err.detail


def test_msgpack_keys_that_compare_equal_are_given_twice():
    # 1 and True are one dict key: the decoder kept one value of the two
    pairs = list(EVENT.items()) + [(1, "a"), (True, "b")]
    err = rejected(pack_pairs(pairs), "msgpack")
    assert err.code == "MALFORMED" and "is given twice" in err.detail


def test_msgpack_nested_key_given_twice_is_malformed():
    inner = b"\x82" + msgpack.packb("n") + b"\x01" + msgpack.packb("n") + b"\x02"
    err = rejected(packed_with("x-trace", inner), "msgpack")
    assert err.code == "MALFORMED" and "key 'n' is given twice in an object nested" in err.detail


# --- the cheap duplicate check is exact -----------------------------------------------------

_KEYS = st.sampled_from(["id", "kind", "account", "service", "ts", "used", "a", "é", 'q"',
                         "b\\", "\u2028"])
_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=5), st.sampled_from(['"', "\\", '\\"', '{"a":1}']),
                    st.lists(st.integers(-5, 5), max_size=2),
                    st.dictionaries(st.sampled_from(["k", '"']), st.integers(-5, 5), max_size=2))


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(_KEYS, _VALUES), max_size=8), st.booleans(),
       st.sampled_from(["", " ", "\n\t "]))
def test_keys_given_twice_are_found_exactly(pairs, escape, space):
    """Whatever the spelling (escapes, spaces, nested values), a JSON object or msgpack map
    is rejected for a repeated key exactly when some key repeats, and decodes to its pairs
    otherwise."""
    option = orjson.OPT_NON_STR_KEYS
    parts = []
    for key, value in pairs:
        key_text = orjson.dumps(key, option=option).decode()
        if escape and key == "a":
            key_text = '"\\u0061"'
        parts.append(f"{space}{key_text}{space}:{space}{orjson.dumps(value).decode()}")
    twice = len({k for k, _ in pairs}) < len(pairs)
    for payload, fmt in ((("{" + ",".join(parts) + space + "}").encode(), "json"),
                         (pack_pairs(pairs), "msgpack")):
        try:
            obj = decode(payload, fmt)
        except RequestError as exc:
            assert exc.code == "MALFORMED" and "given twice" in exc.detail, (payload, exc)
            assert twice, payload
            continue
        assert not twice, payload
        assert obj == dict(pairs)


def test_a_request_sent_once_still_decodes_to_its_fields():
    for obj in (EVENT, dict(EVENT, destination="+4917612345", note='say "hi" \\ bye'),
                dict(EVENT, **{"x-gateway": {"node": 7, "path": [1, [2, [3]]]}})):
        assert decode(orjson.dumps(obj)) == obj
        assert decode(msgpack.packb(obj), "msgpack") == obj
        assert isinstance(parse(decode(orjson.dumps(obj))), Request)
