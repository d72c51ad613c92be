"""The Gy mapping and the wire checks as pure code (no services): CCRs read and refused with
the RFC 6733 codes and Failed-AVP, rating groups planned as chargeflow requests, decisions as
CCAs, and a short fuzz of the decoder path."""

from __future__ import annotations

import struct

import pytest
from diameter.message import Message
from diameter.message.avp import Avp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charging.catalog import parse_catalog
from gateway.diameter import gy, wire
from gateway.diameter.wire import AnswerError
from tests.gateway.diameter_rig import (
    CATALOG,
    DATA,
    NO_SERVICE,
    SMS,
    TUE_PEAK_S,
    VOICE,
    avp,
    ccr_avps,
    encode,
    mscc,
    units,
)

CAT = parse_catalog(CATALOG)
NOW_MS = 1_800_000_000_000


def parse(avps: list[Avp]) -> gy.CreditControl:
    return gy.parse_ccr(wire.decode(encode(272, avps)))


def refused(avps: list[Avp] | bytes) -> AnswerError:
    data = avps if isinstance(avps, bytes) else encode(272, avps)
    with pytest.raises(AnswerError) as info:
        gy.parse_ccr(wire.decode(data))
    return info.value


def decision(result="SUCCESS", granted=0, validity_s=600, final=False) -> dict:
    return {"result": result, "granted": granted, "validity_s": validity_s, "final": final}


# -- reading CCRs ----------------------------------------------------------------------------

def test_a_ccr_is_read_with_its_units_subscriber_and_time():
    ccr = parse(ccr_avps("s1", 2, 7, [mscc(VOICE, [], units(seconds=61)),
                                      mscc(DATA, None, units(octets=5000))]))
    assert (ccr.session_id, ccr.request_type, ccr.request_number) == ("s1", 2, 7)
    assert ccr.subscriptions == ((0, "491700000001"),)
    assert ccr.event_ms == TUE_PEAK_S * 1000
    voice, data = ccr.services
    assert voice.rating_group == VOICE and voice.requested == gy.Units()
    assert voice.used[0].of("second") == 61
    assert data.requested is None and data.used[0].of("byte") == 5000


def test_units_follow_the_catalog_unit():
    u = gy.Units(time=5, input=10, output=20, specific=3)
    assert (u.of("second"), u.of("byte"), u.of("event"), u.of("page")) == (5, 30, 3, 3)
    assert gy.Units(total=7, input=1).of("byte") == 7
    assert gy.Units().of("byte") is None


@pytest.mark.parametrize("drop, code", [
    (263, wire.MISSING_AVP),   # Session-Id
    (264, wire.MISSING_AVP),   # Origin-Host
    (283, wire.MISSING_AVP),   # Destination-Realm
    (461, wire.MISSING_AVP),   # Service-Context-Id
    (416, wire.MISSING_AVP),   # CC-Request-Type
    (415, wire.MISSING_AVP),   # CC-Request-Number
])
def test_a_missing_required_avp_is_5005_naming_it(drop, code):
    avps = [a for a in ccr_avps("s1", 1, 0, [mscc(VOICE, [])]) if a.code != drop]
    err = refused(avps)
    assert err.code == code and [a.code for a in err.failed] == [drop]


def test_a_missing_avp_inside_a_group_is_named_inside_its_group():
    avps = ccr_avps("s1", 1, 0, [], msisdn=None) + [
        avp(443, [avp(450, 0)])]  # Subscription-Id without Subscription-Id-Data
    err = refused(avps)
    assert err.code == wire.MISSING_AVP
    (outer,) = err.failed
    assert outer.code == 443 and [a.code for a in outer.value] == [444]


def test_an_unknown_avp_with_the_m_bit_is_5001_and_without_it_is_ignored():
    unknown = Avp(99999, 0, b"\x00\x00\x00\x01", 0x40)
    err = refused(ccr_avps("s1", 1, 0, [mscc(VOICE, [])]) + [unknown])
    assert err.code == wire.AVP_UNSUPPORTED and err.failed[0].code == 99999
    inside = mscc(VOICE, [])
    inside.value = inside.value + [unknown]
    assert refused(ccr_avps("s1", 1, 0, [inside])).code == wire.AVP_UNSUPPORTED
    optional = Avp(99999, 0, b"\x00\x00\x00\x01", 0)
    assert parse(ccr_avps("s1", 1, 0, [mscc(VOICE, [])]) + [optional]).session_id == "s1"


@pytest.mark.parametrize("bad, code", [
    (avp(416, 9), wire.INVALID_AVP_VALUE),                # CC-Request-Type 9
    (avp(258, 3), wire.INVALID_AVP_VALUE),                # Auth-Application-Id 3
    (Avp(415, 0, b"\x00\x01", 0x40), wire.INVALID_AVP_LENGTH),  # a 2-octet Unsigned32
])
def test_bad_values_are_refused_naming_the_avp(bad, code):
    avps = [a for a in ccr_avps("s1", 1, 0, [mscc(VOICE, [])]) if a.code != bad.code] + [bad]
    err = refused(avps)
    assert err.code == code and err.failed[0].code == bad.code


def test_an_avp_only_an_answer_carries_is_5008():
    err = refused(ccr_avps("s1", 1, 0, [mscc(VOICE, [])]) + [avp(268, 2001)])
    assert err.code == wire.AVP_NOT_ALLOWED and err.failed[0].code == 268
    granted = mscc(VOICE, [])
    granted.value = granted.value + [avp(431, [avp(420, 60)])]
    err = refused(ccr_avps("s1", 1, 0, [granted]))
    assert err.code == wire.AVP_NOT_ALLOWED
    (outer,) = err.failed
    assert outer.code == 456 and [a.code for a in outer.value] == [431]


def test_an_avp_twice_is_5009_and_units_beyond_the_bound_5004():
    err = refused(ccr_avps("s1", 1, 0, []) + [avp(415, 1)])
    assert err.code == wire.AVP_OCCURS_TOO_MANY_TIMES
    err = refused(ccr_avps("s1", 2, 1, [mscc(DATA, [], units(octets=2**40 + 1))]))
    assert err.code == wire.INVALID_AVP_VALUE


def test_an_event_needs_direct_debiting_and_a_service():
    assert parse(ccr_avps("e", 4, 0, [mscc(SMS, units(events=1))], action=0)).requested_action \
        == 0
    assert refused(ccr_avps("e", 4, 0, [mscc(SMS, units(events=1))])).code == wire.MISSING_AVP
    assert refused(ccr_avps("e", 4, 0, [mscc(SMS, units(events=1))], action=2)).code == \
        wire.INVALID_AVP_VALUE
    assert refused(ccr_avps("e", 4, 0, [], action=0)).code == wire.MISSING_AVP


def test_an_avp_length_shorter_than_its_header_is_5014():
    good = encode(272, ccr_avps("s1", 1, 0, []))
    # one more AVP whose length (4) does not even cover its own 8-octet header
    data = good + struct.pack("!II", 7777, (0x40 << 24) | 4)
    data = data[:1] + len(data).to_bytes(3, "big") + data[4:]
    err = refused(data)
    assert err.code == wire.INVALID_AVP_LENGTH and err.failed[0].code == 7777


def test_called_party_address_gives_the_destination():
    info = avp(873, [avp(876, [avp(832, "tel:+49-176-12345", 10415)], 10415)], 10415)
    assert parse(ccr_avps("s", 1, 0, [mscc(VOICE, [])]) + [info]).destination == "+4917612345"
    assert gy._called_number("sip:+4917612345@ims.example;user=phone") == "+4917612345"
    assert gy._called_number("sip:alice@example.org") is None


# -- planning requests -----------------------------------------------------------------------

def test_each_rating_group_is_a_session_with_ids_from_the_wire():
    ccr = parse(ccr_avps("pgw;1", 1, 0, [mscc(VOICE, []), mscc(DATA, units(octets=1000)),
                                         mscc(NO_SERVICE, [])]))
    steps = gy.plan(ccr, "alice", None, CAT, NOW_MS)
    voice, data, none = steps
    assert voice.request == {"id": "pgw;1:100:0", "kind": "initial", "account": "alice",
                             "service": "voice", "ts": TUE_PEAK_S * 1000,
                             "session": "pgw;1:100", "seq": 0}
    assert data.request["requested"] == 1000 and data.request["session"] == "pgw;1:200"
    assert none.request is None and none.code == wire.RATING_FAILED


def test_an_update_reports_opens_and_ends_rating_groups():
    record = gy.Record("alice", {VOICE: "voice", DATA: "data"})
    ccr = parse(ccr_avps("s", 2, 3, [mscc(VOICE, [], units(seconds=10)),
                                     mscc(DATA, None, units(octets=99)),
                                     mscc(201, [])], ts=None))
    kinds = [(s.rating_group, s.request["kind"], s.request.get("used"))
             for s in gy.plan(ccr, "alice", record, CAT, NOW_MS)]
    assert kinds == [(VOICE, "update", 10), (DATA, "terminate", 99), (201, "initial", None)]
    # a session no gateway knows: reports the engine answers SESSION_UNKNOWN
    kinds = [s.request["kind"] for s in gy.plan(ccr, "alice", None, CAT, NOW_MS)]
    assert kinds == ["update", "terminate", "update"]
    assert gy.plan(ccr, "alice", record, CAT, NOW_MS)[0].request["ts"] == NOW_MS


def test_a_terminate_ends_every_open_rating_group():
    record = gy.Record("alice", {VOICE: "voice", DATA: "data"})
    ccr = parse(ccr_avps("s", 3, 4, [mscc(VOICE, None, units(seconds=5))]))
    steps = gy.plan(ccr, "alice", record, CAT, NOW_MS)
    assert [(s.rating_group, s.listed, s.request["kind"], s.request.get("used"))
            for s in steps] == [(VOICE, True, "terminate", 5), (DATA, False, "terminate", None)]
    kept = gy.next_record(ccr, "alice", record, steps)
    assert kept.ended == 4 and kept.open == record.open  # kept for a retransmission


def test_an_event_charges_its_units_or_the_quota():
    ccr = parse(ccr_avps("e", 4, 0, [mscc(SMS, units(events=3))], action=0))
    (step,) = gy.plan(ccr, "alice", None, CAT, NOW_MS)
    assert step.request["kind"] == "event" and step.request["used"] == 3
    assert "session" not in step.request
    empty = parse(ccr_avps("e", 4, 0, [mscc(SMS, [])], action=0))
    assert gy.needs_quota(empty, CAT) and not gy.needs_quota(ccr, CAT)
    (step,) = gy.plan(empty, "alice", None, CAT, NOW_MS, quota=lambda service: 1)
    assert step.request["used"] == 1


def test_a_long_session_id_is_digested_the_same_everywhere():
    long = "pgw.example.org;" + "x" * 200
    key = gy.session_key(long)
    assert key == gy.session_key(long) and key.startswith("gy-") and len(key) < 64
    ccr = parse(ccr_avps(long, 1, 4294967295, [mscc(4294967295 % 2**32, [])]))
    assert gy.session_key("short") == "short"
    assert all(len(s.request["id"]) <= 128 for s in gy.plan(ccr, "a", None, CAT, NOW_MS)
               if s.request)


# -- answers ---------------------------------------------------------------------------------

def test_decisions_become_mscc_answers():
    ccr = parse(ccr_avps("s", 1, 0, [mscc(VOICE, []), mscc(DATA, [])]))
    steps = gy.plan(ccr, "alice", None, CAT, NOW_MS)
    steps[0].decision = decision(granted=120, final=True)
    steps[1].decision = decision("CREDIT_LIMIT_REACHED", final=True)
    assert gy.command_result(ccr, steps, unknown_session=False, blocked=False) == wire.SUCCESS
    avps = gy.answer_avps(ccr, steps, wire.SUCCESS, "ocs", "realm")
    msg = Message.from_bytes(wire.answer(wire.decode_header(encode(272, [])), avps),
                             plain_msg=True)
    assert msg.avps[0].code == 263 and not msg.header.is_request
    voice, data = [a.value for a in msg.avps if a.code == 456]
    by = {a.code: a for a in voice}
    assert by[431].value[0].code == 420 and by[431].value[0].value == 120  # CC-Time
    assert by[448].value == 600 and by[268].value == 2001
    assert by[430].value[0].value == 0  # Final-Unit-Action TERMINATE
    assert {a.code: a.value for a in data if a.code in (268, 432)} == {268: 4012, 432: DATA}
    assert 431 not in {a.code for a in data}


@pytest.mark.parametrize("results, rtype, want", [
    (["CREDIT_LIMIT_REACHED"], 1, 4012),
    (["CREDIT_LIMIT_REACHED", "SUCCESS"], 1, 2001),
    (["CREDIT_LIMIT_REACHED"], 2, 2001),
    (["CREDIT_LIMIT_REACHED"], 4, 4012),
    (["USER_UNKNOWN"], 2, 5030),
    (["SESSION_UNKNOWN"], 2, 2001),
])
def test_the_command_result(results, rtype, want):
    ccr = parse(ccr_avps("s", rtype, 1, [mscc(rg, []) for rg in (VOICE, DATA)[:len(results)]],
                         action=0 if rtype == 4 else None))
    steps = gy.plan(ccr, "alice", gy.Record("alice", {VOICE: "voice", DATA: "data"}), CAT,
                    NOW_MS)
    for s, r in zip(steps, results):
        s.decision = decision(r)
    assert gy.command_result(ccr, steps, unknown_session=False, blocked=False) == want
    assert gy.command_result(ccr, steps, unknown_session=False, blocked=True) in (4010, 5030)


def test_error_answers_have_the_e_bit_only_for_protocol_errors():
    request = wire.decode_header(encode(272, []))
    busy = Message.from_bytes(wire.error_answer(request, AnswerError(3004, "busy"), "o", "r",
                                                "s1"), plain_msg=True)
    assert busy.header.is_error and busy.avps[0].value == "s1"
    missing = AnswerError(5005, "no", [wire.placeholder(415)])
    answer = Message.from_bytes(wire.error_answer(request, missing, "o", "r", "s1",
                                                  [avp(416, 1)]), plain_msg=True)
    assert not answer.header.is_error
    failed = [a for a in answer.avps if a.code == 279][0].value
    assert failed[0].code == 415 and failed[0].payload == bytes(4)


# -- a fuzz of the decoder path --------------------------------------------------------------

GOOD = encode(272, ccr_avps("fuzz;1", 2, 1, [mscc(VOICE, [], units(seconds=9)),
                                             mscc(DATA, None, units(octets=9))]))


def _decoder_path(data: bytes) -> None:
    """What the door does with a message: framing, decoding, the CCR; only the errors it
    answers (or closes on) may come out."""
    if len(data) < 20 or data[0] != 1 or int.from_bytes(data[1:4], "big") != len(data) \
            or len(data) % 4:
        return  # read_message's NotDiameter: the connection is closed
    try:
        msg = wire.decode(data)
        gy.session_id_of(msg)
        gy.echo_avps(msg)
        ccr = gy.parse_ccr(msg)
        gy.plan(ccr, "alice", gy.Record("alice", {VOICE: "voice"}), CAT, NOW_MS)
    except AnswerError as err:
        wire.error_answer(wire.decode_header(data), err, "o", "r", "s", [])


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.integers(20, len(GOOD) - 1), st.integers(0, 255)),
                min_size=1, max_size=8))
def test_fuzz_mutated_ccrs_get_an_answer_or_a_close(flips):
    data = bytearray(GOOD)
    for pos, value in flips:
        data[pos] = value
    _decoder_path(bytes(data))


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=0, max_size=200))
def test_fuzz_random_avp_bytes(body):
    body = body + bytes(-len(body) % 4)
    _decoder_path(bytes([1]) + (20 + len(body)).to_bytes(3, "big") + GOOD[4:20] + body)
